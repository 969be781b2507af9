package v1

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/faultbed"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
	"github.com/tracedx/tracedx/internal/store"
)

// culpritFindings stores a finding naming culprit for the traces in only.
type culpritFindings struct {
	culprit analyze.Culprit
	only    map[model.TraceID]bool
}

func (c culpritFindings) TraceFindings(_ context.Context, id model.TraceID) ([]analyze.Finding, bool, error) {
	if !c.only[id] {
		return nil, false, nil
	}
	return []analyze.Finding{{Kind: "slow_dependency", Culprit: &c.culprit}}, true, nil
}

func rootCauseServer(t *testing.T, class faultbed.Class, d Deps) (srv interface{ Close() }, get func(string) (int, map[string]any), w faultbed.Windows) {
	t.Helper()
	w, err := faultbed.Generate(faultbed.Config{Seed: 9, Class: class, TracesPerWindow: 100})
	if err != nil {
		t.Fatal(err)
	}
	var spans []model.Span
	for _, tr := range append(append([][]model.Span{}, w.Baseline...), w.Incident...) {
		spans = append(spans, tr...)
	}
	d.Store = apitest.NewStore(t, spans)
	d.Now = func() time.Time { return time.Unix(0, int64(spans[len(spans)-1].EndUnixNano)).Add(time.Minute) }
	s := apitest.Serve(t, NewHandler(d))
	return s, func(path string) (int, map[string]any) { return apitest.GetJSON(t, s, path) }, w
}

func windowOf(traces [][]model.Span) (from, to int64) {
	for _, tr := range traces {
		for _, s := range tr {
			ms := int64(s.StartUnixNano / 1e6)
			if from == 0 || ms < from {
				from = ms
			}
			if ms+1 > to {
				to = ms + 1
			}
		}
	}
	return from, to
}

func TestRootCauseRoute(t *testing.T) {
	_, get, w := rootCauseServer(t, faultbed.NetworkDelay, Deps{})
	from, to := windowOf(w.Incident)
	st, m := get(fmt.Sprintf("/api/v1/rootcause?from=%d&to=%d", from, to))
	if st != http.StatusOK {
		t.Fatal(st, m)
	}
	causes := apitest.Arr(t, "causes", m["causes"])
	top := apitest.WantKeys(t, "cause", causes[0], "service", "operation", "score", "evidence", "examples")
	if top["service"] != w.Fault.Service {
		t.Errorf("%s: top cause %v", w.Fault.String(), top)
	}
	ex := apitest.WantKeys(t, "examples", top["examples"], "baseline", "incident")
	if s, _ := ex["incident"].(string); len(s) != 32 {
		t.Errorf("incident example %v, want a trace id", ex["incident"])
	}
	ev, _ := apitest.Arr(t, "evidence", top["evidence"])[0].(map[string]any)
	if ev["kind"] == nil || ev["text"] == "" {
		t.Errorf("evidence without kind or text: %v", ev)
	}

	// An explicit baseline equal to the default gives the same top cause;
	// a tiny sample still works.
	st, m = get(fmt.Sprintf("/api/v1/rootcause?from=%d&to=%d&baseline_from=%d&baseline_to=%d&limit=40&causes=1", from, to, from-(to-from), from))
	if st != http.StatusOK {
		t.Fatal(st, m)
	}
	causes = apitest.Arr(t, "causes", m["causes"])
	if len(causes) != 1 || causes[0].(map[string]any)["service"] != w.Fault.Service {
		t.Errorf("explicit baseline, causes=1: %v", causes)
	}
}

// rankWithFindings ranks the exception run of seed 9 with the findings
// deps makes from the ids of its incident traces.
func rankWithFindings(t *testing.T, deps func(incident map[model.TraceID]bool) Deps) map[string]any {
	t.Helper()
	w, err := faultbed.Generate(faultbed.Config{Seed: 9, Class: faultbed.Exception, TracesPerWindow: 100})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[model.TraceID]bool{}
	for _, tr := range w.Incident {
		ids[tr[0].TraceID] = true
	}
	_, get, _ := rootCauseServer(t, faultbed.Exception, deps(ids))
	from, to := windowOf(w.Incident)
	st, m := get(fmt.Sprintf("/api/v1/rootcause?from=%d&to=%d", from, to))
	if st != http.StatusOK {
		t.Fatal(st, m)
	}
	return m
}

