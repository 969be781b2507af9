package findingstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// The overview used to count a page of 500 findings and rank kinds by
// worst severity then count, so a 22 ms info-level query outranked a
// timeout cascade. The summary must count every finding and rank by impact.
func TestSummarizeCountsAllAndRanksByImpact(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: t.TempDir(), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	ctx := context.Background()
	base := c.Now().Add(-30 * time.Minute)
	var batch []Stored
	// 1,200 cheap info-level slow queries, newest of all.
	for i := 0; i < 1200; i++ {
		f := finding("slow_query", "inventory", tid(i), base.Add(time.Duration(i)*time.Second))
		f.Severity, f.ImpactMS = analyze.SeverityInfo, 0.5
		batch = append(batch, f)
	}
	// 20 timeout cascades at checkout, each costing seconds; one costs most.
	for i := 0; i < 20; i++ {
		f := finding("timeout_cascade", "checkout", tid(2000+i), base.Add(time.Duration(i)*time.Second))
		f.Severity, f.ImpactMS = analyze.SeverityCritical, 2000
		f.Operation = "POST /checkout"
		if i == 7 {
			f.ImpactMS = 5000
			f.SpanIDs = []string{"00000000000000b1", "00000000000000b2"}
			f.Culprit = &analyze.Culprit{Service: "payments", Operation: "charge", SpanID: "00000000000000b2"}
		}
		batch = append(batch, f)
	}
	// Out of range: older than from.
	batch = append(batch, finding("retry_storm", "cart", tid(3000), base.Add(-2*time.Hour)))
	if err := fs.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}
	sum, err := fs.Summarize(ctx, SummaryQuery{From: base.Add(-time.Minute), To: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != 1220 || sum.Traces != 1220 {
		t.Fatalf("total %d over %d traces, want 1220", sum.Total, sum.Traces)
	}
	if want := 1200*0.5 + 19*2000 + 5000; sum.ImpactMS != want {
		t.Errorf("impact %v, want %v", sum.ImpactMS, want)
	}
	if sum.BySeverity["info"] != 1200 || sum.BySeverity["critical"] != 20 {
		t.Errorf("by severity %v", sum.BySeverity)
	}
	if len(sum.Kinds) != 2 || sum.Kinds[0].Kind != "timeout_cascade" || sum.Kinds[1].Count != 1200 {
		t.Errorf("kinds not ranked by impact: %+v", sum.Kinds)
	}
	if sum.Services[0].Service != "checkout" {
		t.Errorf("services not ranked by impact: %+v", sum.Services)
	}
	g := sum.Groups[0]
	if g.Kind != "timeout_cascade" || g.Count != 20 || g.Operation != "POST /checkout" || g.Severity != "critical" {
		t.Fatalf("top group %+v", g)
	}
	if g.Example == nil || g.Example.TraceID != tid(2007).String() || g.Example.SpanID != "00000000000000b2" || g.Example.ImpactMS != 5000 {
		t.Errorf("example is not the costliest finding at its culprit span: %+v", g.Example)
	}
	if !g.LastSeen.After(g.FirstSeen) {
		t.Errorf("first %v last %v", g.FirstSeen, g.LastSeen)
	}
	// Filters and the group cap leave the totals whole.
	sum, err = fs.Summarize(ctx, SummaryQuery{Service: "inventory", Groups: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != 1200 || len(sum.Groups) != 1 || sum.GroupsTotal != 1 || sum.Groups[0].Kind != "slow_query" {
		t.Errorf("service filter: total %d groups %+v", sum.Total, sum.Groups)
	}
}

func TestSummaryEndpoint(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fs, err := Open(Options{Dir: t.TempDir(), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	var batch []Stored
	for i := 0; i < 600; i++ {
		batch = append(batch, finding([]string{"slow_query", "n_plus_one_query", "retry_storm"}[i%3], fmt.Sprint("svc", i%4), tid(i), c.Now().Add(-time.Duration(i)*time.Second)))
	}
	if err := fs.Put(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	RegisterRoutes(mux, fs)
	get := func(url string) (int, SummaryResponse) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		var sr SummaryResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &sr)
		return rec.Code, sr
	}
	code, sr := get("/api/v1/findings/summary?from=1h&groups=2")
	if code != 200 || sr.Total != 600 || len(sr.Kinds) != 3 || len(sr.Groups) != 2 || sr.GroupsTotal != 12 || len(sr.Counts) != 3 {
		t.Errorf("summary: %d %+v", code, sr)
	}
	if code, sr = get("/api/v1/findings/summary?kind=retry_storm&service=svc1"); code != 200 || sr.Total != 50 {
		t.Errorf("filtered summary: %d total %d", code, sr.Total)
	}
	for _, bad := range []string{"?systemic=maybe", "?groups=-1", "?from=tomorrowish"} {
		if code, _ := get("/api/v1/findings/summary" + bad); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}

// The summary must count findings in sealed segments from their on-disk
// index records (the store keeps only per-segment metadata in memory),
// and an index of the older layout, without severity and impact, must be
// rebuilt rather than read as zeros.
func TestSummaryFromSealedSegmentsAfterReopen(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	opt := Options{Dir: dir, Now: c.Now, SegmentMaxFindings: 100}
	fs, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var batch []Stored
	for i := 0; i < 750; i++ {
		f := finding([]string{"slow_query", "timeout_cascade"}[i%2], fmt.Sprint("svc", i%3), tid(i), c.Now().Add(-time.Duration(i)*time.Second))
		f.Severity, f.ImpactMS, f.Operation = analyze.SeverityWarning, float64(i%7), fmt.Sprint("op", i%5)
		if i == 301 {
			f.Severity, f.ImpactMS = analyze.SeverityCritical, 900
		}
		batch = append(batch, f)
	}
	for i := 0; i < len(batch); i += 50 { // several Puts, so segments rotate
		if err := fs.Put(ctx, batch[i:i+50]); err != nil {
			t.Fatal(err)
		}
	}
	q := SummaryQuery{From: c.Now().Add(-time.Hour), To: c.Now().Add(time.Second)}
	before, err := fs.Summarize(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if before.Total != 750 || before.BySeverity["critical"] != 1 || before.GroupsTotal != 2*3*5 {
		t.Fatalf("before reopen: total %d, severities %v, %d groups", before.Total, before.BySeverity, before.GroupsTotal)
	}
	if g := before.Groups[0]; g.Severity != "critical" || g.Example == nil || g.Example.TraceID != tid(301).String() {
		t.Errorf("top group %+v", g)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*"+idxSuffix))
	if len(idx) < 5 {
		t.Fatalf("%d index files, want the findings spread over sealed segments", len(idx))
	}
	// Make one index look like the older layout.
	b, err := os.ReadFile(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "TDXFIX01")
	if err := os.WriteFile(idx[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err = Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	waitReady(t, fs)
	after, err := fs.Summarize(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if after.Total != before.Total || after.ImpactMS != before.ImpactMS || after.GroupsTotal != before.GroupsTotal ||
		after.Groups[0].Example.TraceID != before.Groups[0].Example.TraceID || after.BySeverity["warning"] != 749 {
		t.Errorf("after reopen: total %d impact %v groups %d severities %v; before: total %d impact %v groups %d",
			after.Total, after.ImpactMS, after.GroupsTotal, after.BySeverity, before.Total, before.ImpactMS, before.GroupsTotal)
	}
}
