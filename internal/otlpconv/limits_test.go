package otlpconv

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

func oneSpan() (ptrace.Traces, ptrace.Span) {
	td := ptrace.NewTraces()
	sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1})
	sp.SetSpanID(pcommon.SpanID{1})
	return td, sp
}

func TestDeepValueIsCutToMaxDepth(t *testing.T) {
	td, sp := oneSpan()
	v := sp.Attributes().PutEmptySlice("deep").AppendEmpty()
	for i := 0; i < 100; i++ {
		v = v.SetEmptySlice().AppendEmpty()
	}
	v.SetStr("bottom")
	lim := DefaultLimits()
	lim.MaxDepth = 4
	spans, stats := FromTracesLimited(td, lim)
	got, _ := spans[0].Attrs.Get("deep")
	want := `[[[[` + `"` + DepthMarker + `"` + `]]]]`
	if got.Str != want {
		t.Fatalf("deep value = %s, want %s", got.Str, want)
	}
	if !json.Valid([]byte(got.Str)) || stats.TruncatedValues != 1 {
		t.Errorf("valid JSON %v, stats %+v", json.Valid([]byte(got.Str)), stats)
	}
}

func TestCompositeMatchesPdataJSON(t *testing.T) {
	_, sp := oneSpan()
	m := sp.Attributes().PutEmptyMap("m")
	m.PutStr("z", "<a&b>")
	m.PutInt("a", -3)
	m.PutDouble("f", 1.5e300)
	m.PutEmptyBytes("b").FromRaw([]byte{0, 1, 2})
	s := m.PutEmptySlice("s")
	s.AppendEmpty().SetBool(true)
	s.AppendEmpty().SetEmptyMap().PutStr("k", "v")
	v, _ := sp.Attributes().Get("m")
	if got, want := ValueFrom(v).Str, v.AsString(); got != want {
		t.Errorf("map text\n got %s\nwant %s", got, want)
	}
}

func TestLongValuesAreCut(t *testing.T) {
	td, sp := oneSpan()
	lim := DefaultLimits()
	lim.MaxValueBytes = 100
	sp.Attributes().PutStr("s", strings.Repeat("é", 200))
	sp.Attributes().PutEmptyBytes("b").FromRaw(bytes.Repeat([]byte{7}, 300))
	arr := sp.Attributes().PutEmptySlice("a")
	for i := 0; i < 1000; i++ {
		arr.AppendEmpty().SetStr("xxxxxxxx")
	}
	sp.SetName(strings.Repeat("n", 500))
	spans, stats := FromTracesLimited(td, lim)
	got := spans[0]
	for _, k := range []string{"s", "a"} {
		s := got.Attrs.Str(k)
		if len(s) > 100 || !strings.HasSuffix(s, ValueMarker) || !strings.ContainsRune(s, 'x') && k == "a" {
			t.Errorf("%s: %d bytes %q", k, len(s), s)
		}
	}
	if strings.Contains(got.Attrs.Str("s"), "\uFFFD") {
		t.Error("string cut inside a rune")
	}
	if b, _ := got.Attrs.Get("b"); len(b.Bytes) != 100 {
		t.Errorf("bytes kept %d", len(b.Bytes))
	}
	if len(got.Name) > 100 || stats.TruncatedValues != 4 {
		t.Errorf("name %d bytes, stats %+v", len(got.Name), stats)
	}
}

func TestCountsOverLimitsAreDropped(t *testing.T) {
	td, sp := oneSpan()
	sp.SetDroppedAttributesCount(5)
	for i := 0; i < 300; i++ {
		sp.Attributes().PutInt(strings.Repeat("k", i+1), int64(i))
		sp.Events().AppendEmpty().SetName("e")
		sp.Links().AppendEmpty().SetSpanID(pcommon.SpanID{2})
	}
	spans, stats := FromTracesLimited(td, DefaultLimits())
	got := spans[0]
	if len(got.Attrs) != 128 || got.DroppedAttributesCount != 5+172 || got.Attrs[127].Value.Int != 127 {
		t.Errorf("attrs %d dropped %d", len(got.Attrs), got.DroppedAttributesCount)
	}
	if len(got.Events) != 128 || got.DroppedEventsCount != 172 || len(got.Links) != 128 || got.DroppedLinksCount != 172 {
		t.Errorf("events %d/%d links %d/%d", len(got.Events), got.DroppedEventsCount, len(got.Links), got.DroppedLinksCount)
	}
	if stats != (Stats{DroppedAttrs: 172, DroppedEvents: 172, DroppedLinks: 172}) {
		t.Errorf("stats %+v", stats)
	}
}

