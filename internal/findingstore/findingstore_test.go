package findingstore

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func tid(i int) model.TraceID {
	var id model.TraceID
	id[15] = byte(i)
	id[14] = byte(i >> 8)
	id[0] = 1
	return id
}

func finding(kind, svc string, trace model.TraceID, at time.Time) Stored {
	return Stored{Finding: analyze.Finding{Kind: kind, Severity: analyze.SeverityWarning, Title: kind + " in " + svc,
		TraceID: trace.String(), SpanIDs: []string{"00000000000000aa"}, ImpactMS: 12.5,
		Evidence: map[string]any{"count": 51}, Fix: "batch"}, Time: at, Service: svc, Operation: "GET /x"}
}

func TestPutListRestart(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base := c.Now()
	var batch []Stored
	for i := 0; i < 30; i++ {
		kind := []string{"n_plus_one_query", "slow_query", "error_origin"}[i%3]
		svc := []string{"orders", "payments"}[i%2]
		batch = append(batch, finding(kind, svc, tid(i), base.Add(time.Duration(i)*time.Second)))
	}
	// Out-of-order arrival must still list newest first.
	batch[5].Time = base.Add(100 * time.Second)
	if err := fs.Put(ctx, batch[:10]); err != nil {
		t.Fatal(err)
	}
	if err := fs.Put(ctx, batch[10:]); err != nil {
		t.Fatal(err)
	}
	sys := Stored{Finding: analyze.Finding{Kind: "latency_regression", Severity: analyze.SeverityCritical, Title: "p95 2.5x"},
		Time: base.Add(50 * time.Second), Service: "orders", Key: "latency_regression/orders/GET /x", Systemic: true,
		ExampleTraceIDs: []string{tid(1).String()}}
	if err := fs.Put(ctx, []Stored{sys}); err != nil {
		t.Fatal(err)
	}

	check := func(fs *Store) {
		t.Helper()
		all, err := fs.List(ctx, Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 31 {
			t.Fatalf("List all: %d findings, want 31", len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i].Time.After(all[i-1].Time) {
				t.Fatalf("not newest first at %d: %v after %v", i, all[i].Time, all[i-1].Time)
			}
		}
		if all[0].TraceID != tid(5).String() {
			t.Errorf("newest = %s, want the late trace 5", all[0].TraceID)
		}
		np, _ := fs.List(ctx, Query{Kind: "n_plus_one_query", Service: "orders", Limit: 100})
		// i%3==0 and i%2==0 → i%6==0: 0,6,12,18,24
		if len(np) != 5 {
			t.Errorf("kind+service: %d, want 5", len(np))
		}
		for _, f := range np {
			if f.Kind != "n_plus_one_query" || f.Service != "orders" {
				t.Errorf("filter leaked %s/%s", f.Kind, f.Service)
			}
		}
		win, _ := fs.List(ctx, Query{From: base.Add(10 * time.Second), To: base.Add(20 * time.Second), Limit: 100})
		if len(win) != 10 {
			t.Errorf("window [10s,20s): %d, want 10", len(win))
		}
		// The trace condition comes before the limit: the newest of the
		// listed traces, not of all.
		of, err := fs.List(ctx, Query{Traces: []model.TraceID{tid(3), tid(27), tid(200)}, Limit: 1})
		if err != nil || len(of) != 1 || of[0].TraceID != tid(27).String() {
			t.Errorf("Traces, limit 1 = %+v, %v; want trace 27's finding", of, err)
		}
		of, _ = fs.List(ctx, Query{Traces: []model.TraceID{tid(3), tid(27), tid(200)}, Limit: 10})
		if len(of) != 2 || of[0].TraceID != tid(27).String() || of[1].TraceID != tid(3).String() {
			t.Errorf("Traces = %+v; want the findings of traces 27 and 3", of)
		}
		if none, _ := fs.List(ctx, Query{Traces: []model.TraceID{tid(200)}}); len(none) != 0 {
			t.Errorf("Traces of a trace without findings = %+v", none)
		}
		two, _ := fs.List(ctx, Query{Kind: "slow_query,error_origin", Limit: 3})
		if len(two) != 3 {
			t.Errorf("limit: %d, want 3", len(two))
		}
		tr, err := fs.ForTrace(ctx, tid(7))
		if err != nil || len(tr) != 1 || tr[0].Kind != "slow_query" || tr[0].Service != "payments" || tr[0].Evidence == nil {
			t.Errorf("ForTrace(7) = %+v, %v", tr, err)
		}
		if ev, _ := json.Marshal(tr[0].Evidence); string(ev) != `{"count":51}` {
			t.Errorf("evidence round trip = %s", ev)
		}
		yes := true
		s, _ := fs.List(ctx, Query{Systemic: &yes})
		if len(s) != 1 || s[0].Key != sys.Key || len(s[0].ExampleTraceIDs) != 1 {
			t.Errorf("systemic = %+v", s)
		}
		counts := fs.Counts(base, base.Add(time.Hour))
		if counts["n_plus_one_query"] != 10 || counts["latency_regression"] != 1 {
			t.Errorf("counts = %v", counts)
		}
	}
	check(fs)
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fs2, err := Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs2.Close()
	check(fs2)
	// IDs continue after restart.
	if err := fs2.Put(ctx, []Stored{finding("slow_query", "orders", tid(99), base.Add(200*time.Second))}); err != nil {
		t.Fatal(err)
	}
	last, _ := fs2.List(ctx, Query{Limit: 1})
	if last[0].ID != 31 {
		t.Errorf("id after restart = %d, want 31", last[0].ID)
	}
}

// A plain segment (as versions before compressed segments sealed them)
// with bytes after its index's end loses those bytes on open.
func TestTornTailIsCut(t *testing.T) {
	compressSealed = false
	defer func() { compressSealed = true }()
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := fs.Put(ctx, []Stored{finding("slow_query", "a", tid(1), c.Now()), finding("slow_query", "a", tid(2), c.Now())}); err != nil {
		t.Fatal(err)
	}
	fs.Close()
	names, _ := filepath.Glob(filepath.Join(dir, "findings-*.jsonl"))
	if len(names) != 1 {
		t.Fatalf("segments: %v", names)
	}
	f, _ := os.OpenFile(names[0], os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"slow_query","ti`)
	f.Close()
	fs, err = Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if fs.Len() != 2 {
		t.Fatalf("after torn tail: %d findings, want 2", fs.Len())
	}
	if err := fs.Put(ctx, []Stored{finding("slow_query", "a", tid(3), c.Now())}); err != nil {
		t.Fatal(err)
	}
	got, err := fs.ForTrace(ctx, tid(3))
	if err != nil || len(got) != 1 {
		t.Fatalf("write after cut: %v %v", got, err)
	}
}

func TestRetentionDropsSegments(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: dir, Now: c.Now, Retention: 3 * time.Hour, SegmentDuration: time.Hour, SyncInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	ctx := context.Background()
	for h := 0; h < 6; h++ {
		if err := fs.Put(ctx, []Stored{finding("slow_query", "a", tid(h), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Hour)
	}
	// now = 06:00; retention keeps findings at ≥ 03:00 → hours 3,4,5.
	fs.Prune()
	if fs.Len() != 3 {
		t.Errorf("after retention: %d findings, want 3", fs.Len())
	}
	if got, _ := fs.ForTrace(ctx, tid(1)); len(got) != 0 {
		t.Errorf("expired trace still indexed: %v", got)
	}
	fs.packWG.Wait()                                                  // sealed segments compress in the background
	names, _ := filepath.Glob(filepath.Join(dir, "findings-*.json?")) // plain or compressed
	if len(names) != 3 {
		t.Errorf("segments after retention: %d, want 3", len(names))
	}
}

func TestHTTP(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: t.TempDir(), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for i := 0; i < 5; i++ {
		fs.Put(context.Background(), []Stored{finding("slow_query", "orders", tid(i), c.Now().Add(-time.Duration(i)*time.Minute))})
	}
	fs.Put(context.Background(), []Stored{finding("error_origin", "payments", tid(9), c.Now())})
	mux := http.NewServeMux()
	RegisterRoutes(mux, fs)
	get := func(url string) (int, []byte) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		return rec.Code, rec.Body.Bytes()
	}
	code, body := get("/api/v1/findings?kind=slow_query&from=150s&limit=10")
	var lr ListResponse
	if code != 200 || json.Unmarshal(body, &lr) != nil {
		t.Fatalf("list: %d %s", code, body)
	}
	if len(lr.Findings) != 3 { // 0, 1, 2 minutes ago
		t.Errorf("from=150s: %d findings, want 3: %s", len(lr.Findings), body)
	}
	code, body = get("/api/v1/findings?limit=2")
	json.Unmarshal(body, &lr)
	if code != 200 || len(lr.Findings) != 2 || !lr.Truncated {
		t.Errorf("limit=2: %d %s", code, body)
	}
	code, body = get("/api/v1/findings/summary")
	var sr SummaryResponse
	if code != 200 || json.Unmarshal(body, &sr) != nil || sr.Total != 6 || sr.Counts[0].Kind != "slow_query" || sr.Counts[0].Count != 5 {
		t.Errorf("summary: %d %s", code, body)
	}
	for _, bad := range []string{"/api/v1/findings?from=yesterday", "/api/v1/findings?limit=-1", "/api/v1/findings?trace_id=xyz",
		"/api/v1/findings?from=1h&to=2h", "/api/v1/findings?systemic=maybe"} {
		if code, body := get(bad); code != 400 {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
}

func TestFromResult(t *testing.T) {
	root := model.Span{TraceID: tid(1), SpanID: model.SpanID{1}, Service: "frontend", Name: "GET /", StartUnixNano: 5e9, EndUnixNano: 6e9}
	db := model.Span{TraceID: tid(1), SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{1}, Service: "orders", Name: "SELECT", StartUnixNano: 5.1e9, EndUnixNano: 5.9e9}
	res := analyze.Result{TraceID: tid(1).String(), Findings: []analyze.Finding{
		{Kind: "slow_query", SpanIDs: []string{db.SpanID.String()}}, {Kind: "idle_gap", SpanIDs: []string{"ffffffffffffffff"}}}}
	got := FromResult([]model.Span{root, db}, res)
	if len(got) != 2 || got[0].Service != "orders" || got[0].Operation != "SELECT" || got[1].Service != "frontend" ||
		got[0].TraceID != tid(1).String() || got[0].Time.UnixNano() != 5e9 {
		t.Fatalf("FromResult = %+v", got)
	}
	if f := Findings(got); len(f) != 2 || f[0].Kind != "slow_query" {
		t.Fatalf("Findings = %+v", f)
	}
	// A late callee start is seen on the caller's span; the record is
	// listed under the culprit, where it is to be fixed.
	res.Findings = []analyze.Finding{{Kind: "idle_gap", SpanIDs: []string{root.SpanID.String()},
		Culprit: &analyze.Culprit{Service: "route", Operation: "GET /route", Reason: "the callee started late."}}}
	if got := FromResult([]model.Span{root, db}, res); len(got) != 1 || got[0].Service != "route" || got[0].Operation != "GET /route" {
		t.Fatalf("record of a culprit finding = %+v", got)
	}
}

// BenchmarkPutOutOfOrder puts findings whose times trail the newest by up
// to 10 s, as traces of different durations complete, into a store that
// already holds 200k findings.
func BenchmarkPutOutOfOrder(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), SyncInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	base := time.Now().Add(-time.Hour)
	rng := rand.New(rand.NewPCG(1, 2))
	step := 50 * time.Microsecond // 20k findings/s
	put := func(i int) {
		t := base.Add(time.Duration(i)*step - time.Duration(rng.Int64N(int64(10*time.Second))))
		f := Stored{Time: t, Service: "checkout"}
		f.Kind, f.TraceID = "n_plus_one_query", "0af7651916cd43dd8448eb211c80319c"
		if err := s.Put(context.Background(), []Stored{f}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 200_000 {
		put(i)
	}
	b.ResetTimer()
	for i := range b.N {
		put(200_000 + i)
	}
}

// TestOutOfOrderPutsListInOrder puts more findings than one merge batch,
// out of time order and interleaved with reads, and checks every list is
// newest first and complete, also after a restart.
func TestOutOfOrderPutsListInOrder(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	rng := rand.New(rand.NewPCG(3, 4))
	kinds, services := []string{"n_plus_one_query", "retry_storm", "error_cascade"}, []string{"cart", "checkout"}
	want := map[string]int{}
	const n = 3*4096 + 77
	for i := range n {
		f := Stored{Time: base.Add(time.Duration(i)*time.Millisecond - time.Duration(rng.Int64N(int64(5*time.Second)))), Service: services[i%2]}
		f.Kind = kinds[i%3]
		want[f.Kind+"/"+f.Service]++
		if err := s.Put(context.Background(), []Stored{f}); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			if got, _ := s.List(context.Background(), Query{Limit: 5}); len(got) != 5 {
				t.Fatalf("after %d puts: %d findings listed", i+1, len(got))
			}
		}
	}
	check := func(s *Store) {
		t.Helper()
		if s.Len() != n {
			t.Fatalf("Len %d, want %d", s.Len(), n)
		}
		for _, q := range []Query{{}, {Kind: "retry_storm"}, {Service: "cart"}} {
			q.Limit = n
			got, err := s.List(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			count := 0
			for k, c := range want {
				if (q.Kind == "" || strings.HasPrefix(k, q.Kind+"/")) && (q.Service == "" || strings.HasSuffix(k, "/"+q.Service)) {
					count += c
				}
			}
			if len(got) != count {
				t.Fatalf("%+v: %d findings, want %d", q, len(got), count)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Time.After(got[i-1].Time) {
					t.Fatalf("%+v: finding %d (%v) newer than %d (%v)", q, i, got[i].Time, i-1, got[i-1].Time)
				}
			}
		}
		total := 0
		for _, c := range s.Counts(time.Time{}, time.Time{}) {
			total += c
		}
		if total != n {
			t.Fatalf("Counts total %d, want %d", total, n)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}
