package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/traceio"
)

var traceDir = filepath.Join("..", "..", "testdata", "traces")

func runAnalyze(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Analyze(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func fixture(rel string) string { return filepath.Join(traceDir, rel) }

func TestAnalyzeJSONContract(t *testing.T) {
	code, out, stderr := runAnalyze(t, "", "--format", "json", fixture("error_origin/positive-ml-model-oom.json"),
		fixture("cache_miss/healthy-cache-hit.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc struct {
		Traces []map[string]json.RawMessage `json:"traces"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if len(doc.Traces) != 2 {
		t.Fatalf("%d traces", len(doc.Traces))
	}
	for _, key := range []string{"trace_id", "root_service", "root_operation", "duration_ms", "span_count", "findings", "critical_path", "why"} {
		if _, ok := doc.Traces[0][key]; !ok {
			t.Errorf("trace lacks %q", key)
		}
	}
	var findings []struct {
		Kind     string          `json:"kind"`
		Severity string          `json:"severity"`
		TraceID  string          `json:"trace_id"`
		SpanIDs  []string        `json:"span_ids"`
		Evidence json.RawMessage `json:"evidence"`
	}
	if err := json.Unmarshal(doc.Traces[0]["findings"], &findings); err != nil || len(findings) == 0 {
		t.Fatalf("findings: %v", err)
	}
	var traceID string
	json.Unmarshal(doc.Traces[0]["trace_id"], &traceID)
	if f := findings[0]; f.Kind != "error_origin" || f.Severity != "critical" || f.TraceID != traceID || len(f.SpanIDs) == 0 {
		t.Errorf("first finding %+v", f)
	}
	var steps []struct {
		SpanID, Service, Operation string
		SelfMS                     float64 `json:"self_ms"`
	}
	json.Unmarshal(doc.Traces[0]["critical_path"], &steps)
	if len(steps) < 3 || steps[0].Service != "api-gateway" {
		t.Errorf("critical path %+v", steps)
	}
	var why []string
	json.Unmarshal(doc.Traces[0]["why"], &why)
	if len(why) < 3 || !strings.Contains(strings.Join(why, " "), "torch.cuda.OutOfMemoryError") {
		t.Errorf("why %v", why)
	}
	if !strings.Contains(out, `"kind": "error_origin"`) || !strings.Contains(out, `"exception_type": "torch.cuda.OutOfMemoryError"`) {
		t.Errorf("findings lack error_origin evidence:\n%.2000s", out)
	}
	// A healthy trace still has a findings array, never null.
	if string(doc.Traces[1]["findings"]) == "null" {
		t.Errorf("findings of the healthy trace are null")
	}
}

func TestAnalyzeTextAndMarkdown(t *testing.T) {
	code, out, _ := runAnalyze(t, "", fixture("swallowed_error/positive-product-page-timeouts.json"))
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"critical path", "findings", "WARNING  swallowed_error", "why", "1. web-bff GET /products/{slug} took", "█"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runAnalyze(t, "", "--format", "markdown", fixture("swallowed_error/positive-product-page-timeouts.json"))
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"## Trace `", "### Why", "### Findings", "| severity | kind |", "`swallowed_error`", "### Critical path"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestAnalyzeStdin(t *testing.T) {
	b, err := os.ReadFile(fixture("consumer_lag/positive-kafka-45s.json"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runAnalyze(t, string(b), "--format", "json", "-")
	if code != 0 || !strings.Contains(out, `"kind": "consumer_lag"`) {
		t.Fatalf("exit %d stderr %s out %.500s", code, stderr, out)
	}
	// Jaeger and Zipkin through stdin too.
	b, _ = os.ReadFile(fixture("zipkin/v2/two-traces.json"))
	if code, out, _ := runAnalyze(t, string(b), "--format", "json", "-"); code != 0 || strings.Count(out, `"root_service"`) != 2 {
		t.Errorf("zipkin via stdin: exit %d", code)
	}
}

// A Zipkin span without timestamp or annotations has no time: analyze
// skips it and says so rather than drawing a trace from 1970.
func TestAnalyzeSkipsUntimedZipkinSpans(t *testing.T) {
	in := `[{"traceId":"0a","id":"01","kind":"SERVER","name":"get /","timestamp":1700000000000000,"duration":2000,"localEndpoint":{"serviceName":"web"}},
	 {"traceId":"0a","id":"02","parentId":"01","kind":"CLIENT","name":"get","duration":900,"localEndpoint":{"serviceName":"web"}}]`
	code, out, stderr := runAnalyze(t, in, "--format", "json", "-")
	if code != 0 || !strings.Contains(stderr, "stdin: skipped 1 span without a start time") || strings.Contains(out, "1970") ||
		!strings.Contains(out, `"span_count": 1`) {
		t.Fatalf("exit %d stderr %q out %.600s", code, stderr, out)
	}
	// Only untimed spans: nothing to analyse.
	if code, _, stderr := runAnalyze(t, `[{"traceId":"0a","id":"02","name":"get","duration":900}]`, "-"); code != 2 ||
		!strings.Contains(stderr, "holds no spans") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}

func TestAnalyzeGates(t *testing.T) {
	lag := fixture("consumer_lag/positive-kafka-45s.json")
	healthy := fixture("consumer_lag/healthy-fast-consumer.json")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--fail-on", "consumer_lag", lag}, 1},
		{[]string{"--fail-on", "n_plus_one_query, retry_storm", lag}, 0},
		{[]string{"--fail-on", "consumer_lag", healthy}, 0},
		{[]string{"--fail-on-severity", "critical", lag}, 1},
		{[]string{"--fail-on-severity", "warning", healthy, lag}, 1},
		{[]string{"--fail-on-severity", "critical", healthy}, 0},
	} {
		code, _, stderr := runAnalyze(t, "", append([]string{"--format", "json"}, tc.args...)...)
		if code != tc.want {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.want, stderr)
		}
		if code == 1 && !strings.Contains(stderr, "matched the gate") {
			t.Errorf("%v: gate failure not explained: %q", tc.args, stderr)
		}
	}
}

func TestAnalyzeConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "thresholds.yaml")
	os.WriteFile(cfg, []byte("consumer_lag:\n  min_lag_ms: 60000\n"), 0o644)
	lag := fixture("consumer_lag/positive-kafka-45s.json")
	if code, _, stderr := runAnalyze(t, "", "--config", cfg, "--fail-on", "consumer_lag", lag); code != 0 {
		t.Errorf("45 s lag under a 60 s threshold: exit %d %s", code, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("consumer_lagg: {}\n"), 0o644)
	if code, _, stderr := runAnalyze(t, "", "--config", bad, lag); code != 2 || !strings.Contains(stderr, "unknown kind") {
		t.Errorf("bad config: exit %d %q", code, stderr)
	}
}

func TestAnalyzeBadInputAndFlags(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.json")
	os.WriteFile(garbage, []byte("this is not a trace"), 0o644)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte("[]"), 0o644)
	ok := fixture("consumer_lag/healthy-fast-consumer.json")
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{}, "no input"},
		{"", []string{"--format", "yaml", ok}, "--format must be"},
		{"", []string{"--fail-on", "n_plus_1", ok}, `unknown kind "n_plus_1"`},
		{"", []string{"--fail-on-severity", "high", ok}, "--fail-on-severity must be"},
		{"", []string{"--bogus", ok}, "flag provided but not defined"},
		{"", []string{filepath.Join(dir, "missing.json")}, "no such file"},
		{"", []string{garbage}, "unrecognised trace format"},
		{"", []string{empty}, "holds no spans"},
		{"{\"resourceSpans\": [", []string{"-"}, "stdin"},
		{"", []string{"--config", filepath.Join(dir, "nope.yaml"), ok}, "--config"},
	} {
		code, out, stderr := runAnalyze(t, tc.stdin, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d stderr %q, want 2 and %q", tc.args, code, stderr, tc.want)
		}
		if out != "" {
			t.Errorf("%v: wrote output despite the error: %q", tc.args, out)
		}
	}
	if code, out, _ := runAnalyze(t, "", "--help"); code != 0 || !strings.Contains(out, "--fail-on-severity") {
		t.Errorf("--help: exit %d", code)
	}
}

