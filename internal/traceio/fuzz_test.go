package traceio

import (
	"testing"
)

// FuzzParse feeds arbitrary bytes to the trace-file readers of `tracedx
// analyze` (OTLP JSON and protobuf, Jaeger JSON, Zipkin v2 JSON): they must
// return spans or an error, never panic or overflow the stack. Seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		spans, format, err := Parse(data)
		if err == nil && format == "" {
			t.Fatalf("%d spans read with no format", len(spans))
		}
		_ = Group(spans)
	})
}
