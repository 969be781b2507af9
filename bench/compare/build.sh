#!/bin/sh
# Builds the comparison servers from their Go sources into a scratch
# directory (default /tmp/tracedx-compare), for `go run ./bench/harness
# -compare`. Not part of CI: it downloads Jaeger's whole module graph.
#
#   bench/compare/build.sh [scratch-dir]
#
# Jaeger: v1.75.0 of github.com/jaegertracing/jaeger (the Jaeger v2
# all-in-one binary, cmd/jaeger), built as a Go tool of a throwaway module
# so its dependency versions are its own, not tracedx's.
# VictoriaTraces: github.com/VictoriaMetrics/VictoriaTraces is built the
# same way when the Go module proxy serves it. The proxy this project uses
# refuses it (403); then a source tree of the repository given as the
# second argument (a checkout or an export of a commit, with its vendor
# directory) is built with -mod=vendor, so no module download is needed.
# Without either the script says so and skips it.
#
#   bench/compare/build.sh [scratch-dir] [victoriatraces-source-dir]
set -eu
dir=${1:-/tmp/tracedx-compare}
vtsrc=${2:-}
[ -z "$vtsrc" ] || vtsrc=$(cd "$vtsrc" && pwd)
mkdir -p "$dir/jaeger-mod" "$dir/bin"
dir=$(cd "$dir" && pwd)

echo "building Jaeger v1.75.0 into $dir/bin/jaeger" >&2
cd "$dir/jaeger-mod"
[ -f go.mod ] || go mod init tracedx.local/compare/jaeger >/dev/null 2>&1
go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0
go build -o "$dir/bin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger

echo "building VictoriaTraces into $dir/bin/victoria-traces" >&2
mkdir -p "$dir/vt-mod"
cd "$dir/vt-mod"
[ -f go.mod ] || go mod init tracedx.local/compare/victoriatraces >/dev/null 2>&1
if go get -tool github.com/VictoriaMetrics/VictoriaTraces/app/victoria-traces@latest 2>"$dir/vt-get.log"; then
	go build -o "$dir/bin/victoria-traces" github.com/VictoriaMetrics/VictoriaTraces/app/victoria-traces
elif [ -n "$vtsrc" ]; then
	echo "VictoriaTraces: the Go module proxy does not serve it; building the source tree $vtsrc" >&2
	cd "$vtsrc"
	go build -mod=vendor -o "$dir/bin/victoria-traces" ./app/victoria-traces
else
	echo "VictoriaTraces: the Go module proxy does not serve github.com/VictoriaMetrics/VictoriaTraces (see $dir/vt-get.log); skipped (pass a source tree as the second argument)" >&2
fi
ls -l "$dir/bin" >&2
