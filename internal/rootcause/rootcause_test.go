package rootcause_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/faultbed"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
)

func windows(t *testing.T, class faultbed.Class, seed uint64, skew time.Duration) faultbed.Windows {
	t.Helper()
	w, err := faultbed.Generate(faultbed.Config{Seed: seed, Class: class, TracesPerWindow: 120, MaxSkew: skew})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func hasKind(c rootcause.Cause, kind string) bool {
	for _, e := range c.Evidence {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// Time lost in front of a callee is the callee's, however far the two
// hosts' clocks are apart.
func TestNetworkDelayBlamesCalleeDespiteSkew(t *testing.T) {
	for _, seed := range []uint64{11, 12, 13} {
		w := windows(t, faultbed.NetworkDelay, seed, 60*time.Millisecond)
		rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Causes) == 0 || rep.Causes[0].Service != w.Fault.Service {
			t.Errorf("seed %d: %s: causes %+v, want %s first", seed, w.Fault.String(), names(rep), w.Fault.Service)
			continue
		}
		if !hasKind(rep.Causes[0], rootcause.KindCalleeDelay) {
			t.Errorf("seed %d: top cause lacks callee_delay evidence: %+v", seed, rep.Causes[0].Evidence)
		}
	}
}

// A host slow on the network delays the calls into it and the calls it
// makes; the calls it makes are charged to it, not to its callees, because
// their other callers do not wait longer.
func TestHostDelayBlamesTheHost(t *testing.T) {
	hostEvidence := 0
	for _, seed := range []uint64{71, 72, 73, 74, 75} {
		w := windows(t, faultbed.HostDelay, seed, 40*time.Millisecond)
		rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Causes) == 0 || rep.Causes[0].Service != w.Fault.Service {
			t.Errorf("seed %d: %s: causes %v", seed, w.Fault.String(), names(rep))
			continue
		}
		if hasKind(rep.Causes[0], rootcause.KindHostDelay) {
			hostEvidence++
		}
	}
	if hostEvidence == 0 {
		t.Error("no run charged a caller's calls to its host")
	}
}

func TestExceptionBlamesOrigin(t *testing.T) {
	w := windows(t, faultbed.Exception, 21, 0)
	rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{})
	if err != nil {
		t.Fatal(err)
	}
	top := rep.Causes[0]
	if top.Service != w.Fault.Service || top.Operation != w.Fault.Operation {
		t.Fatalf("%s: top cause %s %s", w.Fault.String(), top.Service, top.Operation)
	}
	if !hasKind(top, rootcause.KindErrorOrigin) {
		t.Errorf("top cause lacks error_origin evidence: %+v", top.Evidence)
	}
	// The incident example must show the error starting there.
	found := false
	for _, tr := range w.Incident {
		if tr[0].TraceID.String() != top.Examples.Incident {
			continue
		}
		for _, s := range tr {
			found = found || (s.Service == top.Service && s.StatusCode == model.StatusError)
		}
	}
	if !found {
		t.Errorf("incident example %s has no failing span of %s", top.Examples.Incident, top.Service)
	}
}

func TestCPUContentionSelfTime(t *testing.T) {
	w := windows(t, faultbed.CPUContention, 31, 20*time.Millisecond)
	rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{})
	if err != nil {
		t.Fatal(err)
	}
	top := rep.Causes[0]
	if top.Service != w.Fault.Service || !hasKind(top, rootcause.KindSelfTime) {
		t.Fatalf("%s: top cause %+v", w.Fault.String(), top)
	}
	for _, e := range top.Evidence {
		if e.Kind == rootcause.KindSelfTime && (e.Ratio == nil || *e.Ratio < 1.3) {
			t.Errorf("self-time evidence without the rise: %+v", e)
		}
	}
}