// evidenceKinds maps each cause's service to its evidence kinds.
func evidenceKinds(t *testing.T, m map[string]any) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, c := range apitest.Arr(t, "causes", m["causes"]) {
		svc, _ := c.(map[string]any)["service"].(string)
		out[svc] = map[string]bool{}
		for _, e := range apitest.Arr(t, "evidence", c.(map[string]any)["evidence"]) {
			kind, _ := e.(map[string]any)["kind"].(string)
			out[svc][kind] = true
		}
	}
	return out
}

var emailCulprit = analyze.Culprit{Service: "email", Operation: "POST /send"}

// Stored findings' culprits count: findings that blame a service in the
// incident window only are evidence against it.
func TestRootCauseRouteUsesStoredFindings(t *testing.T) {
	m := rankWithFindings(t, func(ids map[model.TraceID]bool) Deps {
		return Deps{Findings: culpritFindings{culprit: emailCulprit, only: ids}}
	})
	if !evidenceKinds(t, m)["email"]["finding_culprit"] {
		t.Errorf("no finding_culprit evidence against email: %v", m)
	}
}

// windowFindings answers the window query with a culprit finding for each
// incident trace, and as many blaming ledger in traces outside the sample.
type windowFindings struct {
	incident map[model.TraceID]bool
	culprit  analyze.Culprit
}

func (w windowFindings) FindingsBetween(_ context.Context, from, to time.Time, _ []model.TraceID, _ int) ([]analyze.Finding, error) {
	var out []analyze.Finding
	for id := range w.incident {
		out = append(out, analyze.Finding{Kind: "slow_dependency", TraceID: id.String(), Culprit: &w.culprit})
		id[0] ^= 0xff
		out = append(out, analyze.Finding{Kind: "retry_storm", TraceID: id.String(), Culprit: &analyze.Culprit{Service: "ledger"}})
	}
	return out, nil
}

func TestRootCauseRouteUsesWindowFindings(t *testing.T) {
	m := rankWithFindings(t, func(ids map[model.TraceID]bool) Deps {
		return Deps{WindowFindings: windowFindings{incident: ids, culprit: emailCulprit}}
	})
	kinds := evidenceKinds(t, m)
	if _, ok := kinds["ledger"]; ok {
		t.Error("a finding of a trace outside the sample counted")
	}
	if !kinds["email"]["finding_culprit"] {
		t.Errorf("window findings blaming email are not evidence: %v", m)
	}
}

// A window without traces is an empty ranking with the reason, not a 404:
// the UI tells "nothing to compare" apart from a missing endpoint.
func TestRootCauseRouteEmptyWindow(t *testing.T) {
	_, get, w := rootCauseServer(t, faultbed.CPUContention, Deps{})
	from, to := windowOf(w.Incident)
	st, m := get(fmt.Sprintf("/api/v1/rootcause?from=%d&to=%d&service=nosuch", from, to))
	if st != 200 {
		t.Fatalf("status %d, want 200: %v", st, m)
	}
	causes, ok := m["causes"].([]any)
	if !ok || len(causes) != 0 {
		t.Errorf("causes = %#v, want an empty array", m["causes"])
	}
	if r, _ := m["reason"].(string); !strings.Contains(r, "no traces in the baseline window through endpoint nosuch") {
		t.Errorf("reason = %q", r)
	}
}

