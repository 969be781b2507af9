package cli

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// A recorded incident spread over several files, in no particular order,
// gives the cross-trace findings of a replay in trace time, in every format.
func TestAnalyzeRunsSystemicInTraceTime(t *testing.T) {
	shop := workload.New(4)
	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	inject := t0.Add(12 * time.Minute)
	var traces [][]model.Span
	// One checkout a second is well above every window's minimum of samples
	// (20), and a quarter of the work of a busier shop under -race.
	for at := t0; at.Before(inject.Add(5 * time.Minute)); at = at.Add(time.Second) {
		if !at.Before(inject) {
			shop.ErrorRate, shop.NoRecommendations = 0.4, true
		}
		traces = append(traces, shop.Checkout(at))
	}
	dir := t.TempDir()
	// Newest first across three files: analyze must sort by start itself.
	var files [3][]model.Span
	for i := len(traces) - 1; i >= 0; i-- {
		files[i%3] = append(files[i%3], traces[i]...)
	}
	var paths []string
	for i, f := range files {
		paths = append(paths, writeOTLP(t, dir, "part"+string(rune('a'+i))+".json", f, i == 2))
	}

	var out, errb bytes.Buffer
	code := Analyze(append([]string{"--format", "json"}, paths...), nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var doc struct {
		Traces   []json.RawMessage  `json:"traces"`
		Systemic []systemic.Finding `json:"systemic"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Traces) != len(traces) {
		t.Errorf("%d traces analysed, want %d", len(doc.Traces), len(traces))
	}
	want := map[string]bool{}
	for _, f := range systemic.ReplayTraces(systemic.Config{}, traces, nil) {
		want[f.Kind+"/"+f.Service+"/"+f.Operation] = true
	}
	got := map[string]bool{}
	for _, f := range doc.Systemic {
		got[f.Kind+"/"+f.Service+"/"+f.Operation] = true
		if f.Culprit == nil || f.Time.Before(inject) {
			t.Errorf("%s: culprit %v, detected %s (injected %s)", f.Key, f.Culprit, f.Time, inject)
		}
	}
	if !got["error_rate_spike/payments/POST /charge"] || !got["missing_service/recommendations/POST /checkout"] {
		t.Errorf("systemic findings %v lack the error spike or the missing service", got)
	}
	if len(got) != len(want) {
		t.Errorf("analyze found %v, a replay in start order %v", got, want)
	}

	out.Reset()
	if code := Analyze(paths, nil, &out, &errb); code != 0 {
		t.Fatalf("text: exit %d", code)
	}
	mustContain(t, "text", out.String(), "across traces (detected in trace time)", "error_rate_spike", "culprit: payments POST /charge")
	out.Reset()
	if code := Analyze(append([]string{"--format", "markdown"}, paths...), nil, &out, &errb); code != 0 {
		t.Fatalf("markdown: exit %d", code)
	}
	mustContain(t, "markdown", out.String(), "## Across traces", "`missing_service`")
}
