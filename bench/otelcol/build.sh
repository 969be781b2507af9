#!/usr/bin/env bash
# Builds a minimal OpenTelemetry Collector for bench/otelcol/run.sh: the
# OTLP receiver and contrib's loadbalancing exporter (which brings the OTLP
# exporter), every Collector module at one release, in its own module
# outside this repository (the Collector is no dependency of tracedx).
#
#   bash bench/otelcol/build.sh [dir]      # default /tmp/otelcol-lb; binary dir/otelcol-lb
#
# v0.161.0 (core v1.67.0) is the newest contrib release of the exporter the
# module proxy serves here; it requires servicediscovery v1.48.0, which the
# proxy does not serve, so v1.49.0 is pinned instead.
set -euo pipefail
dir=${1:-/tmp/otelcol-lb}
CONTRIB=${CONTRIB:-v0.161.0}
CORE=${CORE:-v0.161.0}
export PATH="$PATH:/usr/local/go/bin"
mkdir -p "$dir"
cd "$dir"
[ -f go.mod ] || go mod init otelcol-lb
cat >main.go <<'GO'
// Command otelcol-lb is an OpenTelemetry Collector with the OTLP receiver
// and the loadbalancing exporter only.
package main

import (
	"log"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func factories() (otelcol.Factories, error) {
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](loadbalancingexporter.NewFactory()); err != nil {
		return f, err
	}
	return f, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol-lb", Description: "OTLP receiver, loadbalancing exporter", Version: "bench"},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()},
				DefaultScheme:     "file",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatal(err)
	}
}
GO
go get "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter@$CONTRIB" \
  "go.opentelemetry.io/collector/otelcol@$CORE" "go.opentelemetry.io/collector/receiver/otlpreceiver@$CORE" \
  github.com/aws/aws-sdk-go-v2/service/servicediscovery@v1.49.0
go mod tidy
go build -o otelcol-lb .
./otelcol-lb components | grep -E 'name: (otlp|load_balancing)$'
echo "built $dir/otelcol-lb"
