#!/usr/bin/env bash
# End-to-end tests: installs what they need on a fresh machine (PostgreSQL,
# Redis, Node.js + npm from Debian packages, telemetrygen from the Go module
# proxy, the OpenTelemetry JS SDK from npm), then runs them. Safe to run
# again: each step is skipped when its tool is already there. Exits non-zero
# when an install step or a test fails.
#
#   bash e2e/ci.sh            install and test
#   bash e2e/ci.sh install    install only
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in sync with telemetrygenVersion in e2e/clients_test.go.
TELEMETRYGEN_VERSION=v0.161.0
# Keep in sync with alertmanagerVersion in e2e/alerting_test.go.
ALERTMANAGER_VERSION=v0.35.0

export PATH="$PATH:/usr/local/go/bin"
GOBIN_DIR="$(go env GOBIN)"
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
export PATH="$PATH:$GOBIN_DIR"

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  sudo_cmd=(sudo)
fi

have_postgres() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
have_postgres || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== e2e: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v telemetrygen >/dev/null 2>&1; then
  echo "== e2e: go install telemetrygen@$TELEMETRYGEN_VERSION"
  go install "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$TELEMETRYGEN_VERSION"
fi

# Alertmanager for e2e/alerting_test.go. `go install ...@v0.35.0` first; the
# v0.35.0 module zip lacks the prebuilt web UI (ui/app/dist) that its ui
# package embeds, so when that build fails the same module source is built
# from a copy with a placeholder page where the UI would be (the API the
# test uses is complete).
if ! command -v alertmanager >/dev/null 2>&1; then
  echo "== e2e: go install alertmanager@$ALERTMANAGER_VERSION"
  am_ldflags="-X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}"
  if ! go install -ldflags "$am_ldflags" "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION"; then
    echo "== e2e: building alertmanager $ALERTMANAGER_VERSION from the module source with a placeholder UI"
    am_src="$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    am_tmp="$(mktemp -d)"
    cp -r "$am_src/." "$am_tmp/"
    chmod -R u+w "$am_tmp"
    for ui in elm mantine; do
      mkdir -p "$am_tmp/ui/app/dist/$ui"
      echo '<!doctype html><title>Alertmanager</title><p>Web UI not built; the API is at /api/v2.</p>' >"$am_tmp/ui/app/dist/$ui/index.html"
    done
    (cd "$am_tmp" && go build -ldflags "$am_ldflags" -o "$GOBIN_DIR/alertmanager" ./cmd/alertmanager)
    rm -rf "$am_tmp"
  fi
fi

echo "== e2e: npm ci (e2e/js)"
(cd e2e/js && npm ci --no-audit --no-fund --loglevel=error)

if [ "${1:-}" = "install" ]; then
  exit 0
fi

echo "== e2e: node $(node --version), $(redis-server --version | cut -d' ' -f1-3), telemetrygen $(command -v telemetrygen), alertmanager $(command -v alertmanager)"
go vet -tags e2e ./e2e/
if command -v staticcheck >/dev/null 2>&1; then
  staticcheck -tags e2e ./e2e/
fi
# CI=true makes a missing tool a failure instead of a skip.
CI="${CI:-true}" go test -race -count=1 -tags e2e -timeout 10m ./e2e/
