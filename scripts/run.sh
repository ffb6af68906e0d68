#!/usr/bin/env bash
# `make run`: the collector with examples/postgres.yaml, writing to $OTELSTORE_PG_DSN or, when that is
# unset, to a throwaway PostgreSQL in .run/ (kept between runs), and otelstore-query with
# examples/query.yaml serving the Jaeger API over the same database. Ctrl-C stops otelstore-query,
# then the collector, which flushes what it holds, and then the PostgreSQL this script started.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collector=$root/build/otelcol-otelstore/otelcol-otelstore
config=$root/examples/postgres.yaml
query=$root/target/release/otelstore-query
query_config=$root/examples/query.yaml
run_dir=$root/.run

[[ -x $collector ]] || { echo "run.sh: $collector is missing: run make build" >&2; exit 1; }
[[ -x $query ]] || { echo "run.sh: $query is missing: run make build" >&2; exit 1; }

# The same defaults as examples/postgres.yaml, exported so that what is printed is what is used.
export OTELSTORE_OTLP_GRPC_ENDPOINT=${OTELSTORE_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}
export OTELSTORE_OTLP_HTTP_ENDPOINT=${OTELSTORE_OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}
export OTELSTORE_HEALTH_ENDPOINT=${OTELSTORE_HEALTH_ENDPOINT:-127.0.0.1:13133}
export OTELSTORE_METRICS_HOST=${OTELSTORE_METRICS_HOST:-127.0.0.1}
export OTELSTORE_METRICS_PORT=${OTELSTORE_METRICS_PORT:-8888}
# otelstore-query's listening address (the default of its `listen`, given with --listen).
export OTELSTORE_QUERY_ENDPOINT=${OTELSTORE_QUERY_ENDPOINT:-127.0.0.1:16686}

own_postgres=false
collector_pid=
query_pid=

# Stops a child with SIGTERM and waits for it (both drain what they are doing and exit).
# shellcheck disable=SC2317 # invoked by cleanup
stop_child() {
	if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
		kill -TERM "$1" 2>/dev/null || true
		wait "$1" 2>/dev/null || true
	fi
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	trap '' INT TERM
	stop_child "$query_pid"
	stop_child "$collector_pid"
	if $own_postgres; then
		echo "run.sh: stopping PostgreSQL" >&2
		"$root/scripts/pg.sh" stop "$run_dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${OTELSTORE_PG_DSN:-} ]]; then
	# The caller's DSN may hold a password: refer to it rather than print it.
	# shellcheck disable=SC2016 # printed as written, for the user's shell to expand
	dsn_shown='$OTELSTORE_PG_DSN (from the environment)'
	# shellcheck disable=SC2016
	psql_shown='psql "$OTELSTORE_PG_DSN"'
else
	own_postgres=true
	OTELSTORE_PG_DSN=$("$root/scripts/pg.sh" start "$run_dir")
	export OTELSTORE_PG_DSN
	dsn_shown=$OTELSTORE_PG_DSN
	psql_shown="psql '$OTELSTORE_PG_DSN'"
fi

# The gate makes health_check report component status, so the health endpoint follows the database
# (examples/postgres.yaml's health_check section needs it).
"$collector" --config "$config" --feature-gates=+extension.healthcheck.useComponentStatus &
collector_pid=$!

health=http://$OTELSTORE_HEALTH_ENDPOINT/
healthy=false
for _ in $(seq 100); do
	if ! kill -0 "$collector_pid" 2>/dev/null; then
		wait "$collector_pid" && status=0 || status=$?
		collector_pid=
		echo "run.sh: the collector exited with status $status before becoming healthy" >&2
		exit 1
	fi
	if curl -fsS -o /dev/null "$health" 2>/dev/null; then
		healthy=true
		break
	fi
	sleep 0.2
done
$healthy || echo "run.sh: the collector is not healthy after 20s; see its log above" >&2

# examples/query.yaml reads the DSN from $OTELSTORE_PG_DSN (exported): not on the command line,
# which ps shows.
"$query" --config "$query_config" --listen "$OTELSTORE_QUERY_ENDPOINT" &
query_pid=$!

jaeger=http://$OTELSTORE_QUERY_ENDPOINT
answering=false
for _ in $(seq 100); do
	if ! kill -0 "$query_pid" 2>/dev/null; then
		wait "$query_pid" && status=0 || status=$?
		query_pid=
		echo "run.sh: otelstore-query exited with status $status before answering on $OTELSTORE_QUERY_ENDPOINT" \
			"(another address: OTELSTORE_QUERY_ENDPOINT=host:port make run)" >&2
		exit 1
	fi
	# Any HTTP answer will do (/ is a 404), and it must not be one the cache keeps (/api/services
	# would be served as it was, with no services, for cache.ttl).
	code=$(curl -sS -o /dev/null -w '%{http_code}' "$jaeger/" 2>/dev/null || true)
	if [[ -n $code && $code != 000 ]]; then
		answering=true
		break
	fi
	sleep 0.2
done
$answering || echo "run.sh: otelstore-query does not answer on $jaeger after 20s; see its log above" >&2

cat >&2 <<INFO

otelstore is running (Ctrl-C to stop)
  OTLP gRPC   $OTELSTORE_OTLP_GRPC_ENDPOINT
  OTLP HTTP   http://$OTELSTORE_OTLP_HTTP_ENDPOINT/v1/traces, /v1/logs, /v1/metrics
  health      $health (500 once the database has been unreachable for 5s)
  metrics     http://$OTELSTORE_METRICS_HOST:$OTELSTORE_METRICS_PORT/metrics
  Jaeger API  $jaeger/api/ (otelstore-query: services, operations, traces, dependencies)
  Grafana     a Jaeger data source with URL $jaeger
  try         curl -s $jaeger/api/services
  PostgreSQL  $dsn_shown
  psql        $psql_shown
  tables      otel.spans, otel.logs, otel.metrics_{gauge,sum,histogram,exponential_histogram,summary},
              rollups otel.span_stats_1h, otel.service_dependencies_1h, otel.error_logs_1h,
              otel.metrics_rollup_5m, otel.metrics_rollup_1h

INFO

# Until one of them exits (or Ctrl-C); the EXIT trap stops the other.
wait -n "$collector_pid" "$query_pid" && status=0 || status=$?
if kill -0 "$collector_pid" 2>/dev/null; then
	echo "run.sh: otelstore-query exited with status $status" >&2
	query_pid=
else
	echo "run.sh: the collector exited with status $status" >&2
	collector_pid=
fi
exit "$status"
