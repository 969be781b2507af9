package server

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

type analysisAnswer struct {
	Source   string `json:"source"`
	Findings []struct {
		Kind     string   `json:"kind"`
		Severity string   `json:"severity"`
		Title    string   `json:"title"`
		SpanIDs  []string `json:"span_ids"`
	} `json:"findings"`
	Why      []string `json:"why"`
	Rejudged []struct {
		Kind           string   `json:"kind"`
		SpanIDs        []string `json:"span_ids"`
		StoredSeverity string   `json:"stored_severity"`
		NowSeverity    string   `json:"now_severity"`
	} `json:"rejudged"`
	Note string `json:"note"`
}

// slowOrder is one GET /orders whose query takes 1.1 s of its 1.12 s.
func slowOrder(i int, at time.Time) []model.Span {
	var tr model.TraceID
	tr[0] = 0x51
	binary.BigEndian.PutUint64(tr[8:], uint64(i+1))
	entry := model.SpanID{0x51, 1, byte(i >> 8), byte(i)}
	start := uint64(at.UnixNano())
	return []model.Span{
		{TraceID: tr, SpanID: entry, Service: "orders", Name: "GET /orders", Kind: model.KindServer,
			StartUnixNano: start, EndUnixNano: start + 1120e6, Attrs: model.Attrs{{Key: "http.route", Value: model.Str("/orders")}}},
		{TraceID: tr, SpanID: model.SpanID{0x51, 2, byte(i >> 8), byte(i)}, ParentSpanID: entry, Service: "orders", Name: "SELECT orders", Kind: model.KindClient,
			StartUnixNano: start + 10e6, EndUnixNano: start + 1110e6,
			Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")},
				{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT * FROM orders WHERE id = %d FOR UPDATE", i))}}},
	}
}

// A trace has one answer: the findings the server stored when it analysed
// the trace. Once the baselines have learnt that the query always takes
// 1.1 s, today's analysis would call it info; the answer stays the stored
// critical finding and says how today's baselines would differ.
func TestAnalysisAnswersWithStoredFindings(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.Storage.TraceIdleTimeout = 100 * time.Millisecond })
	first := slowOrder(0, time.Now().Add(-2*time.Minute))
	id := first[0].TraceID.String()
	postOTLP(t, s.Addr("otlp-http"), first)

	poll := func(what string, done func(*analysisAnswer) bool) analysisAnswer {
		t.Helper()
		var a analysisAnswer
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			a = analysisAnswer{}
			getJSON(t, s, "/api/v1/traces/"+id+"/analysis", &a)
			if done(&a) {
				return a
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last answer %+v", what, a)
			}
		}
	}
	stored := poll("stored findings", func(a *analysisAnswer) bool { return a.Source == "stored" })
	if len(stored.Findings) == 0 || stored.Findings[0].Kind != "slow_query" || stored.Findings[0].Severity != "critical" {
		t.Fatalf("stored findings: %+v", stored.Findings)
	}
	if len(stored.Rejudged) != 0 {
		t.Fatalf("nothing has changed yet, but rejudged: %+v", stored.Rejudged)
	}

	// The baselines learn the 1.1 s query as usual.
	var more []model.Span
	for i := 1; i <= 60; i++ {
		more = append(more, slowOrder(i, time.Now().Add(-time.Minute+time.Duration(i)*time.Millisecond))...)
	}
	postOTLP(t, s.Addr("otlp-http"), more)
	now := poll("rejudged", func(a *analysisAnswer) bool { return len(a.Rejudged) > 0 })

	if now.Source != "stored" || len(now.Findings) != len(stored.Findings) {
		t.Fatalf("answer changed with the baselines: %+v", now)
	}
	for i := range now.Findings {
		if now.Findings[i].Severity != stored.Findings[i].Severity || now.Findings[i].Title != stored.Findings[i].Title {
			t.Errorf("finding %d: %+v, stored %+v", i, now.Findings[i], stored.Findings[i])
		}
	}
	if fmt.Sprint(now.Why) != fmt.Sprint(stored.Why) {
		t.Errorf("why chain changed:\n%q\nstored:\n%q", now.Why, stored.Why)
	}
	r := now.Rejudged[0]
	if r.Kind != "slow_query" || r.StoredSeverity != "critical" || r.NowSeverity == "critical" || now.Note == "" {
		t.Errorf("rejudged %+v, note %q", now.Rejudged, now.Note)
	}
}