func TestProtoNestingCheck(t *testing.T) {
	tid, sid := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8)
	at := func(depth int) []byte {
		return otlpconvtest.TraceRequest(tid, sid, "s", otlpconvtest.KeyValue("d", otlpconvtest.NestedArray(depth)))
	}
	// NestedArray(n) holds n+1 AnyValues, the innermost one empty.
	if err := CheckTracesProtoNesting(at(MaxNesting-1), MaxNesting); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	var ne *NestingError
	if err := CheckTracesProtoNesting(at(MaxNesting), MaxNesting); !errors.As(err, &ne) {
		t.Errorf("over the limit: %v", err)
	}
	big := at(1_000_000)
	if err := CheckTracesProtoNesting(big, MaxNesting); !errors.As(err, &ne) {
		t.Errorf("a million levels: %v", err)
	}
	if err := CheckLogsProtoNesting(otlpconvtest.LogsRequest(otlpconvtest.NestedArray(1000)), MaxNesting); !errors.As(err, &ne) {
		t.Errorf("log body: %v", err)
	}
	// What passes decodes with pdata and converts under the depth limit.
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(at(MaxNesting - 1)); err != nil {
		t.Fatal(err)
	}
	spans := FromTraces(req.Traces())
	if s := spans[0].Attrs.Str("d"); !strings.Contains(s, DepthMarker) || strings.Count(s, "[") > DefaultLimits().MaxDepth+1 {
		t.Errorf("converted: %.200s", s)
	}
	// Garbage is refused: past what the scan can read, it could not see
	// what pdata reads.
	var me *MalformedError
	if err := CheckTracesProtoNesting([]byte{0xff, 0xff, 0xff}, MaxNesting); !errors.As(err, &me) {
		t.Errorf("garbage: %v", err)
	}
}

