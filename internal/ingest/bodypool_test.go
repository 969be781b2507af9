package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// The OTLP/HTTP body buffers and the gzip and zstd decoders are pooled
// across requests; these tests check that what one request left in them
// never shows up in another's spans.

// poolTestConfig turns the dedup window off: with it, spans of an earlier
// request read again from a stale buffer would be dropped as retries and
// go unnoticed.
func poolTestConfig() Config {
	c := testConfig()
	c.DedupWindowSpans = -1
	return c
}

var bodyEncodings = []string{"", "gzip", "zstd"}

// numberedTrace builds n spans of trace number k, each named after its
// trace and index and carrying pad bytes of attribute, so bodies of one
// span count can differ in size.
func numberedTrace(k uint32, n, pad int) ptrace.Traces {
	return svcSpans(n, func(i int, sp ptrace.Span) {
		sp.SetTraceID(numberedTraceID(k))
		var id pcommon.SpanID
		binary.BigEndian.PutUint32(id[4:], uint32(i+1))
		id[0] = 0xcd
		sp.SetSpanID(id)
		sp.SetName(fmt.Sprintf("t%d-s%d", k, i))
		sp.Attributes().PutStr("pad", strings.Repeat("x", pad))
	})
}

func numberedTraceID(k uint32) pcommon.TraceID {
	var id pcommon.TraceID
	id[0] = 0xab
	binary.BigEndian.PutUint32(id[12:], k)
	return id
}

// checkNumberedTrace fails unless the store holds exactly the n spans of
// trace k that numberedTrace built.
func checkNumberedTrace(t *testing.T, st *memstore.Store, k uint32, n int) {
	t.Helper()
	spans, err := st.Trace(context.Background(), model.TraceID(numberedTraceID(k)), store.TimeRange{})
	if err != nil {
		t.Fatalf("trace %d: %v", k, err)
	}
	if len(spans) != n {
		t.Fatalf("trace %d: %d spans stored, sent %d", k, len(spans), n)
	}
	prefix := fmt.Sprintf("t%d-s", k)
	for _, sp := range spans {
		if !strings.HasPrefix(sp.Name, prefix) {
			t.Fatalf("trace %d holds span %q of another request", k, sp.Name)
		}
	}
}

func postEncoded(t *testing.T, url, enc string, body []byte) (*http.Response, []byte) {
	t.Helper()
	if enc == "" {
		return post(t, url, ctProto, body)
	}
	return post(t, url, ctProto, compress(t, enc, body), "Content-Encoding", enc)
}

// A large body, then smaller ones, through the same pooled buffers and
// decoders: each request stores its own spans and nothing of the one
// before.
func TestHTTPBodiesOfDifferentSizes(t *testing.T) {
	st := memstore.New()
	s := startServer(t, poolTestConfig(), st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	sizes := []struct{ spans, pad int }{{2000, 200}, {1, 0}, {300, 50}, {2, 4000}, {1500, 10}, {3, 0}}
	sent := map[uint32]int{}
	for _, enc := range bodyEncodings {
		for _, sz := range sizes {
			k := uint32(len(sent) + 1)
			sent[k] = sz.spans
			resp, body := postEncoded(t, url, enc, protoBody(t, numberedTrace(k, sz.spans, sz.pad)))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("encoding %q, %d spans: %d %s", enc, sz.spans, resp.StatusCode, body)
			}
		}
	}
	for k, n := range sent {
		checkNumberedTrace(t, st, k, n)
	}
}

// Over the limit is still 413 whatever the encoding, also when the
// decoder or buffer comes from the pool, and a refused body leaves the
// pooled decoders fit for the next request.
func TestHTTPPooledReadersKeepTheLimit(t *testing.T) {
	st := memstore.New()
	cfg := poolTestConfig()
	cfg.MaxRequestBytes = 64 << 10
	s := startServer(t, cfg, st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	small := func(k uint32) []byte { return protoBody(t, numberedTrace(k, 20, 100)) }
	// Compresses to a few KB, so only the decoded size is over.
	large := protoBody(t, numberedTrace(999, 400, 400))
	if len(large) <= int(cfg.MaxRequestBytes) {
		t.Fatalf("large body is %d bytes, not over the limit", len(large))
	}
	k := uint32(0)
	for _, enc := range bodyEncodings {
		for round := 0; round < 2; round++ {
			k++
			if resp, body := postEncoded(t, url, enc, small(k)); resp.StatusCode != http.StatusOK {
				t.Fatalf("encoding %q, small body: %d %s", enc, resp.StatusCode, body)
			}
			checkNumberedTrace(t, st, k, 20)
			resp, body := postEncoded(t, url, enc, large)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(errMessage(t, resp, body), "exceeds the limit") {
				t.Fatalf("encoding %q, %d bytes decoded: %d %s", enc, len(large), resp.StatusCode, body)
			}
		}
	}
	if n := badCount(s, protoHTTP, reasonTooLarge); n != 6 {
		t.Errorf("too_large counted %v times, want 6", n)
	}
}

// A corrupt compressed body is a 400 and does not spoil the decoder it
// went through for the requests after it.
func TestHTTPCorruptCompressedBodyThenValid(t *testing.T) {
	st := memstore.New()
	s := startServer(t, poolTestConfig(), st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	k := uint32(0)
	for _, enc := range []string{"gzip", "zstd"} {
		good := compress(t, enc, protoBody(t, numberedTrace(0, 50, 100)))
		corrupt := append([]byte(nil), good...)
		for i := len(corrupt) / 2; i < len(corrupt); i++ {
			corrupt[i] ^= 0x5a
		}
		for round := 0; round < 3; round++ {
			resp, body := post(t, url, ctProto, corrupt, "Content-Encoding", enc)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("corrupt %s body: %d %s", enc, resp.StatusCode, body)
			}
			k++
			if resp, body := postEncoded(t, url, enc, protoBody(t, numberedTrace(k, 30, 10))); resp.StatusCode != http.StatusOK {
				t.Fatalf("valid %s body after a corrupt one: %d %s", enc, resp.StatusCode, body)
			}
			checkNumberedTrace(t, st, k, 30)
		}
	}
}

// Concurrent requests of every encoding and many sizes each store exactly
// their own spans: no pooled buffer or decoder serves two requests at once
// (run with -race).
func TestHTTPPooledBuffersNotShared(t *testing.T) {
	st := memstore.New()
	s := startServer(t, poolTestConfig(), st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	const senders, each = 12, 15
	type request struct {
		k    uint32
		n    int
		enc  string
		body []byte
	}
	reqs := make([]request, senders*each)
	for i := range reqs {
		k := uint32(i + 1)
		r := request{k: k, n: 1 + int(k*37%400), enc: bodyEncodings[int(k)%len(bodyEncodings)]}
		r.body = compress(t, r.enc, protoBody(t, numberedTrace(k, r.n, int(k%7)*60)))
		reqs[i] = r
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(reqs))
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func(mine []request) {
			defer wg.Done()
			for _, r := range mine {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(r.body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", ctProto)
				if r.enc != "" {
					req.Header.Set("Content-Encoding", r.enc)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("trace %d (%q, %d spans): status %d", r.k, r.enc, r.n, resp.StatusCode)
				}
			}
		}(reqs[w*each : (w+1)*each])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, r := range reqs {
		checkNumberedTrace(t, st, r.k, r.n)
	}
}
