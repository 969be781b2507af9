package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/otlpconv"
)

type fixture struct {
	kind, name string
	build      func() *tb
}

var fixtures []fixture

func add(kind, name string, build func() *tb) {
	fixtures = append(fixtures, fixture{kind, name, build})
}

// extra writers produce non-OTLP samples (Jaeger, Zipkin).
var extra []func(out string) error

func main() {
	out := flag.String("out", "testdata/traces", "output directory")
	flag.Parse()
	var m ptrace.JSONMarshaler
	for _, f := range fixtures {
		b, err := m.MarshalTraces(otlpconv.ToTraces(f.build().spans))
		if err != nil {
			fail(err)
		}
		dir := filepath.Join(*out, f.kind)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fail(err)
		}
		// One request per line, as the collector's file exporter writes.
		if err := os.WriteFile(filepath.Join(dir, f.name+".json"), append(b, '\n'), 0o644); err != nil {
			fail(err)
		}
	}
	for _, w := range extra {
		if err := w(*out); err != nil {
			fail(err)
		}
	}
	fmt.Printf("wrote %d fixtures\n", len(fixtures))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "diagfixtures:", err)
	os.Exit(1)
}