// Two halves of a healthy period explain nothing.
func TestHealthyWindowsScoreLow(t *testing.T) {
	w := windows(t, faultbed.CPUContention, 41, 20*time.Millisecond)
	half := len(w.Baseline) / 2
	rep, err := rootcause.Rank(w.Baseline[:half], w.Baseline[half:], rootcause.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Causes {
		if c.Score > 0.5 {
			t.Errorf("healthy comparison blames %s with score %.2f", c.Service, c.Score)
		}
	}
	// The same, with the incident's mix of requests shifted: nearly all
	// home pages, few checkouts. Nothing got slower per request.
	var shifted [][]model.Span
	for i, tr := range w.Baseline[half:] {
		if rootName(tr) == "GET /home" || i%10 == 0 {
			shifted = append(shifted, tr)
		}
	}
	rep, err = rootcause.Rank(w.Baseline[:half], shifted, rootcause.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Causes {
		if c.Score > 0.5 {
			t.Errorf("a shift of the request mix blames %s with score %.2f", c.Service, c.Score)
		}
	}
}

func TestEndpointScopeAndErrors(t *testing.T) {
	w := windows(t, faultbed.PoolTooSmall, 51, 10*time.Millisecond)
	if _, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{Service: "nosuch"}); !errors.Is(err, rootcause.ErrNoTraces) {
		t.Errorf("unknown endpoint: err %v, want ErrNoTraces", err)
	}
	if _, err := rootcause.Rank(nil, w.Incident, rootcause.Options{}); !errors.Is(err, rootcause.ErrNoTraces) {
		t.Errorf("empty baseline: err %v, want ErrNoTraces", err)
	}
	rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{Service: "frontend", Operation: "POST /checkout"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Causes {
		if c.Service == "recommend" {
			t.Errorf("checkout endpoint ranking names recommend, which it never calls")
		}
	}
}

func TestJSONShape(t *testing.T) {
	w := windows(t, faultbed.SlowDownstream, 61, 10*time.Millisecond)
	rep, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Causes) > 2 {
		t.Errorf("limit 2 returned %d causes", len(rep.Causes))
	}
	b, _ := json.Marshal(rep)
	var doc struct {
		Causes []map[string]json.RawMessage `json:"causes"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Causes) == 0 {
		t.Fatalf("bad JSON %s: %v", b, err)
	}
	for _, k := range []string{"service", "operation", "score", "evidence", "examples"} {
		if _, ok := doc.Causes[0][k]; !ok {
			t.Errorf("cause lacks %q: %s", k, b)
		}
	}
	var ex rootcause.Examples
	_ = json.Unmarshal(doc.Causes[0]["examples"], &ex)
	if len(ex.Baseline) != 32 || len(ex.Incident) != 32 {
		t.Errorf("examples %+v, want two 32-hex trace ids", ex)
	}
	if !strings.Contains(string(doc.Causes[0]["evidence"]), `"text"`) {
		t.Errorf("evidence without text: %s", doc.Causes[0]["evidence"])
	}
}

func names(r rootcause.Report) []string {
	var out []string
	for _, c := range r.Causes {
		out = append(out, c.Service)
	}
	return out
}

func rootName(tr []model.Span) string {
	for _, s := range tr {
		if s.ParentSpanID.IsZero() {
			return s.Name
		}
	}
	return ""
}

// An Express web service gives inventory 500 ms; in the incident every
// call times out while inventory runs on. The error is reported by web
// (its fetch span fails, and its server span answers 500 through a
// "request handler" span with no status), but it starts in inventory.
func TestTimedOutCallBlamesTheCalleeStillWorking(t *testing.T) {
	trace := func(i int, incident bool) []model.Span {
		var tid model.TraceID
		tid[0], tid[1], tid[2] = byte(i), byte(i>>8), 1
		if incident {
			tid[2] = 2
		}
		base := uint64(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC).UnixNano()) + uint64(i)*uint64(time.Second)
		span := func(id, parent byte, svc, name string, kind model.SpanKind, startMS, endMS float64, attrs ...model.Attr) model.Span {
			return model.Span{TraceID: tid, SpanID: model.SpanID{id}, ParentSpanID: model.SpanID{parent}, Service: svc, Name: name,
				Kind: kind, StartUnixNano: base + uint64(startMS*1e6), EndUnixNano: base + uint64(endMS*1e6), Attrs: attrs}
		}
		status := func(code int64) model.Attr {
			return model.Attr{Key: "http.response.status_code", Value: model.Int(code)}
		}
		callee := 40.0 + float64(i%7)
		if incident {
			callee = 700 + float64(i%50)
		}
		spans := []model.Span{
			span(1, 0, "web", "GET /checkout", model.KindServer, 0, min(callee, 500)+3, status(200)),
			span(2, 1, "web", "request handler", model.KindInternal, 1, min(callee, 500)+2),
			span(3, 2, "web", "GET", model.KindClient, 1, min(callee, 500)+1, status(200)),
			span(4, 3, "inventory", "GET /reserve", model.KindServer, 1.5, callee, status(200)),
		}
		spans[0].ParentSpanID = model.SpanID{}
		if incident {
			spans[0].Attrs, spans[0].StatusCode = model.Attrs{status(500)}, model.StatusError
			spans[2].Attrs, spans[2].StatusCode = nil, model.StatusError
			spans[2].StatusMessage = "TimeoutError: The operation was aborted due to timeout"
		}
		return spans
	}
	var baseline, incident [][]model.Span
	for i := 0; i < 60; i++ {
		baseline = append(baseline, trace(i, false))
		incident = append(incident, trace(i, true))
	}
	rep, err := rootcause.Rank(baseline, incident, rootcause.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Causes) == 0 || rep.Causes[0].Service != "inventory" {
		t.Fatalf("causes %v, want inventory first", names(rep))
	}
	for _, c := range rep.Causes {
		for _, e := range c.Evidence {
			if e.Kind == rootcause.KindErrorOrigin && c.Service == "web" {
				t.Errorf("errors counted as starting in web: %q", e.Text)
			}
			if e.Kind == rootcause.KindErrorOrigin && c.Service == "inventory" && !strings.Contains(e.Text, "time out while it is still working") {
				t.Errorf("inventory's error evidence: %q", e.Text)
			}
		}
	}
}