func TestJSONNestingCheck(t *testing.T) {
	wrap := func(v []byte) []byte {
		return []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"events":[{"attributes":[{"key":"d","value":` + string(v) + `}]}]}]}]}]}`)
	}
	ok := wrap(otlpconvtest.NestedArrayJSON(MaxNesting))
	if err := CheckJSONNesting(ok); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalJSON(ok); err != nil {
		t.Fatal(err)
	}
	var ne *NestingError
	if err := CheckJSONNesting(wrap(otlpconvtest.NestedArrayJSON(1_000_000))); !errors.As(err, &ne) {
		t.Errorf("a million levels: %v", err)
	}
	// Brackets inside strings do not count.
	if err := CheckJSONNesting([]byte(`{"k":"` + strings.Repeat(`[{\"`, 10000) + `"}`)); err != nil {
		t.Errorf("brackets in a string: %v", err)
	}
}

func TestProtoNestingCheckSeesMapsAndEvents(t *testing.T) {
	for _, depth := range []int{MaxNesting - 1, MaxNesting + 1} {
		td, sp := oneSpan()
		m := sp.Events().AppendEmpty().Attributes().PutEmptyMap("m") // AnyValue 1
		for i := 0; i < depth-1; i++ {
			m = m.PutEmptyMap("k") // AnyValue i+2
		}
		m.PutStr("leaf", "x") // one more AnyValue: depth+1 in all
		body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		err = CheckTracesProtoNesting(body, MaxNesting)
		if tooDeep := depth+1 > MaxNesting; tooDeep != (err != nil) {
			t.Errorf("map nested %d deep in an event: %v", depth+1, err)
		}
	}
}

// valueDepth is the number of AnyValue levels of v.
func valueDepth(v pcommon.Value) int {
	d := 0
	switch v.Type() {
	case pcommon.ValueTypeSlice:
		for i := 0; i < v.Slice().Len(); i++ {
			d = max(d, valueDepth(v.Slice().At(i)))
		}
	case pcommon.ValueTypeMap:
		v.Map().Range(func(_ string, c pcommon.Value) bool { d = max(d, valueDepth(c)); return true })
	}
	return d + 1
}

// randomValue fills v with a random tree depth levels deep: one child
// continues the spine, its siblings are shallow (so the tree stays small).
func randomValue(rng *rand.Rand, v pcommon.Value, depth int) {
	if depth <= 1 {
		switch rng.IntN(3) {
		case 0:
			v.SetStr("s")
		case 1:
			v.SetInt(rng.Int64())
		default:
			v.SetEmptySlice() // an empty array is one level too
		}
		return
	}
	n := 1 + rng.IntN(3)
	if rng.IntN(2) == 0 {
		s := v.SetEmptySlice()
		spine := rng.IntN(n)
		for i := 0; i < n; i++ {
			randomValue(rng, s.AppendEmpty(), childDepth(rng, i == spine, depth))
		}
		return
	}
	m := v.SetEmptyMap()
	spine := rng.IntN(n)
	for i := 0; i < n; i++ {
		randomValue(rng, m.PutEmpty(string(rune('a'+i))), childDepth(rng, i == spine, depth))
	}
}

func childDepth(rng *rand.Rand, spine bool, depth int) int {
	if spine {
		return depth - 1
	}
	return 1 + rng.IntN(min(3, depth-1))
}

// The scan's verdict matches the depth pdata sees, wherever the value sits.
func TestProtoNestingCheckMatchesDecodedDepth(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 300; i++ {
		td, sp := oneSpan()
		rs := td.ResourceSpans().At(0)
		places := []pcommon.Map{sp.Attributes(), rs.Resource().Attributes(), rs.ScopeSpans().At(0).Scope().Attributes(),
			sp.Events().AppendEmpty().Attributes(), sp.Links().AppendEmpty().Attributes()}
		deepest := 0
		for j := 0; j < 3; j++ {
			v := places[rng.IntN(len(places))].PutEmpty(string(rune('k' + j)))
			randomValue(rng, v, 1+rng.IntN(MaxNesting+20))
			deepest = max(deepest, valueDepth(v))
		}
		body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		err = CheckTracesProtoNesting(body, MaxNesting)
		if (deepest > MaxNesting) != (err != nil) {
			t.Fatalf("case %d: deepest value %d levels, scan says %v", i, deepest, err)
		}
	}
}

func TestLogsNestingCheckMatchesDecodedDepth(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 200; i++ {
		ld := plog.NewLogs()
		rl := ld.ResourceLogs().AppendEmpty()
		sl := rl.ScopeLogs().AppendEmpty()
		lr := sl.LogRecords().AppendEmpty()
		places := []pcommon.Map{lr.Attributes(), rl.Resource().Attributes(), sl.Scope().Attributes()}
		v := lr.Body()
		if rng.IntN(2) == 0 {
			v = places[rng.IntN(len(places))].PutEmpty("k")
		}
		randomValue(rng, v, 1+rng.IntN(MaxNesting+20))
		body, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		err = CheckLogsProtoNesting(body, MaxNesting)
		if d := valueDepth(v); (d > MaxNesting) != (err != nil) {
			t.Fatalf("case %d: value %d levels, scan says %v", i, d, err)
		}
	}
}

// The scan must read a request the way pdata's decoder does: where it
// stops early, pdata would read on into a value nested without limit.
func TestProtoNestingCheckReadsWhatPdataReads(t *testing.T) {
	field := otlpconvtest.Field
	deep := field(nil, 9, otlpconvtest.KeyValue("d", otlpconvtest.NestedArray(MaxNesting+10)))
	inSpan := func(prefix []byte) []byte {
		span := append(field(field(nil, 1, bytes.Repeat([]byte{1}, 16)), 2, bytes.Repeat([]byte{2}, 8)), prefix...)
		return field(nil, 1, field(nil, 2, field(nil, 2, append(span, deep...))))
	}
	var ne *NestingError
	var me *MalformedError
	for name, c := range map[string]struct {
		data      []byte
		malformed bool
	}{
		// pdata skips only the first field after a group's start.
		"group before the value": {inSpan(field(protowire.AppendTag(nil, 20, protowire.StartGroupType), 21, []byte("x"))), true},
		// pdata keeps the low bit of a varint's tenth byte and ignores the rest.
		"overlong varint before the value": {inSpan(append(protowire.AppendTag(nil, 6, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), true},
		// A field number over 2^31 once indexed the scan's table below zero.
		"field number over int32": {inSpan(protowire.AppendVarint(nil, 1<<34|uint64(protowire.BytesType))), true},
		// pdata moves them to scope_spans.
		"deprecated scope spans": {field(nil, 1, field(nil, 1000, field(nil, 2, append(field(nil, 1, bytes.Repeat([]byte{1}, 16)), deep...)))), false},
	} {
		err := CheckTracesProtoNesting(c.data, MaxNesting)
		if c.malformed && !errors.As(err, &me) || !c.malformed && !errors.As(err, &ne) {
			t.Errorf("%s: %v", name, err)
		}
	}
	logs := field(nil, 1, field(nil, 1000, field(nil, 2, field(nil, 5, otlpconvtest.NestedArray(MaxNesting+10)))))
	if err := CheckLogsProtoNesting(logs, MaxNesting); !errors.As(err, &ne) {
		t.Errorf("deprecated scope logs: %v", err)
	}
}
