#!/usr/bin/env bash
# End-to-end tests of the web UI for CI: installs Debian's chromium (never a
# downloaded browser) and the pinned npm dependencies, then runs run.mjs
# against a freshly built `tracedx serve`. Idempotent; non-zero on failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! [ -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium
fi

cd "$here"
# Exact versions from package-lock.json; playwright-core bundles no browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if ! [ -d node_modules/playwright-core ] || ! npm ls --silent >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi
node unit.mjs
exec node run.mjs "$@"
