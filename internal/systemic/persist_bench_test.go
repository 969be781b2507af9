package systemic

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// bigState fills a detector with 2000 endpoints: 500 flows whose traces
// cross three backend operations each, one trace per flow every 2 s for
// 30 minutes, so every series has full windows and a baseline.
func bigState(b *testing.B, dir string) *Detector {
	b.Helper()
	d := New(Config{Dir: dir}, nil, nil, nil)
	rng := rand.New(rand.NewSource(1))
	const flows = 500
	span := func(tid model.TraceID, parent model.SpanID, svc, name string, start time.Time, dur time.Duration) model.Span {
		var sid model.SpanID
		rng.Read(sid[:])
		return model.Span{TraceID: tid, SpanID: sid, ParentSpanID: parent, Name: name, Kind: model.KindServer, Service: svc,
			StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(dur).UnixNano()),
			Resource: model.Attrs{{Key: "service.version", Value: model.Str("1.0.0")}}}
	}
	spans := make([]model.Span, 0, 4)
	next := t0
	for t := t0; t.Before(t0.Add(30 * time.Minute)); t = t.Add(2 * time.Second) {
		if !t.Before(next) {
			d.Evaluate(t)
			next = t.Add(time.Minute)
		}
		for f := 0; f < flows; f++ {
			var tid model.TraceID
			rng.Read(tid[:])
			ms := func() time.Duration { return time.Duration(5+rng.ExpFloat64()*20) * time.Millisecond }
			spans = spans[:0]
			spans = append(spans, span(tid, model.SpanID{}, fmt.Sprintf("edge-%d", f%20), fmt.Sprintf("GET /flow/%d", f), t, ms()))
			for j := 0; j < 3; j++ {
				spans = append(spans, span(tid, spans[0].SpanID, fmt.Sprintf("svc-%d", (f*3+j)%40), fmt.Sprintf("op-%d-%d", f, j), t, ms()))
			}
			d.Observe(t.Add(100*time.Millisecond), spans)
		}
	}
	return d
}

// BenchmarkSnapshot measures writing the snapshot of 2000 endpoints (500
// flows): the copy made under the detector's lock (in chunks), the whole
// write with its size, and restoring it.
func BenchmarkSnapshot(b *testing.B) {
	dir := b.TempDir()
	d := bigState(b, dir)
	if len(d.ops) != 2000 || len(d.roots) != 500 {
		b.Fatalf("state has %d ops %d roots", len(d.ops), len(d.roots))
	}
	b.Run("capture", func(b *testing.B) {
		for b.Loop() {
			d.capture()
		}
	})
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			if err := d.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
		st, err := os.Stat(filepath.Join(dir, snapshotFile))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size()), "file-bytes")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			r := New(Config{Dir: dir}, nil, nil, nil)
			if len(r.ops) != len(d.ops) {
				b.Fatalf("restored %d ops", len(r.ops))
			}
		}
	})
}
