#!/usr/bin/env bash
# `make run`: the collector with examples/postgres.yaml, writing to $OTELSTORE_PG_DSN or, when that is
# unset, to a throwaway PostgreSQL in .run/ (kept between runs). Ctrl-C stops the collector, which
# flushes what it holds, and then the PostgreSQL this script started.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collector=$root/build/otelcol-otelstore/otelcol-otelstore
config=$root/examples/postgres.yaml
run_dir=$root/.run

[[ -x $collector ]] || { echo "run.sh: $collector is missing: run make build" >&2; exit 1; }

# The same defaults as examples/postgres.yaml, exported so that what is printed is what is used.
export OTELSTORE_OTLP_GRPC_ENDPOINT=${OTELSTORE_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}
export OTELSTORE_OTLP_HTTP_ENDPOINT=${OTELSTORE_OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}
export OTELSTORE_HEALTH_ENDPOINT=${OTELSTORE_HEALTH_ENDPOINT:-127.0.0.1:13133}
export OTELSTORE_METRICS_HOST=${OTELSTORE_METRICS_HOST:-127.0.0.1}
export OTELSTORE_METRICS_PORT=${OTELSTORE_METRICS_PORT:-8888}

own_postgres=false
collector_pid=

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	trap '' INT TERM
	if [[ -n $collector_pid ]] && kill -0 "$collector_pid" 2>/dev/null; then
		kill -TERM "$collector_pid" 2>/dev/null || true
		wait "$collector_pid" 2>/dev/null || true
	fi
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

cat >&2 <<INFO

otelstore is running (Ctrl-C to stop)
  OTLP gRPC   $OTELSTORE_OTLP_GRPC_ENDPOINT
  OTLP HTTP   http://$OTELSTORE_OTLP_HTTP_ENDPOINT/v1/traces, /v1/logs, /v1/metrics
  health      $health (500 once the database has been unreachable for 5s)
  metrics     http://$OTELSTORE_METRICS_HOST:$OTELSTORE_METRICS_PORT/metrics
  PostgreSQL  $dsn_shown
  psql        $psql_shown
  tables      otel.spans, otel.logs, otel.metrics_{gauge,sum,histogram,exponential_histogram,summary},
              rollups otel.span_stats_1h, otel.service_dependencies_1h, otel.error_logs_1h,
              otel.metrics_rollup_5m, otel.metrics_rollup_1h

INFO

wait "$collector_pid" && status=0 || status=$?
collector_pid=
exit "$status"
