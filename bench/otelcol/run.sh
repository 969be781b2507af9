#!/usr/bin/env bash
# One measurement of tracedx behind a real OpenTelemetry Collector
# (bench/otelcol/build.sh builds it) or fed directly, on an S3 bucket.
#
#   MODE=single|forward|noforward bash bench/otelcol/run.sh
#
# single:    the load generator sends to one `tracedx serve` node.
# forward:   it sends to the Collector (the loadbalancing configuration of
#            docs/deployment.md, routing_key traceID), which sends to three
#            nodes with cluster.forward on (the default).
# noforward: the same with cluster.forward: false.
# COMPRESSION=none sets the Collector's exporter's compression (gzip unset).
# The single node is sent what the three nodes are: gzip-compressed
# requests (the load generator's -gzip) unless COMPRESSION=none.
#
# Every run starts fresh nodes on a new bucket prefix, sends a warm-up load
# (WARMUP), waits for it to be cut into blocks, then sends RATE spans/s for
# DURATION and waits SETTLE for idle traces to be cut and uploaded. It
# prints the CPU (utime+stime from /proc/<pid>/stat) the nodes and the
# Collector spent from the start of the load to the end of the settle
# period, the spans the nodes stored (accepted minus forwarded), and µs of
# CPU per stored span, with and without the nodes' idle CPU (measured over
# IDLE seconds before the load).
#
# Needs: S3_ENDPOINT (http://host:port), AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY; OTELCOL (the Collector). TRACEDX, LOADGEN and CHECK
# (bench/otelcol/check, run after the measurement on a cluster; CHECK= skips
# it) are built from this tree unless given. Ports BASE_PORT..BASE_PORT+9 on
# 127.0.0.1.
set -euo pipefail

MODE=${MODE:-single}
RATE=${RATE:-6000}
DURATION=${DURATION:-40s}
WARMUP=${WARMUP:-5s}
SETTLE=${SETTLE:-20}
IDLE=${IDLE:-10}
WORKERS=${WORKERS:-8}
BASE_PORT=${BASE_PORT:-24300}
OTELCOL=${OTELCOL:-/tmp/otelcol-lb/otelcol-lb}
: "${S3_ENDPOINT:?}" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
if [ -z "${TRACEDX:-}" ] || [ -z "${LOADGEN:-}" ]; then
  bin=/tmp/otelcol-bench-bin
  (cd "$(dirname "$0")/../.." && go build -o "$bin/tracedx" ./cmd/tracedx &&
    go build -o "$bin/loadgen" ./bench/loadgen && go build -o "$bin/check" ./bench/otelcol/check)
  TRACEDX=${TRACEDX:-$bin/tracedx} LOADGEN=${LOADGEN:-$bin/loadgen} CHECK=${CHECK-$bin/check}
fi

