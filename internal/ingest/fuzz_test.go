package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// fuzzServer stores nothing; its sink checks that every span handed to
// storage is within the limits, whatever the request held, and puts the
// first violation in *bad (the fuzz function reports it).
func fuzzServer(f *testing.F, bad *error) *Server {
	cfg := DefaultConfig()
	cfg.DedupWindowSpans = -1 // each input on its own
	lim := cfg.limits()
	now := time.Now()
	sink := funcSink(func(_ context.Context, spans []model.Span) error {
		for i := range spans {
			sp := &spans[i]
			if sp.TraceID.IsZero() || sp.SpanID.IsZero() {
				*bad = fmt.Errorf("span with a zero id stored: %+v", sp)
			}
			if err := sp.CheckTimes(now.Add(time.Minute), cfg.MaxSpanDuration); err != nil {
				*bad = fmt.Errorf("span with invalid times stored: %v", err)
			}
			if len(sp.Attrs) > lim.MaxAttrs || len(sp.Events) > lim.MaxEvents || len(sp.Links) > lim.MaxLinks {
				*bad = fmt.Errorf("span over the count limits stored: %d attrs, %d events, %d links", len(sp.Attrs), len(sp.Events), len(sp.Links))
			}
			for _, a := range sp.Attrs {
				if len(a.Value.Str) > lim.MaxValueBytes || len(a.Key) > lim.MaxValueBytes {
					*bad = fmt.Errorf("attribute over the size limit stored: %d bytes", len(a.Value.Str))
				}
			}
		}
		return nil
	})
	s, err := New(cfg, sink, &logCapture{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// FuzzOTLPTraces feeds arbitrary bytes to the OTLP trace decoders (protobuf
// or JSON) and the whole conversion and check path. Seeds are in
// testdata/fuzz/FuzzOTLPTraces.
func FuzzOTLPTraces(f *testing.F) { fuzzExport(f, tracesSignal) }

// FuzzOTLPLogs is FuzzOTLPTraces for logs.
func FuzzOTLPLogs(f *testing.F) { fuzzExport(f, logsSignal) }

func fuzzExport(f *testing.F, sig otlpSignal) {
	var bad error
	s := fuzzServer(f, &bad)
	f.Fuzz(func(t *testing.T, data []byte, json bool) {
		bad = nil
		format := formatProto
		if json {
			format = formatJSON
		}
		res, err := sig.export(s, context.Background(), protoHTTP, format, data)
		if err == nil && res.rejected > 0 && res.msg == "" {
			t.Fatal("rejections without a message")
		}
		if bad != nil {
			t.Fatal(bad)
		}
	})
}
