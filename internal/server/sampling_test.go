package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// metricValues reads the samples of one metric family from /metrics,
// keyed by their label text.
func metricValues(t *testing.T, s *Server, name string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		out[strings.TrimPrefix(line[:i], name)] = v
	}
	return out
}

// With sampling on, a healthy load keeps about the configured share, an
// erroneous trace is kept, the dropped traces leave storage at
// compaction (retention.traces 0s), every decision is visible (search
// results, /metrics), and the RED metrics still count every trace.
func TestTailSamplingKeepsWhatMatters(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Sampling.Enabled = true
		c.Retention.Traces = 0
		c.Storage.TraceIdleTimeout = 200 * time.Millisecond
	})
	now := time.Now()
	const n = 300
	spans := checkoutCalls(n, 10*time.Second, now)
	failed := spans[len(spans)-4:] // the last trace
	for i := range failed {
		failed[i].TraceID[0] = 0x66
	}
	failedID := failed[0].TraceID
	failed[2].StatusCode, failed[2].StatusMessage = model.StatusError, "boom"
	postOTLP(t, s.Addr("otlp-http"), spans)

	decided := func() float64 {
		sum := 0.0
		for _, v := range metricValues(t, s, "tracedx_sampling_decisions_total") {
			sum += v
		}
		return sum
	}
	deadline := time.Now().Add(20 * time.Second)
	for decided() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %v of %d traces decided", decided(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reasons := metricValues(t, s, "tracedx_sampling_decisions_total")
	if reasons[`{reason="error"}`] != 1 {
		t.Errorf("decisions: %v, want one kept for its error", reasons)
	}

	var search struct {
		Traces []struct {
			TraceID string `json:"trace_id"`
			Sampled string `json:"sampled"`
		} `json:"traces"`
	}
	getJSON(t, s, "/api/v1/search?service=frontend&limit=1000&start="+strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10), &search)
	kept := map[string]string{}
	for _, tr := range search.Traces {
		if tr.Sampled == "" {
			t.Fatalf("search result without a sampling decision: %+v", tr)
		}
		if tr.Sampled != "dropped" {
			kept[tr.TraceID] = tr.Sampled
		}
	}
	if len(search.Traces) != n || kept[failedID.String()] != "error" {
		t.Fatalf("%d results, kept %v", len(search.Traces), kept)
	}
	// 1 % of ids plus the endpoint's floor (one per minute).
	if len(kept) < 2 || len(kept) > 12 {
		t.Errorf("kept %d of %d traces: %v", len(kept), n, kept)
	}

	if err := s.Store().(*engine.Engine).Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	getJSON(t, s, "/api/v1/search?service=frontend&limit=1000&start="+strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10), &search)
	if len(search.Traces) != len(kept) {
		t.Errorf("after compaction %d traces are stored, want the %d kept", len(search.Traces), len(kept))
	}
	for _, tr := range search.Traces {
		if _, ok := kept[tr.TraceID]; !ok {
			t.Errorf("dropped trace %s still stored", tr.TraceID)
		}
	}

	// RED metrics count every trace, kept or not.
	var services struct {
		Services []struct {
			Service string `json:"service"`
			Count   uint64 `json:"count"`
		} `json:"services"`
	}
	getJSON(t, s, "/api/v1/metrics/services?start="+strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10)+"&end="+strconv.FormatInt(time.Now().UnixMilli(), 10), &services)
	counted := map[string]uint64{}
	for _, sv := range services.Services {
		counted[sv.Service] = sv.Count
	}
	if counted["frontend"] != n || counted["api"] != n {
		t.Errorf("RED counts %v, want every trace's requests (%d per service)", counted, n)
	}
	t.Logf("kept %d of %d: %v", len(kept), n, kept)
}

// A finding outlives its trace: once the trace is gone from storage the
// findings list still shows it, marked trace_available: false with a note.
func TestFindingOutlivesItsTrace(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.Storage.TraceIdleTimeout = 100 * time.Millisecond })
	spans := slowOrder(0, time.Now().Add(-time.Minute))
	id := spans[0].TraceID
	postOTLP(t, s.Addr("otlp-http"), spans)
	type listed struct {
		Findings []struct {
			Kind           string         `json:"kind"`
			TraceID        string         `json:"trace_id"`
			TraceAvailable *bool          `json:"trace_available"`
			TraceNote      string         `json:"trace_note"`
			Evidence       map[string]any `json:"evidence"`
		} `json:"findings"`
	}
	var l listed
	for deadline := time.Now().Add(20 * time.Second); len(l.Findings) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no finding stored")
		}
		getJSON(t, s, "/api/v1/findings?service=orders", &l)
	}
	f := l.Findings[0]
	if f.TraceID != id.String() || f.TraceAvailable == nil || !*f.TraceAvailable || f.TraceNote != "" {
		t.Fatalf("while the trace is stored: %+v", f)
	}
	eng := s.Store().(*engine.Engine)
	if err := eng.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	eng.Drop(id) // as retention or sampling would remove it
	if err := eng.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	getJSON(t, s, "/api/v1/findings?service=orders", &l)
	f = l.Findings[0]
	if f.TraceAvailable == nil || *f.TraceAvailable || !strings.Contains(f.TraceNote, "no longer stored") || f.Kind != "slow_query" || len(f.Evidence) == 0 {
		t.Fatalf("after the trace is gone: %+v", f)
	}
}

