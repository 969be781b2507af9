package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// While the bucket is down, blocks cannot be uploaded: the engine keeps
// the spans (readable, in the WAL), refuses writes once its memory bound
// is reached (back-pressure), and uploads everything when the bucket is
// back. Nothing acknowledged is lost.
func TestBucketOutageIsBackPressure(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	target, err := url.Parse(cfg.Endpoint)
	if err != nil || target.Scheme == "" {
		t.Skip("needs an http:// endpoint to proxy")
	}
	var down atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	direct := cfg
	cfg.Endpoint, cfg.Attempts = srv.URL, 2
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Logger = quiet
	st := open(t, cfg)
	dir := t.TempDir()
	opts := engine.Options{Dir: dir, Storage: st, HeadMaxBytes: 4 << 20, Logger: quiet,
		IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour}
	e, err := engine.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	var acked []model.Span
	write := func() error {
		b := outageBatch(r, 200)
		err := e.Write(ctx, b)
		if err == nil {
			acked = append(acked, b...)
		}
		return err
	}
	for i := 0; i < 3; i++ {
		if err := write(); err != nil {
			t.Fatal(err)
		}
	}
	down.Store(true)
	if err := e.Flush(ctx); err == nil {
		t.Fatal("flush succeeded with the bucket down")
	}
	if spans, err := e.Trace(ctx, acked[0].TraceID, store.TimeRange{}); err != nil || len(spans) == 0 {
		t.Fatalf("span unreadable after a failed upload: %v", err)
	}
	overloaded := false
	for i := 0; i < 2000 && !overloaded; i++ {
		err := write()
		if errors.Is(err, store.ErrOverloaded) {
			overloaded = true
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !overloaded {
		t.Fatal("writes never refused while the bucket was down")
	}
	down.Store(false)
	if err := e.Flush(ctx); err != nil {
		t.Fatalf("flush after the bucket came back: %v", err)
	}
	if err := write(); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen straight on the bucket: every acknowledged span is there.
	direct.SpoolDir = t.TempDir()
	opts.Storage = open(t, direct)
	e, err = engine.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if st := e.Stats(); st.BlockSpans+st.HeadSpans != int64(len(acked)) {
		t.Fatalf("after recovery: %d spans in blocks + %d replayed, %d acknowledged", st.BlockSpans, st.HeadSpans, len(acked))
	}
	for _, s := range acked[:50] {
		if _, err := e.Trace(ctx, s.TraceID, store.TimeRange{}); err != nil {
			t.Fatalf("acknowledged trace %s: %v", s.TraceID, err)
		}
	}
}

func outageBatch(r *rand.Rand, n int) []model.Span {
	now := uint64(time.Now().UnixNano())
	out := make([]model.Span, n)
	for i := range out {
		var tid model.TraceID
		var sid model.SpanID
		for k := range tid {
			tid[k] = byte(r.UintN(256))
		}
		for k := range sid {
			sid[k] = byte(r.UintN(256))
		}
		out[i] = model.Span{TraceID: tid, SpanID: sid, Name: fmt.Sprint("op-", i%7), Service: "svc",
			StartUnixNano: now, EndUnixNano: now + 1e6, Attrs: model.Attrs{{Key: "payload", Value: model.Str(fmt.Sprint(r.Uint64()))}}}
	}
	return out
}
