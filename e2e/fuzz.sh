#!/usr/bin/env bash
# Fuzzes every decoder of untrusted input for a few seconds each: the OTLP
# trace and log decoders (protobuf and JSON, through the whole ingest check
# path), the direct OTLP protobuf decoder against pdata's, Zipkin v2 JSON,
# the trace-file readers of `tracedx analyze` and the TraceQL parser. Their
# seed corpora are committed under each package's testdata/fuzz/ or added
# by the target itself (plain `go test` runs them too). `go test -fuzz` takes one
# package and one target per run. A failure leaves the crashing input in
# testdata/fuzz/<target>/ for `go test -run=<target>/<file>` to replay.
# Minimising each new interesting input is capped at 1 s: by default it may
# take a minute, and on a large JSON input it ate the whole fuzz time.
#
#   bash e2e/fuzz.sh               5 s per target (FUZZTIME=10s to change)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

FUZZTIME=${FUZZTIME:-5s}
targets=(
  "./internal/ingest FuzzOTLPTraces"
  "./internal/ingest FuzzOTLPLogs"
  "./internal/otlpconv FuzzDecodeTracesProto"
  "./internal/zipkin FuzzZipkinJSON"
  "./internal/traceio FuzzParse"
  "./internal/traceql FuzzParse"
)
start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "== fuzz $pkg $name ($FUZZTIME)"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime=1s "$pkg"
done
echo "== fuzzing took $((SECONDS - start)) s"
