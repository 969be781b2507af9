package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

func writeOTLP(t *testing.T, dir, name string, spans []model.Span, proto bool) string {
	t.Helper()
	td := otlpconv.ToTraces(spans)
	var b []byte
	var err error
	if proto {
		b, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	} else {
		b, err = (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompareCLI(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ga, gb := workload.New(1), workload.New(2)
	ga.ItemQueries, gb.ItemQueries = 2, 51
	a := writeOTLP(t, dir, "a.json", ga.Checkout(t0), false)
	b := writeOTLP(t, dir, "b.pb", gb.Checkout(t0), true)

	var out, errb bytes.Buffer
	if code := Compare([]string{a, b}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "2 → 51") || !strings.Contains(out.String(), "SELECT id, name, price FROM items WHERE id = ?") {
		t.Errorf("text output lacks the count change:\n%s", out.String())
	}

	out.Reset()
	stdin, _ := os.ReadFile(a)
	if code := Compare([]string{"--format", "json", "-", b}, bytes.NewReader(stdin), &out, &errb); code != 0 {
		t.Fatalf("json exit %d: %s", code, errb.String())
	}
	var r compare.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Mode != "traces" || len(r.CountChanges) == 0 || r.CountChanges[0].CountB != 51 {
		t.Errorf("json output: %v %s", err, out.String())
	}

	// Files with several traces are compared as groups.
	var many []model.Span
	for i := 0; i < 5; i++ {
		many = append(many, gb.Checkout(t0.Add(time.Duration(i)*time.Second))...)
	}
	g := writeOTLP(t, dir, "group.json", many, false)
	out.Reset()
	if code := Compare([]string{"--format=json", "--service", "checkout", a, g}, nil, &out, &errb); code != 0 {
		t.Fatalf("group exit %d: %s", code, errb.String())
	}
	var gr compare.GroupResult
	if err := json.Unmarshal(out.Bytes(), &gr); err != nil || gr.Mode != "groups" || gr.B.Traces != 5 {
		t.Errorf("group output: %v %s", err, out.String())
	}

	junk := filepath.Join(dir, "junk.json")
	os.WriteFile(junk, []byte(`{"resourceSpans": 12}`), 0o644)
	for _, args := range [][]string{{a}, {a, filepath.Join(dir, "missing.json")}, {a, junk}, {"--format", "xml", a, b}, {"-", "-"}} {
		errb.Reset()
		if code := Compare(args, bytes.NewReader(nil), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}

func runCompare(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Compare(args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// The same trace exported as Jaeger JSON and as OTLP JSON must match span
// for span: any conversion difference would show up as a one-sided call.
func TestCompareJaegerAgainstOTLPOfTheSameTrace(t *testing.T) {
	out, errs, code := runCompare(t, nil, "--format", "json",
		fixture("jaeger/v1/bare-trace-ml-oom.json"), fixture("error_origin/positive-ml-model-oom.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r compare.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Mode != "traces" || r.A.TraceID != "ffc7efd94daf5f6e25585fb9e95f177a" || r.A.TraceID != r.B.TraceID {
		t.Fatalf("mode %q, ids %s %s", r.Mode, r.A.TraceID, r.B.TraceID)
	}
	if r.Matched != 15 || r.A.SpanCount != 15 || r.B.SpanCount != 15 || r.A.ErrorCount != r.B.ErrorCount {
		t.Errorf("matched %d of %d/%d spans, errors %d/%d", r.Matched, r.A.SpanCount, r.B.SpanCount, r.A.ErrorCount, r.B.ErrorCount)
	}
	if len(r.OnlyInOne) != 0 || len(r.CountChanges) != 0 || len(r.Errors) != 0 {
		t.Errorf("identical traces differ: only %v, counts %v, errors %v", r.OnlyInOne, r.CountChanges, r.Errors)
	}
	// Jaeger JSON keeps microseconds, OTLP nanoseconds: allow one µs.
	for _, d := range r.Durations {
		if d.DiffMS < -0.001 || d.DiffMS > 0.001 {
			t.Errorf("duration differs at %s: %+v", d.Path, d)
		}
	}
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s output lacks %q:\n%s", what, want, out)
		}
	}
}

func TestCompareTextAndMarkdownNPlusOne(t *testing.T) {
	a, b := fixture("n_plus_one_query/healthy-batched-in-query.json"), fixture("n_plus_one_query/positive-orders-then-50-customers.json")
	text, errs, code := runCompare(t, nil, a, b)
	if code != 0 {
		t.Fatalf("text exit %d: %s", code, errs)
	}
	mustContain(t, "text", text,
		"Trace comparison\n",
		"B: trace ea2ed1910b7a12416e22e72be7e9d4ae, order-service GET /api/orders, 302.6 ms, 56 spans",
		"\nCalls on one side only:\n",
		"only B  x50",
		"WHERE c.id = ?",
		"+250.7 ms")
	if strings.Contains(text, "|") {
		t.Errorf("text output has table pipes:\n%s", text)
	}

	md, errs, code := runCompare(t, nil, "--format", "markdown", a, b)
	if code != 0 {
		t.Fatalf("markdown exit %d: %s", code, errs)
	}
	mustContain(t, "markdown", md,
		"## Trace comparison\n",
		"\n### Calls on one side only\n\n| side | count | time | failed | call |\n|---|---|---|---|---|\n",
		"| only B | x50 | 243.2 ms | 0 | `order-service: GET /api/orders > order-service: OrderController.listOrders > order-service: SELECT c.id, c.name, c.email, c.tier FROM customers c WHERE c.id = ?` |",
		"| +250.7 ms | 51.9 → 302.6 ms |")
	// Every table row has as many cells as its header.
	cols := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row with %d pipes under a header with %d: %s", n, cols, line)
		}
	}
}

// Files with several traces, and several files per side, are groups.
func TestCompareGroupsFromJaegerAndZipkin(t *testing.T) {
	zipkinData, err := os.ReadFile(fixture("zipkin/v2/two-traces.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCompare(t, zipkinData, "--format=json", fixture("jaeger/v1/ui-download-two-traces.json"), "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var g compare.GroupResult
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatal(err)
	}
	if g.Mode != "groups" || g.A.Traces != 2 || g.B.Traces != 2 {
		t.Fatalf("mode %q, traces %d vs %d", g.Mode, g.A.Traces, g.B.Traces)
	}
	if g.A.MeanSpanCount != 12 || g.B.MeanSpanCount != 10 {
		t.Errorf("mean span counts %v / %v, want 12 (15+9) / 10 (12+8)", g.A.MeanSpanCount, g.B.MeanSpanCount)
	}

	md, errs, code := runCompare(t, nil, "--format", "md",
		"--a", fixture("n_plus_one_query/healthy-batched-in-query.json"), fixture("jaeger/v1/bare-trace-ml-oom.json"),
		"--b", fixture("n_plus_one_query/positive-orders-then-50-customers.json"))
	if code != 0 {
		t.Fatalf("--a/--b exit %d: %s", code, errs)
	}
	if !strings.Contains(md, "## Group comparison\n") || !strings.Contains(md, "- A: 2 traces") || !strings.Contains(md, "- B: 1 traces") {
		t.Errorf("group markdown:\n%s", md)
	}
	text, errs, code := runCompare(t, nil, "--service", "order-service", "--operation", "GET /api/orders",
		"--a", fixture("n_plus_one_query/healthy-batched-in-query.json"), "--a", fixture("jaeger/v1/bare-trace-ml-oom.json"),
		"--b", fixture("n_plus_one_query/positive-orders-then-50-customers.json"))
	if code != 0 {
		t.Fatalf("--service exit %d: %s", code, errs)
	}
	// The Jaeger trace has no order-service span, so side A keeps one trace.
	if !strings.Contains(text, "A: 1 traces") || !strings.Contains(text, "only B  x50") {
		t.Errorf("endpoint groups:\n%s", text)
	}
}

// A trace split over two files of one side is compared whole.
func TestCompareJoinsATraceAcrossFiles(t *testing.T) {
	data, err := os.ReadFile(fixture("n_plus_one_query/positive-orders-then-50-customers.json"))
	if err != nil {
		t.Fatal(err)
	}
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(data)
	if err != nil {
		t.Fatal(err)
	}
	spans := otlpconv.FromTraces(td)
	dir := t.TempDir()
	first := writeOTLP(t, dir, "first.json", spans[:20], false)
	rest := writeOTLP(t, dir, "rest.pb", spans[20:], true)
	out, errs, code := runCompare(t, nil, "--format", "json", "--a", first, rest, "--b", fixture("n_plus_one_query/positive-orders-then-50-customers.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r compare.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Mode != "traces" || r.A.SpanCount != len(spans) || r.Matched != len(spans) || len(r.OnlyInOne) != 0 {
		t.Errorf("mode %q: %d spans on A, %d matched, want %d; only %v", r.Mode, r.A.SpanCount, r.Matched, len(spans), r.OnlyInOne)
	}
}

// A Zipkin span without timestamp or annotations has no time: compare
// skips it as analyze does, instead of stretching its side to 1970.
func TestCompareSkipsUntimedZipkinSpans(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.json")
	b := filepath.Join(dir, "b.json")
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(a, []byte(`[{"traceId":"0a","id":"01","kind":"SERVER","name":"get /","timestamp":1700000000000000,"duration":2000,"localEndpoint":{"serviceName":"web"}},
	 {"traceId":"0a","id":"02","parentId":"01","kind":"CLIENT","name":"get","duration":900,"localEndpoint":{"serviceName":"web"}}]`), 0o644))
	must(os.WriteFile(b, []byte(`[{"traceId":"0b","id":"01","kind":"SERVER","name":"get /","timestamp":1700000000000000,"duration":3000,"localEndpoint":{"serviceName":"web"}}]`), 0o644))
	out, errs, code := runCompare(t, nil, "--format", "json", a, b)
	if code != 0 || !strings.Contains(errs, "a.json: skipped 1 span without a start time") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var r compare.Result
	must(json.Unmarshal([]byte(out), &r))
	if r.A.SpanCount != 1 || r.A.DurationMS != 2 || r.Matched != 1 || len(r.OnlyInOne) != 0 {
		t.Errorf("side A %d spans over %v ms, %d matched, only in one %v; want the timed span alone", r.A.SpanCount, r.A.DurationMS, r.Matched, r.OnlyInOne)
	}
}

func TestCompareBadInput(t *testing.T) {
	dir := t.TempDir()
	one := fixture("n_plus_one_query/healthy-batched-in-query.json")
	two := fixture("zipkin/v2/two-traces.json")
	garbage := filepath.Join(dir, "garbage.txt")
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(garbage, []byte("not a trace"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("[]"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{one, garbage}, "", "cannot read traces from " + garbage + ": unrecognised trace format"},
		{[]string{one, "-"}, "{", "cannot read traces from stdin: "},
		{[]string{one, empty}, "", empty + " holds no spans"},
		{[]string{one, filepath.Join(dir, "missing.json")}, "", "cannot read traces from "},
		{[]string{one}, "", "want two files A B"},
		{[]string{"--a", one}, "", "both --a and --b need at least one file"},
		{[]string{"--a", one, "--b", one, two}, "", ""}, // valid: checked below as not an error
		{[]string{"--a", one, "--b", one, "--", two}, "", "either as A B or with --a/--b"},
		{[]string{"-", "-"}, "", "'-' (stdin) can be given only once"},
		{[]string{"--format", "xml", one, two}, "", "--format must be text, json or markdown"},
		{[]string{"--mode", "traces", one, two}, "", "--mode traces needs one trace per side; side A holds 1, side B 2"},
		{[]string{"--mode", "sideways", one, two}, "", "--mode must be"},
		{[]string{"--operation", "x", one, two}, "", "--operation needs --service"},
		{[]string{"--limit", "0", one, two}, "", "--limit must be positive"},
		{[]string{"--service", "nobody", one, two}, "", `no trace of side A has a span of service "nobody"`},
	} {
		_, errs, code := runCompare(t, []byte(tc.stdin), tc.args...)
		if tc.want == "" {
			if code != 0 {
				t.Errorf("%v: exit %d: %s", tc.args, code, errs)
			}
			continue
		}
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(errs, tc.want) || !strings.HasPrefix(errs, "tracedx compare: ") {
			t.Errorf("%v: stderr %q, want it to contain %q", tc.args, errs, tc.want)
		}
	}
	out, _, code := runCompare(t, nil, "--help")
	if code != 0 || !strings.Contains(out, "--a FILE... --b FILE...") || !strings.Contains(out, "--mode auto") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

func TestExpandSideLists(t *testing.T) {
	got := expandSideLists([]string{"--format", "json", "--a", "x", "y", "-", "-b", "z", "--limit", "3", "--b=w", "v", "--", "--a", "q"})
	want := []string{"--format", "json", "--a", "x", "--a", "y", "--a", "-", "-b", "z", "--limit", "3", "--b=w", "v", "--", "--a", "q"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
