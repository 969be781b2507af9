package ingest

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// Export requests over the processor cap (Config.CPU) wait for a slot and
// are then stored and acknowledged: the cap paces ingest, it refuses
// nothing. Both OTLP protocols share the slots.
func TestCPUSlotsCapRequestsWithoutRefusing(t *testing.T) {
	slots := priority.NewSlots(func() int { return 2 })
	cfg := testConfig()
	cfg.CPU = slots
	st := memstore.New()
	var cur, peak atomic.Int64
	release := make(chan struct{})
	sink := funcSink(func(ctx context.Context, spans []model.Span) error {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		cur.Add(-1)
		return st.Write(ctx, spans)
	})
	s := startServer(t, cfg, sink, nil)
	client := ptraceotlp.NewGRPCClient(dial(t, s.GRPCAddr()))

	const requests = 6
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			td := sampleTraces(byte(i+1), 3)
			if i%2 == 0 {
				_, err := client.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td))
				errs <- err
				return
			}
			resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, td))
			if resp.StatusCode != http.StatusOK {
				t.Errorf("OTLP/HTTP export: %d %s", resp.StatusCode, body)
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); slots.InUse() != 2 || slots.Waiting() != requests-2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots in use, %d requests waiting; want 2 and %d", slots.InUse(), slots.Waiting(), requests-2)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("%d requests stored at once with 2 slots", p)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("OTLP/gRPC export over the cap: %v", err)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("%d requests stored at once with 2 slots", p)
	}
	for i := range requests {
		spans, err := st.Trace(context.Background(), model.TraceID(tid(byte(i+1))), store.TimeRange{})
		if err != nil || len(spans) != 3 {
			t.Fatalf("trace %d after its request was acknowledged: %d spans, %v", i+1, len(spans), err)
		}
	}
	if n := slots.InUse(); n != 0 {
		t.Fatalf("%d slots still held after every request returned", n)
	}
}
