package analyze

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// cpSpan builds a span named name with times in ms; parent "" makes a root.
type cpSpan struct {
	name, parent string
	kind         model.SpanKind
	start, end   uint64
}

func cpTrace(spans []cpSpan) *Trace {
	ids := map[string]model.SpanID{}
	for i, s := range spans {
		ids[s.name] = model.SpanID{byte(i + 1), 0xcc}
	}
	out := make([]model.Span, len(spans))
	for i, s := range spans {
		out[i] = model.Span{TraceID: model.TraceID{9}, SpanID: ids[s.name], Name: s.name, Service: "svc", Kind: s.kind,
			StartUnixNano: 1e15 + s.start*1e6, EndUnixNano: 1e15 + s.end*1e6}
		if s.parent != "" {
			out[i].ParentSpanID = ids[s.parent]
		}
	}
	return NewTrace(out)
}

// golden renders the path as "name[start-end]" segments in time order and
// "name=self" totals, in ms.
func golden(t *Trace) string {
	cp := t.CriticalPath()
	base := t.Root().Start()
	var segs []string
	for _, s := range cp.Segments {
		segs = append(segs, fmt.Sprintf("%s[%d-%d]", s.Node.Span.Name, (s.Start-base)/1e6, (s.End-base)/1e6))
	}
	var selfs []string
	for _, st := range cp.Steps(t) {
		selfs = append(selfs, fmt.Sprintf("%s=%g", st.Operation, st.SelfMS))
	}
	return strings.Join(segs, " ") + " | " + strings.Join(selfs, " ")
}

func TestCriticalPathGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spans []cpSpan
		want  string
	}{
		{
			name: "sequential children",
			spans: []cpSpan{
				{"root", "", model.KindServer, 0, 100},
				{"a", "root", model.KindClient, 10, 40},
				{"b", "root", model.KindClient, 50, 90},
			},
			want: "root[0-10] a[10-40] root[40-50] b[50-90] root[90-100] | root=30 a=30 b=40",
		},
		{
			// Overlapping children: the last to finish decides, then the
			// one that finished before it started; the overlap is not
			// counted twice and a child fully hidden by another is off
			// the path.
			name: "overlapping children",
			spans: []cpSpan{
				{"root", "", model.KindServer, 0, 100},
				{"a", "root", model.KindClient, 5, 60},
				{"hidden", "root", model.KindClient, 20, 50},
				{"b", "root", model.KindClient, 40, 95},
			},
			want: "root[0-5] a[5-40] b[40-95] root[95-100] | root=10 a=35 b=55",
		},
		{
			// A child still running when its parent ended is cut at the
			// parent's end.
			name: "child outlives parent",
			spans: []cpSpan{
				{"root", "", model.KindServer, 0, 100},
				{"call", "root", model.KindClient, 10, 80},
				{"late", "call", model.KindServer, 20, 140},
			},
			want: "root[0-10] call[10-20] late[20-80] root[80-100] | root=30 call=10 late=60",
		},
		{
			// The consumer runs asynchronously: the producer's time is on
			// the path, the consumer's is not.
			name: "producer to consumer not followed",
			spans: []cpSpan{
				{"root", "", model.KindServer, 0, 50},
				{"publish", "root", model.KindProducer, 10, 20},
				{"consume", "publish", model.KindConsumer, 15, 400},
			},
			want: "root[0-10] publish[10-20] root[20-50] | root=40 publish=10",
		},
		{
			name: "deep chain",
			spans: []cpSpan{
				{"l0", "", model.KindServer, 0, 100},
				{"l1", "l0", model.KindClient, 1, 99},
				{"l2", "l1", model.KindServer, 2, 98},
				{"l3", "l2", model.KindInternal, 3, 97},
				{"l4", "l3", model.KindClient, 4, 96},
			},
			want: "l0[0-1] l1[1-2] l2[2-3] l3[3-4] l4[4-96] l3[96-97] l2[97-98] l1[98-99] l0[99-100] | l0=2 l1=2 l2=2 l3=2 l4=92",
		},
		{
			// A child that starts before its parent (clock skew) is cut
			// at the parent's start.
			name: "child starts before parent",
			spans: []cpSpan{
				{"root", "", model.KindServer, 10, 100},
				{"early", "root", model.KindClient, 0, 30},
			},
			want: "early[0-20] root[20-90] | early=20 root=70",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := cpTrace(tc.spans)
			if got := golden(tr); got != tc.want {
				t.Errorf("critical path\n got  %s\n want %s", got, tc.want)
			}
			if total, root := tr.CriticalPath().Total(), tr.Root().Duration(); total != root {
				t.Errorf("path length %d != root duration %d", total, root)
			}
		})
	}
}

func TestCriticalPathTimeUnderDoesNotDoubleCount(t *testing.T) {
	tr := cpTrace([]cpSpan{
		{"root", "", model.KindServer, 0, 100},
		{"a", "root", model.KindClient, 5, 60},
		{"a1", "a", model.KindServer, 6, 59},
		{"b", "root", model.KindClient, 40, 95},
	})
	a, a1, b := tr.ByID[model.SpanID{2, 0xcc}], tr.ByID[model.SpanID{3, 0xcc}], tr.ByID[model.SpanID{4, 0xcc}]
	cp := tr.CriticalPath()
	// a and b overlap for 20 ms, but the path runs through a for 35 ms and
	// b for 55 ms: 90 ms, not the naive 55+55.
	if got := cp.TimeUnder(a, b); got != 90e6 {
		t.Errorf("TimeUnder(a, b) = %d", got)
	}
	if got := cp.TimeUnder(a, a1); got != 35e6 {
		t.Errorf("TimeUnder(a, a1) = %d, want a's 35 ms once", got)
	}
	if got := critUnder(tr, a, a1, b); got != 90e6 {
		t.Errorf("critUnder = %d", got)
	}
}