work=$(mktemp -d /tmp/otelcol-run.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

nodes=3
[ "$MODE" = single ] && nodes=1
forward=true
[ "$MODE" = noforward ] && forward=false
printf 'cluster:\n  forward: %s\n' "$forward" >"$work/tracedx.yaml"

peers=()
for i in $(seq 1 "$nodes"); do
  peers+=("n$i=127.0.0.1:$((BASE_PORT + i))/127.0.0.1:$((BASE_PORT + 4 + i))")
done
peer_list=$(IFS=,; echo "${peers[*]}")
prefix="otelcol-$MODE-$(date +%s%N)"
node_pids=()
for i in $(seq 1 "$nodes"); do
  args=(serve --config "$work/tracedx.yaml" --data-dir "$work/n$i"
    --otlp-grpc-addr "127.0.0.1:$((BASE_PORT + i))" --http-addr "127.0.0.1:$((BASE_PORT + 4 + i))"
    --otlp-http-addr "" --zipkin-addr "" --tempo-addr ""
    --storage s3 --s3-endpoint "$S3_ENDPOINT" --s3-bucket tracedx-otelcol --s3-prefix "$prefix")
  [ "$nodes" -gt 1 ] && args+=(--node-id "n$i" --peers "$peer_list")
  # With bench/profserve as TRACEDX, PPROF_PORT serves node i's profiles
  # on PPROF_PORT+i.
  TRACEDX_PPROF_ADDR=${PPROF_PORT:+127.0.0.1:$((PPROF_PORT + i))} "$TRACEDX" "${args[@]}" >"$work/n$i.log" 2>&1 &
  pids+=($!) node_pids+=($!)
done
for i in $(seq 1 "$nodes"); do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$((BASE_PORT + 4 + i))/healthz" >/dev/null && break
    sleep 0.1
  done
done

target="127.0.0.1:$((BASE_PORT + 1))"
col_pid=
gen_opts=()
if [ "$MODE" = single ] && [ "${COMPRESSION:-gzip}" = gzip ]; then
  gen_opts=(-gzip)
fi
if [ "$MODE" != single ]; then
  target="127.0.0.1:$BASE_PORT"
  # docs/deployment.md's configuration, host:port values changed.
  compression=
  [ -z "${COMPRESSION:-}" ] || compression=$'\n'"        compression: $COMPRESSION"
  cat >"$work/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: $target
      http:
        endpoint: 127.0.0.1:$((BASE_PORT + 9))
exporters:
  load_balancing:
    routing_key: traceID
    protocol:
      otlp:
        tls:
          insecure: true$compression
        retry_on_failure:
          enabled: true
        sending_queue:
          enabled: true
          batch:
            min_size: 512
            flush_timeout: 200ms
    resolver:
      static:
        hostnames:
          - 127.0.0.1:$((BASE_PORT + 1))
          - 127.0.0.1:$((BASE_PORT + 2))
          - 127.0.0.1:$((BASE_PORT + 3))
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [load_balancing]
YAML
  "$OTELCOL" --config "$work/otelcol.yaml" >"$work/otelcol.log" 2>&1 &
  col_pid=$!
  pids+=("$col_pid")
  for _ in $(seq 1 100); do
    grep -q "Everything is ready" "$work/otelcol.log" && break
    sleep 0.1
  done
fi

metric_sum_float() { # the same for a metric in seconds, in milliseconds
  local s=0 i v
  for i in $(seq 1 "$nodes"); do
    v=$(curl -sf "http://127.0.0.1:$((BASE_PORT + 4 + i))/metrics" |
      awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%d", s * 1000}')
    s=$((s + v))
  done
  echo "$s"
}
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
metric_sum() { # sum over the nodes of a metric's series not matching $2
  local name=$1 skip=${2:-^$} s=0 i v
  for i in $(seq 1 "$nodes"); do
    v=$(curl -sf "http://127.0.0.1:$((BASE_PORT + 4 + i))/metrics" |
      awk -v n="$name" -v x="$skip" '$1 ~ "^"n"({|$)" && $1 !~ x {s += $2} END {printf "%d", s}')
    s=$((s + v))
  done
  echo "$s"
}

# snapshot NAME: the nodes' counters and CPU and the Collector's CPU into
# the associative array NAME.
snapshot() {
  local -n v=$1
  v[n]=$(cpu_ticks "${node_pids[@]}")
  v[c]=0
  [ -z "$col_pid" ] || v[c]=$(cpu_ticks "$col_pid")
  v[acc]=$(metric_sum tracedx_ingest_spans_accepted_total)
  v[fwd]=$(metric_sum tracedx_cluster_forwarded_spans_total)
  v[req]=$(metric_sum tracedx_ingest_requests_total)
  v[bad]=$(metric_sum tracedx_ingest_requests_total 'outcome="ok"')
  v[an]=$(metric_sum tracedx_analysis_traces_total)
  v[dr]=$(metric_sum tracedx_analysis_dropped_total)
  v[ac]=$(metric_sum_float tracedx_analysis_cpu_seconds_total)
  v[rw]=$(metric_sum_float tracedx_analysis_room_wait_seconds_total)
}

"$LOADGEN" -addr "$target" -duration "$WARMUP" -workers "$WORKERS" -rate "$RATE" -seed 7 "${gen_opts[@]}" -json >"$work/warmup.json"
sleep "$SETTLE"

hz=$(getconf CLK_TCK)
# The nodes' CPU when idle (bucket refreshes, timers), over IDLE seconds:
# it scales with time, not spans, so it is reported apart.
i0=$(cpu_ticks "${node_pids[@]}")
sleep "$IDLE"
i1=$(cpu_ticks "${node_pids[@]}")
declare -A s0 s1
snapshot s0
load=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
"$LOADGEN" -addr "$target" -duration "$DURATION" -workers "$WORKERS" -rate "$RATE" "${gen_opts[@]}" -json >"$work/load.json"
nl=$(cpu_ticks "${node_pids[@]}")
sleep "$SETTLE"
t1=$(date +%s.%N)
snapshot s1
load1=$(cut -d' ' -f1-3 /proc/loadavg)

sent=$(grep -o '"spans_accepted":[0-9]*' "$work/load.json" | cut -d: -f2)
errors=$(grep -o '"errors":{[^}]*}' "$work/load.json")
d() { echo $((s1[$1] - s0[$1])); }
stored=$(($(d acc) - $(d fwd)))
awk -v m="$MODE" -v hz="$hz" -v n="$(d n)" -v c="$(d c)" -v st="$stored" -v se="$sent" \
  -v fw="$(d fwd)" -v e="$errors" -v rq="$(d req)" -v bad="$(d bad)" \
  -v an="$(d an)" -v dr="$(d dr)" -v ac="$(d ac)" -v rw="$(d rw)" -v nl="$((nl - s0[n]))" -v idle="$((i1 - i0))" -v it="$IDLE" \
  -v win="$(echo "$t1 - $t0" | bc)" -v l0="$load" -v l1="$load1" 'BEGIN {
  printf "%-9s sent %d stored %d forwarded %d (%.2f) node requests %d (not ok %d, %.0f spans each) nodes %.2fs = %.2f us/span (%.2f without idle %.3f cores; %.2fs during the load) analysis %.2fs of it (%d traces, %d dropped, %.2fs waited for room) collector %.2fs = %.2f us/span %s load %s / %s\n",
    m, se, st, fw, (st ? fw / st : 0), rq, bad, (rq ? (st + fw) / rq : 0), n / hz, n / hz * 1e6 / st, (n - idle / it * win) / hz * 1e6 / st, idle / hz / it, nl / hz, ac / 1000, an, dr, rw / 1000, c / hz, c / hz * 1e6 / st, e, l0, l1 }'
# Where traces sent through the Collector landed (after the measurement).
if [ -n "${CHECK:-}" ] && [ -n "$col_pid" ]; then
  "$CHECK" -collector "$target" -nodes "$(for i in 1 2 3; do printf '127.0.0.1:%d,' $((BASE_PORT + 4 + i)); done | sed 's/,$//')"
fi
grep -hiE '"level":"(warn|error)"' "$work"/n*.log | grep -v 'no receiver\|connect: connection refused' | head -5 || true
[ -z "$col_pid" ] || grep -E $'\t(warn|error)\t' "$work/otelcol.log" | grep -v 'createTransport failed' | head -5 || true
