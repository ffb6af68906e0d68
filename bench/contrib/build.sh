#!/usr/bin/env bash
# Builds build/otelcol-contrib-clickhouse/otelcol-contrib-clickhouse (otlp receiver + the contrib
# clickhouseexporter) from bench/contrib/builder-config.yaml with the repository's pinned ocb.
# Usage: bench/contrib/build.sh [extra ocb flags, e.g. --verbose]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OCB_VERSION="${OCB_VERSION:-0.156.0}"
OCB="$ROOT/.tools/bin/builder-$OCB_VERSION"
if [[ ! -x "$OCB" ]]; then
    echo "build.sh: $OCB not found; run 'make tools' first" >&2
    exit 1
fi
cd "$ROOT"  # output_path in the manifest is relative to the repository root
mkdir -p build
# Pure Go: the contrib exporter needs no cgo (unlike the otelstore distribution).
CGO_ENABLED=0 "$OCB" --config bench/contrib/builder-config.yaml "$@"
echo "built $ROOT/build/otelcol-contrib-clickhouse/otelcol-contrib-clickhouse"