func TestAnalyzeViaMain(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"analyze", "--format", "json", fixture("poison_message/positive-kafka-retries-to-dlt.json")}, nil, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "poison_message") {
		t.Errorf("tracedx analyze via Main: exit %d %s", code, errb.String())
	}
}

// TestAnalyzeMarkdownIsAPullRequestComment checks what a reviewer reads
// first: the gate's verdict, the gated finding at the top of the table and
// in the why list, and a critical path where parents come before children.
func TestAnalyzeMarkdownIsAPullRequestComment(t *testing.T) {
	file := fixture("swallowed_error/positive-product-page-timeouts.json")
	code, out, _ := runAnalyze(t, "", "--format", "markdown", "--fail-on", "timeout_mismatch", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.HasPrefix(out, "# tracedx analyze: 1 trace, 5 findings\n\n**Gate failed:** 1 finding matched `--fail-on timeout_mismatch`") {
		t.Errorf("the comment does not open with the gate:\n%.300s", out)
	}
	table := out[strings.Index(out, "### Findings"):]
	rows := strings.Split(table, "\n")
	if len(rows) < 5 || !strings.Contains(rows[4], "`timeout_mismatch`") || !strings.Contains(rows[4], "(gate)") {
		t.Errorf("gated finding is not the first row:\n%s", table)
	}
	// Below the gated row, findings go by impact.
	var impacts []string
	for _, r := range rows[5:] {
		if !strings.HasPrefix(r, "| ") {
			break
		}
		impacts = append(impacts, strings.TrimSpace(strings.Split(r, "|")[4]))
	}
	// (The error origin under the swallowed error is the same problem,
	// told by swallowed_error; it is there at info.)
	if len(impacts) != 4 || impacts[0] != "2.00 s" || impacts[3] != "0.0 ms" {
		t.Errorf("impacts %v", impacts)
	}
	why := out[strings.Index(out, "### Why"):strings.Index(out, "### Findings")]
	if !strings.Contains(why, "`timeout_mismatch`") {
		t.Errorf("why list does not explain the gated finding:\n%s", why)
	}
	if strings.Contains(out, " 1 layers") || strings.Contains(out, "1 finding(s)") {
		t.Errorf("singular nouns wrong:\n%s", out)
	}

	// Tree order: every row's parent (by span id) is above it.
	traces, _, err := traceio.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parent := parentsOf(traces[0].Spans)
	path := out[strings.Index(out, "### Critical path"):]
	seen := map[string]bool{}
	rowsSeen := 0
	for _, line := range strings.Split(path, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		id := strings.Trim(strings.Split(line, "|")[1], " `")
		if p, ok := parent[id]; ok && !seen[p] {
			t.Errorf("row %s comes before its parent %s", id, p)
		}
		seen[id] = true
		rowsSeen++
	}
	if rowsSeen < 5 {
		t.Errorf("only %d critical-path rows", rowsSeen)
	}

	if _, out, _ := runAnalyze(t, "", "--format", "markdown", fixture("retry_storm/healthy-single-quick-retry.json")); !strings.Contains(out, " 1 layer ") {
		t.Errorf("error origin one layer up: %s", out)
	}

	code, out, _ = runAnalyze(t, "", "--format", "markdown", "--fail-on-severity", "critical", fixture("n_plus_one_query/healthy-batched-in-query.json"))
	if code != 0 || !strings.Contains(out, "**Gate passed:** no finding matched `--fail-on-severity critical`.") {
		t.Errorf("passing gate: exit %d\n%.300s", code, out)
	}
}