func TestRootCauseRouteBadInput(t *testing.T) {
	_, get, w := rootCauseServer(t, faultbed.CPUContention, Deps{})
	from, to := windowOf(w.Incident)
	for _, tc := range []struct {
		query   string
		status  int
		mention string
	}{
		{"", 400, "from: required"},
		{fmt.Sprintf("from=%d&to=%d", to, from), 400, "from must be before to"},
		{fmt.Sprintf("from=%d&to=%d&operation=x", from, to), 400, "operation needs service"},
		{fmt.Sprintf("from=%d&to=%d&baseline_to=%d", from, to, from), 400, "baseline_to needs baseline_from"},
		{fmt.Sprintf("from=%d&to=%d&limit=zero", from, to), 400, "limit"},
		{"from=yesterday", 400, "from: want RFC 3339"},
	} {
		st, m := get("/api/v1/rootcause?" + tc.query)
		wantError(t, tc.query, st, m, tc.status, tc.mention)
	}
}

// readCounter reads traces one by one, counting the reads; hidden ids
// are not found (expired between the search and the read).
type readCounter struct {
	store.Store
	hidden map[model.TraceID]bool
	reads  atomic.Int64
}

func (c *readCounter) Trace(ctx context.Context, id model.TraceID, hint store.TimeRange) ([]model.Span, error) {
	c.reads.Add(1)
	if c.hidden[id] {
		return nil, store.ErrNotFound
	}
	return c.Store.Trace(ctx, id, hint)
}

// batchStore is readCounter reading many traces at once.
type batchStore struct{ *readCounter }

func (b batchStore) Traces(ctx context.Context, refs []store.TraceRef) ([][]model.Span, error) {
	b.reads.Add(1)
	out := make([][]model.Span, len(refs))
	for i, r := range refs {
		if spans, err := b.Store.Trace(ctx, r.ID, r.Hint); err == nil && !b.hidden[r.ID] {
			out[i] = spans
		}
	}
	return out, nil
}

// The ranking reads its sampled traces together from a store that can (a
// cluster asks every peer once instead of once per trace) and ranks them
// as it does reading them one by one, traces gone since the search
// included; a sample capped below the traces found is the same too.
func TestRootCauseReadsSampledTracesTogether(t *testing.T) {
	w, err := faultbed.Generate(faultbed.Config{Seed: 9, Class: faultbed.NetworkDelay, TracesPerWindow: 100})
	if err != nil {
		t.Fatal(err)
	}
	var spans []model.Span
	hidden := map[model.TraceID]bool{}
	for i, tr := range append(append([][]model.Span{}, w.Baseline...), w.Incident...) {
		spans = append(spans, tr...)
		if i%7 == 3 {
			hidden[tr[0].TraceID] = true
		}
	}
	mem := apitest.NewStore(t, spans)
	from, to := windowOf(w.Incident)
	now := time.Unix(0, int64(spans[len(spans)-1].EndUnixNano)).Add(time.Minute)
	for _, limit := range []int{500, 40} {
		rank := func(st store.Store) rootcause.Report {
			t.Helper()
			a := &api{d: Deps{Store: st, Now: func() time.Time { return now }, MaxSearchLimit: 1000}}
			rq, err := a.parseRootCause(url.Values{"from": {fmt.Sprint(from)}, "to": {fmt.Sprint(to)}, "limit": {fmt.Sprint(limit)}})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := a.rank(context.Background(), rq)
			if err != nil {
				t.Fatal(err)
			}
			return rep
		}
		single := &readCounter{Store: mem, hidden: hidden}
		batched := batchStore{&readCounter{Store: mem, hidden: hidden}}
		want, got := rank(single), rank(batched)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("limit %d: ranked from traces read together:\n%+v\none by one:\n%+v", limit, got, want)
		}
		if len(want.Causes) == 0 || want.Causes[0].Service != w.Fault.Service {
			t.Errorf("limit %d: top cause %+v, want %s", limit, want.Causes, w.Fault.Service)
		}
		if n := single.reads.Load(); n <= 2*rootCauseSlices {
			t.Errorf("limit %d: %d reads one by one, want one per sampled trace", limit, n)
		}
		if n := batched.reads.Load(); n > 2*rootCauseSlices || limit == 500 && n != 2 {
			t.Errorf("limit %d: %d batched reads, want one per window (two) with room for every trace found, at most one per slice", limit, n)
		}
	}
}
