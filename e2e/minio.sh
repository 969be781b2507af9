#!/usr/bin/env bash
# S3 tests: builds a real MinIO server from the Go module proxy (once; the
# build takes ~15 min on 2 cores), starts it on free loopback ports with a
# throwaway data directory, and runs against it
#   - the storage engine's own test suite with blocks in the bucket,
#   - the S3 block storage tests (ranged reads, throttling, commit order),
#   - the cluster package tests (three in-process nodes on the bucket),
#   - the findings, state, history and summary archive copies in the
#     bucket, and whole-server cluster tests (tokens, mTLS, tenants,
#     merged aggregates, a stopped node's findings and archive read from
#     the bucket),
#   - e2e/cluster: three `tracedx serve` processes on one bucket (any node
#     answers any trace; kill -9 of a node mid-ingest loses nothing
#     acknowledged; compaction runs once per block; RED metrics and
#     operation lists are the whole cluster's on every node).
# MinIO is stopped when the script exits.
#
#   bash e2e/minio.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The MinIO commit the module proxy served for @latest when this was
# written; pinned so CI builds the same server every time.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

export PATH="$PATH:/usr/local/go/bin"
GOBIN_DIR="$(go env GOBIN)"
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
export PATH="$PATH:$GOBIN_DIR"

if ! command -v minio >/dev/null 2>&1; then
  echo "== minio: go install github.com/minio/minio@$MINIO_VERSION (slow: a large build)"
  start=$(date +%s)
  go install "github.com/minio/minio@$MINIO_VERSION"
  echo "== minio: built in $(( $(date +%s) - start ))s"
fi

# A random port nothing listens on, below the ephemeral range where
# outgoing connections could take it first (bash only: no python or curl
# needed on a fresh machine).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# minio_ready: GET /minio/health/ready answers 200 (in a subshell, so the
# connection and its error messages stay there).
minio_ready() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$api_port" || exit 1
    printf 'GET /minio/health/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r _ status _ <&3
    [ "$status" = 200 ]
  ) 2>/dev/null
}

work=$(mktemp -d)
api_port=$(free_port)
console_port=$(free_port)
export AWS_ACCESS_KEY_ID=tracedx-ci
export AWS_SECRET_ACCESS_KEY=tracedx-ci-secret
MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY \
  minio server --quiet --address "127.0.0.1:$api_port" --console-address "127.0.0.1:$console_port" "$work/data" \
  >"$work/minio.log" 2>&1 &
minio_pid=$!
cleanup() {
  kill "$minio_pid" 2>/dev/null || true
  wait "$minio_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export TRACEDX_TEST_S3_ENDPOINT="http://127.0.0.1:$api_port"
for _ in $(seq 1 150); do
  if minio_ready; then
    break
  fi
  if ! kill -0 "$minio_pid" 2>/dev/null; then
    echo "minio exited:"; cat "$work/minio.log"; exit 1
  fi
  sleep 0.2
done
minio_ready || { echo "minio not ready:"; cat "$work/minio.log"; exit 1; }
echo "== minio ready at $TRACEDX_TEST_S3_ENDPOINT"

# The engine suite runs here without -race: the README's test command has
# already run it under -race on local storage (the same code but for the
# block files, ~6 min there), and the S3-facing packages below keep -race.
# Without it the suite takes under 2 min on MinIO instead of over 6, which
# keeps .ci/run inside its budget on a 2-core machine. The whole-server and
# three-process tests run beside it, each with its output kept apart and
# printed whole when it ends.
go vet -tags minio ./e2e/cluster/
(
  echo "== whole servers on MinIO: a cluster with tokens, mTLS and tenants; aggregates merged; findings, history and archive outliving the disk and their node"
  go test -race -count=1 -timeout 10m -run 'Cluster|OnS3|Bucket|Forwarded' ./internal/server/
  echo "== e2e: three tracedx nodes on one bucket"
  go test -count=1 -tags minio -timeout 10m ./e2e/cluster/
) >"$work/servers.log" 2>&1 &
servers_pid=$!

echo "== engine suite, S3 storage and cluster packages on MinIO"
engine_rc=0
go test -count=1 -timeout 20m ./internal/store/engine/ || engine_rc=$?
go test -race -count=1 -timeout 20m ./internal/store/s3store/ ./internal/cluster/ ./internal/findingstore/ ./internal/statesync/ || engine_rc=$?

servers_rc=0
wait "$servers_pid" || servers_rc=$?
cat "$work/servers.log"
if [ "$engine_rc" != 0 ] || [ "$servers_rc" != 0 ]; then
  echo "== MinIO tests failed (engine suite and packages: exit $engine_rc; servers and e2e/cluster: exit $servers_rc)"
  exit 1
fi
