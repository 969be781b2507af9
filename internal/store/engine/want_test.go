package engine

import (
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Traces WantSpans declines complete with their summary only, also when
// memory pressure cut them early; the wanted ones complete with every
// span, including a trace that became wanted only after an early cut had
// dropped its first spans from memory (it is read back).
func TestUnwantedTracesCompleteWithSummaryOnly(t *testing.T) {
	const flagged = 1
	var mu sync.Mutex
	got := map[model.TraceID]CompletedTrace{}
	calls := map[model.TraceID]int{}
	o := testOpts(t.TempDir())
	// Both halves of every trace must arrive within one idle timeout, or a
	// trace completes twice by design; under -race on a loaded 2-core
	// machine writing the 300 first halves alone took over 3 s.
	o.IdleTimeout = 8 * time.Second
	o.FlushInterval = 20 * time.Millisecond
	o.HeadMaxBytes = 512 << 10
	o.SpanFlags = func(s *model.Span) uint32 {
		if s.Name == "flagged" {
			return flagged
		}
		return 0
	}
	sampled := func(id model.TraceID) bool { return id[0]%4 == 0 }
	o.WantSpans = func(id model.TraceID, flags uint32) bool { return flags&flagged != 0 || sampled(id) }
	o.OnTraceComplete = func(c CompletedTrace) {
		mu.Lock()
		got[c.ID] = c
		calls[c.ID]++
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	// Room for every wanted trace cut early (see the cold tier test), so
	// that read-backs count only the traces that became wanted late.
	e.pendingMu.Lock()
	e.cold.budget = 64 << 20
	e.pendingMu.Unlock()
	write := func(spans []model.Span) { writeRetrying(t, e, spans) }

	// Each trace arrives in two halves, the root last, as SDKs send them;
	// every third trace has a flagged span in its second half only.
	g := newGen(47)
	var traces [][]model.Span
	for i := 0; i < 300; i++ {
		tr := g.trace(1_700_000_000e9 + uint64(i)*1e6)
		if i%3 == 0 {
			tr[len(tr)-1].Name = "flagged"
		}
		traces = append(traces, tr)
	}
	for i, tr := range traces {
		write(tr[1 : len(tr)/2+1])
		if i%100 == 99 {
			time.Sleep(300 * time.Millisecond) // the flusher cuts them early
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, tr := range traces {
		write(append(append([]model.Span(nil), tr[len(tr)/2+1:]...), tr[0]))
	}
	waitForWithin(t, 3*o.IdleTimeout, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(traces) })

	mu.Lock()
	defer mu.Unlock()
	lateWanted := 0
	for i, tr := range traces {
		id := tr[0].TraceID
		c := got[id]
		if calls[id] != 1 {
			t.Fatalf("trace %d completed %d times", i, calls[id])
		}
		wantFlags := uint32(0)
		if i%3 == 0 {
			wantFlags = flagged
		}
		if c.Flags != wantFlags {
			t.Fatalf("trace %d: flags %b, want %b", i, c.Flags, wantFlags)
		}
		if c.Summary.SpanCount != len(tr) || c.Summary.RootName != tr[0].Name || c.Summary.RootService != tr[0].Service || c.RootSpanID != tr[0].SpanID {
			t.Fatalf("trace %d: summary %+v root span %s, want %d spans under %s %s (%s)", i, c.Summary, c.RootSpanID,
				len(tr), tr[0].Service, tr[0].Name, tr[0].SpanID)
		}
		wantSvcs := map[string]bool{}
		for _, s := range tr {
			wantSvcs[s.Service] = true
		}
		if len(c.Summary.Services) != len(wantSvcs) || len(c.Versions) != len(c.Summary.Services) {
			t.Fatalf("trace %d: services %+v versions %q, want %d services", i, c.Summary.Services, c.Versions, len(wantSvcs))
		}
		for k, st := range c.Summary.Services {
			if !wantSvcs[st.Name] || c.Versions[k] != "1.4.2" {
				t.Fatalf("trace %d: service %q version %q", i, st.Name, c.Versions[k])
			}
		}
		if !o.WantSpans(id, wantFlags) {
			if c.Spans != nil {
				t.Fatalf("trace %d was not wanted but completed with %d spans", i, len(c.Spans))
			}
			continue
		}
		if !sampled(id) {
			lateWanted++
		}
		sameSpans(t, normSpans(tr), normSpans(c.Spans))
	}
	if lateWanted == 0 {
		t.Fatal("no trace became wanted by its second half")
	}
	// Only traces that became wanted after their first spans were dropped
	// are read back.
	if rb := e.readBacks.Load(); rb == 0 || rb > uint64(lateWanted) {
		t.Fatalf("%d read-backs, want 1..%d", rb, lateWanted)
	}
}

// The meta of a trace merged from several cuts equals the meta of all its
// spans at once.
func TestTraceMetaMerge(t *testing.T) {
	g := newGen(5)
	tr := g.trace(1_700_000_000e9)
	tr[3].Service = "late-service"
	tr[3].Resource = resourceFor("late-service", 0)
	tr[3].Resource[1].Value = model.Str("9.9.9")
	var whole, a, b traceMeta
	for i := range tr {
		whole.add(&tr[i], nil, true)
	}
	for i := range tr {
		if i%2 == 1 { // the root (span 0) lands in b
			a.add(&tr[i], nil, true)
		} else {
			b.add(&tr[i], nil, true)
		}
	}
	a.merge(&b)
	norm := func(m traceMeta) traceMeta {
		type sv struct {
			s model.ServiceStats
			v string
		}
		var l []sv
		for i := range m.sum.Services {
			l = append(l, sv{m.sum.Services[i], m.versions[i]})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].s.Name < l[j].s.Name })
		m.sum.Services, m.versions = nil, nil
		for _, x := range l {
			m.sum.Services = append(m.sum.Services, x.s)
			m.versions = append(m.versions, x.v)
		}
		return m
	}
	if w, g := norm(whole), norm(a); !reflect.DeepEqual(w, g) {
		t.Fatalf("merged meta\n got %+v\nwant %+v", g, w)
	}
	// Pending traces keep it packed; merging in packed form is the same.
	if got := unpackMeta(tr[0].TraceID, whole.pack(nil)); !reflect.DeepEqual(norm(got), norm(whole)) {
		t.Fatalf("packed meta\n got %+v\nwant %+v", got, whole)
	}
	var p pendingTrace
	var a2, b2 traceMeta
	for i := range tr {
		if i%2 == 1 {
			a2.add(&tr[i], nil, true)
		} else {
			b2.add(&tr[i], nil, true)
		}
	}
	p.addMeta(tr[0].TraceID, &a2)
	p.addMeta(tr[0].TraceID, &b2)
	if got := p.meta(tr[0].TraceID); !reflect.DeepEqual(norm(got), norm(whole)) {
		t.Fatalf("pending meta\n got %+v\nwant %+v", got, whole)
	}
	if whole.rootSpan != tr[0].SpanID {
		t.Fatalf("root span %s, want %s", whole.rootSpan, tr[0].SpanID)
	}
}