// With retention.traces (default 24h) the traces sampling did not keep
// stay whole after compaction, and every API's trace summary says what
// was decided: /api/v1/search's sampled, the Jaeger root span's
// tracedx.sampled tag (v1 and api_v3), api_v3 trace summaries and the
// Tempo search's span-set attribute.
func TestSampledReasonOnEveryAPI(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Sampling.Enabled = true
		c.Storage.TraceIdleTimeout = 200 * time.Millisecond
		c.Listen.Tempo = "127.0.0.1:0"
	})
	now := time.Now()
	const n = 40
	postOTLP(t, s.Addr("otlp-http"), checkoutCalls(n, 10*time.Second, now))
	deadline := time.Now().Add(20 * time.Second)
	for {
		sum := 0.0
		for _, v := range metricValues(t, s, "tracedx_sampling_decisions_total") {
			sum += v
		}
		if sum >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v of %d traces decided", sum, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Store().(*engine.Engine).Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := now.Add(-time.Hour)
	var search struct {
		Traces []struct {
			TraceID string `json:"trace_id"`
			Sampled string `json:"sampled"`
		} `json:"traces"`
	}
	getJSON(t, s, "/api/v1/search?service=frontend&limit=1000&start="+strconv.FormatInt(start.UnixMilli(), 10), &search)
	want := map[string]string{}
	dropped := 0
	for _, tr := range search.Traces {
		want[tr.TraceID] = tr.Sampled
		if tr.Sampled == "dropped" {
			dropped++
		}
	}
	if len(want) != n || dropped == 0 || dropped == n {
		t.Fatalf("after compaction %d of %d traces stored, %d dropped: want all, some dropped", len(want), n, dropped)
	}

	var jaeger struct {
		Data []struct {
			TraceID string `json:"traceID"`
			Spans   []struct {
				References []any `json:"references"`
				Tags       []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
			} `json:"spans"`
		} `json:"data"`
	}
	getJSON(t, s, "/api/traces?service=frontend&limit=1000&lookback=2h", &jaeger)
	if len(jaeger.Data) != n {
		t.Fatalf("jaeger search: %d traces, want %d", len(jaeger.Data), n)
	}
	for _, tr := range jaeger.Data {
		tagged := 0
		for _, sp := range tr.Spans {
			for _, tag := range sp.Tags {
				if tag.Key != "tracedx.sampled" {
					continue
				}
				tagged++
				if len(sp.References) != 0 {
					t.Errorf("trace %s: tracedx.sampled on a child span", tr.TraceID)
				}
				if tag.Value != want[tr.TraceID] {
					t.Errorf("trace %s: jaeger tracedx.sampled %v, search sampled %q", tr.TraceID, tag.Value, want[tr.TraceID])
				}
			}
		}
		if tagged != 1 {
			t.Errorf("trace %s: %d spans tagged tracedx.sampled, want the root", tr.TraceID, tagged)
		}
	}

	var sums struct {
		Summaries []struct {
			TraceID string `json:"traceId"`
			Sampled string `json:"sampled"`
		} `json:"summaries"`
	}
	getJSON(t, s, "/api/v3/trace-summaries?query.service_name=frontend&query.num_traces=1000&query.start_time_min="+start.UTC().Format(time.RFC3339Nano)+
		"&query.start_time_max="+time.Now().UTC().Format(time.RFC3339Nano), &sums)
	if len(sums.Summaries) != n {
		t.Fatalf("api_v3 summaries: %d, want %d", len(sums.Summaries), n)
	}
	for _, su := range sums.Summaries {
		if su.Sampled != want[su.TraceID] {
			t.Errorf("api_v3 summary %s: sampled %q, want %q", su.TraceID, su.Sampled, want[su.TraceID])
		}
	}

	resp, err := http.Get("http://" + s.Addr("tempo") + "/api/search?limit=1000&q=" + url.QueryEscape(`{resource.service.name="frontend"}`) +
		"&start=" + strconv.FormatInt(start.Unix(), 10) + "&end=" + strconv.FormatInt(time.Now().Unix()+1, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tempo struct {
		Traces []struct {
			TraceID string `json:"traceID"`
			SpanSet struct {
				Attributes []struct {
					Key   string `json:"key"`
					Value struct {
						StringValue string `json:"stringValue"`
					} `json:"value"`
				} `json:"attributes"`
			} `json:"spanSet"`
		} `json:"traces"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tempo); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tempo search: %s, %v", resp.Status, err)
	}
	if len(tempo.Traces) != n {
		t.Fatalf("tempo search: %d traces, want %d", len(tempo.Traces), n)
	}
	for _, tr := range tempo.Traces {
		got := ""
		for _, a := range tr.SpanSet.Attributes {
			if a.Key == "tracedx.sampled" {
				got = a.Value.StringValue
			}
		}
		// Tempo ids drop leading zeros; ours have none (0x42…).
		if got != want[tr.TraceID] {
			t.Errorf("tempo trace %s: tracedx.sampled %q, want %q", tr.TraceID, got, want[tr.TraceID])
		}
	}
}
