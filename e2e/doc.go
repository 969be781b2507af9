// Package e2e holds tracedx's end-to-end tests: the real `tracedx serve`
// binary is built and started as a child process, and clients nobody on the
// team wrote — the OpenTelemetry Go and JS SDKs, the Collector's
// telemetrygen, real HTTP services talking to PostgreSQL and Redis, and the
// demo shop — send it spans that are then read back and diagnosed through
// the public HTTP API.
//
// The tests carry the build tag "e2e", so a plain `go test ./...` (run
// before anything is installed) leaves them out; e2e/ci.sh installs what
// they need on a fresh machine and runs `go test -tags e2e ./e2e/`.
// Outside CI (env CI unset) a test whose external tool is missing skips
// with the reason; in CI it fails instead.
package e2e
