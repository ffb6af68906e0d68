#!/usr/bin/env bash
# Measures what each schema choice costs PostgreSQL at ingest: the same realistic rows loaded with
# psql's binary \copy into table layouts that differ in one choice each. Best of REPS runs.
#
#   bench/schema_layouts.sh [ROWS] [REPS]     (defaults 200000 and 4)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-200000}
reps=${2:-4}
work=$root/.run/bench-layouts
mkdir -p "$work"
export PATH=/usr/lib/postgresql/15/bin:$PATH
export PGOPTIONS="-c client_min_messages=warning"

dsn=$("$root/scripts/pg.sh" start "$work")
trap '"$root/scripts/pg.sh" stop "$work"' EXIT
sql() { psql --no-psqlrc -qX "$dsn" "$@"; }

sql -v rows="$rows" -f "$root/bench/schema_stage.sql"
columns=$(grep -oE '^ +[a-z_]+ +(bytea|text|integer|smallint|timestamptz|bigint|jsonb)' "$root/schema/postgres/0001_spans.sql" | awk '{print $1}' | paste -sd, -)
sql -c "\\copy (SELECT $columns FROM stage) TO '$work/spans.bin' (FORMAT binary)"
sql -c "\\copy (SELECT ${columns/resource_attributes/hashtext(resource_attributes::text)::bigint} FROM stage) TO '$work/resource_id.bin' (FORMAT binary)"
# Twice, because adjacent columns share the comma a match consumes.
as_json=$(sed -E 's/(^|,)(resource_attributes|scope_attributes|span_attributes|events|links)(,|$)/\1\2::json\3/g; s/(^|,)(resource_attributes|scope_attributes|span_attributes|events|links)(,|$)/\1\2::json\3/g' <<<"$columns")
sql -c "\\copy (SELECT $as_json FROM stage) TO '$work/json.bin' (FORMAT binary)"

base=$(sed 's/{schema}/public/g' "$root/schema/postgres/0001_spans.sql")
no_indexes=$(grep -v '^CREATE INDEX' <<<"$base")

# name | data file | DDL
layouts=(
  "current schema (jsonb, trace_id + service/time btrees)|spans.bin|$base"
  "no indexes|spans.bin|$no_indexes"
  "trace_id btree only|spans.bin|$(grep -v 'spans_service_time_idx' <<<"$base")"
  "current + BRIN on start_time|spans.bin|$base
CREATE INDEX ON public.spans USING brin (start_time);"
  "current + GIN (jsonb_path_ops) on span_attributes|spans.bin|$base
CREATE INDEX ON public.spans USING gin (span_attributes jsonb_path_ops);"
  "resource attributes in their own table (resource_id bigint)|resource_id.bin|${base/resource_attributes      jsonb /resource_id              bigint}"
  "json instead of jsonb|json.bin|${base//jsonb/json}"
)

printf '\n%d rows, %s bytes of binary COPY data, best of %d loads\n\n' "$rows" "$(stat -c %s "$work/spans.bin")" "$reps"
printf '| layout | rows/s | vs current |\n|---|---:|---:|\n'
reference=
for layout in "${layouts[@]}"; do
  IFS='|' read -r name file ddl <<<"$layout"
  ddl=${layout#*|*|}
  best=
  for _ in $(seq "$reps"); do
    sql -c "DROP TABLE IF EXISTS public.spans" -c "$ddl" -c "CHECKPOINT" >/dev/null
    start=$(date +%s.%N)
    sql -c "\\copy public.spans FROM '$work/$file' (FORMAT binary)" >/dev/null
    best=$(awk -v start="$start" -v now="$(date +%s.%N)" -v best="$best" \
      'BEGIN { e = now - start; print (best == "" || e < best) ? e : best }')
  done
  rate=$(awk -v rows="$rows" -v best="$best" 'BEGIN { printf "%d", rows / best }')
  reference=${reference:-$rate}
  printf '| %s | %s | %s%% |\n' "$name" "$rate" "$(awk -v r="$rate" -v ref="$reference" 'BEGIN { printf "%d", 100 * r / ref }')"
done
