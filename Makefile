# otelstore: build, run and test the collector distribution and its Rust core.
SHELL := /bin/bash
.DEFAULT_GOAL := build

ROOT        := $(CURDIR)
TOOLS       := $(ROOT)/.tools/bin
VENV        := $(ROOT)/.venv
# v0.156.0 is the newest collector release whose every module the Go proxy serves here.
OCB_VERSION := 0.156.0
TELEMETRYGEN_VERSION := 0.161.0
COLLECTOR   := $(ROOT)/build/otelcol-otelstore/otelcol-otelstore
RUST_LIB    := $(ROOT)/target/release/libotelstore.a
QUERY_BIN   := $(ROOT)/target/release/otelstore-query
export PATH := $(TOOLS):/usr/lib/postgresql/15/bin:$(PATH)

# Go caches cgo packages by their sources and flags, not by the static library they link, and skips
# linking a binary it thinks current: naming the library's hash in the flags makes a new core
# recompile the shim and relink the collector and the test binaries. Expanded when a recipe runs,
# after the library is built.
GO_CGO_ENV   = CGO_ENABLED=1 CGO_CFLAGS="-g -O2 -DOTELSTORE_CORE_HASH=$(shell sha256sum $(RUST_LIB) | cut -c1-16)"

.PHONY: build rust header tools venv run test test-rust test-go test-e2e test-clickhouse bench bench-clickhouse bench-query clean FORCE

## build: the Rust core (release staticlib), the collector distribution and the query binary
build: $(COLLECTOR) $(QUERY_BIN)

rust: $(RUST_LIB)

# cargo decides whether the library or the query binary is stale; make only sees a new file when
# cargo rebuilt it. Both are always built by one command: cargo unifies the dependencies' features
# over the packages it builds, so building otelstore-query alone would rebuild the core's library
# (it has no hash in its file name) with other features, and the core alone would rebuild it back,
# relinking the collector on every `make build`.
CARGO_RELEASE := cargo build --release -p otelstore -p otelstore-query
$(RUST_LIB): FORCE
	$(CARGO_RELEASE)
$(QUERY_BIN): FORCE
	$(CARGO_RELEASE)

## header: regenerate the C header from rust/core/src/ffi.rs
header:
	OTELSTORE_WRITE_HEADER=1 cargo test -p otelstore --test header -- --quiet

# The version is in the file name, so changing OCB_VERSION installs the new builder.
OCB         := $(TOOLS)/builder-$(OCB_VERSION)
$(OCB):
	GOBIN=$(TOOLS) go install go.opentelemetry.io/collector/cmd/builder@v$(OCB_VERSION)
	mv $(TOOLS)/builder $@

$(TOOLS)/telemetrygen:
	GOBIN=$(TOOLS) go install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v$(TELEMETRYGEN_VERSION)

tools: $(OCB) $(TOOLS)/telemetrygen

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# The collector is rebuilt whenever the Rust core, the shim or the manifest changes.
$(COLLECTOR): $(RUST_LIB) $(OCB) builder-config.yaml $(shell find go-shim -name '*.go' -o -name go.mod -o -name go.sum 2>/dev/null)
	mkdir -p $(ROOT)/build
	# Go skips the link when the existing binary's build id matches, and that id does not cover
	# the contents of the Rust archive: without the old binary, Go links the current core.
	rm -f $(COLLECTOR)
	$(GO_CGO_ENV) $(OCB) --config builder-config.yaml

## run: build, start a throwaway PostgreSQL (or use OTELSTORE_PG_DSN), the collector and otelstore-query
run: build
	$(ROOT)/scripts/run.sh

## test: every test: Rust, Go, end-to-end, and the ClickHouse schema and test engine
test: test-rust test-go test-e2e test-clickhouse

test-rust: $(RUST_LIB) venv
	cargo test --workspace

test-go: $(RUST_LIB)
	cd go-shim && $(GO_CGO_ENV) go test -v -count=1 ./...

test-e2e: build venv $(TOOLS)/telemetrygen
	$(VENV)/bin/pytest -v tests/e2e

# The upstream contrib clickhouseexporter in a distribution of its own, to check that its inserts
# fit schema/clickhouse/ and to compare against it.
CONTRIB_COLLECTOR := $(ROOT)/build/otelcol-contrib-clickhouse/otelcol-contrib-clickhouse
$(CONTRIB_COLLECTOR): $(OCB) bench/contrib/builder-config.yaml
	bench/contrib/build.sh

# schema/clickhouse/ against ClickHouse 26.9 (chdb), the HTTP front the ClickHouse tests use, the
# contrib exporter writing into our tables through it, our collector end to end into it, and
# otelstore-query reading what it stored (test_query.py).
test-clickhouse: build venv $(CONTRIB_COLLECTOR) $(TOOLS)/telemetrygen
	$(VENV)/bin/pytest -v tests/clickhouse

## bench: every benchmark, results in docs/BENCHMARKS.md: ingest of both backends (bench/run.py; BENCH_SPANS=100000 for a quick run), then otelstore-query's latency (bench-query)
bench: build venv $(TOOLS)/telemetrygen $(CONTRIB_COLLECTOR)
	@echo "== exporter CPU per span: the Rust core (read OTLP, write COPY rows) =="
	cargo bench -p otelstore --bench encode
	@echo "== exporter CPU per span: Go marshal of pdata to OTLP (ns/op for 1000 realistic spans) =="
	cd go-shim && $(GO_CGO_ENV) go test -run '^$$' -bench BenchmarkMarshalTraces -benchtime 3s .
	$(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/query.py $(BENCH_QUERY_ARGS)

## bench-clickhouse: the ClickHouse path alone: our collector and the contrib exporter into the test engine, and its ceiling
bench-clickhouse: build venv $(TOOLS)/telemetrygen $(CONTRIB_COLLECTOR)
	$(VENV)/bin/python bench/run.py --backend clickhouse

## bench-query: otelstore-query's latency (trace by id, 24 h search, 24 h stats; p50/p95/p99, cache off) over 10M spans per backend (bench/query.py); BENCH_QUERY_ARGS="--spans 200000" for a quick run
bench-query: build venv
	$(VENV)/bin/python bench/query.py $(BENCH_QUERY_ARGS)

clean:
	rm -rf target build .tools .venv .run
