package logstore

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
)

func TestLogsSurviveReopenAndTornTail(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	tid := model.TraceID{1}
	err = s.WriteLogs(context.Background(), []ingest.LogRecord{
		{TraceID: tid, SpanID: model.SpanID{2}, Body: "charging card", SeverityNumber: 9, Service: "payment",
			Attrs: model.Attrs{{Key: "order.id", Value: model.Str("o-1")}}},
		{Body: "no trace: not kept"},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	// Simulate a crash in the middle of an unacknowledged write.
	days, _ := filepath.Glob(filepath.Join(dir, "logs-*.jsonl"))
	if len(days) != 1 {
		t.Fatalf("day files %v", days)
	}
	f, _ := os.OpenFile(days[0], os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"trace_id":"0100`)
	_ = f.Close()

	s, err = Open(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.ForTrace(tid)
	if len(got) != 1 || got[0].Body != "charging card" || got[0].SpanID != (model.SpanID{2}).String() ||
		got[0].Attributes["order.id"] != "o-1" || got[0].Service != "payment" {
		t.Fatalf("after reopen: %+v", got)
	}
}

func TestMemoryBoundDropsOldestTrace(t *testing.T) {
	s, err := Open(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := byte(1); i <= 3; i++ {
		if err := s.WriteLogs(context.Background(), []ingest.LogRecord{{TraceID: model.TraceID{i}, Body: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.ForTrace(model.TraceID{1})) != 0 || len(s.ForTrace(model.TraceID{3})) != 1 {
		t.Fatal("oldest trace must be dropped from memory first")
	}
}

func logsAt(day time.Time) []ingest.LogRecord {
	ns := func(h int) uint64 { return uint64(day.Add(time.Duration(h) * time.Hour).UnixNano()) }
	return []ingest.LogRecord{
		{TraceID: model.TraceID{1}, TimeUnixNano: ns(1), SeverityNumber: 9, SeverityText: "INFO", Body: "Charging card", Service: "payment"},
		{TraceID: model.TraceID{1}, TimeUnixNano: ns(2), SeverityNumber: 17, SeverityText: "ERROR", Body: "card declined", Service: "payment"},
		{TraceID: model.TraceID{2}, TimeUnixNano: ns(3), SeverityNumber: 13, Body: "slow cart lookup", Service: "cart"},
		{TimeUnixNano: ns(4), SeverityNumber: 21, Body: "disk full, no card", Service: "payment"},
	}
}

func bodies(res Result) string {
	var b []string
	for _, r := range res.Logs {
		b = append(b, r.Body)
	}
	return strings.Join(b, "|")
}

func TestSearchByServiceSeverityTextAndTime(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := OpenWith(Options{Dir: t.TempDir(), KeepUncorrelated: true, Now: func() time.Time { return day.Add(5 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteLogs(context.Background(), logsAt(day)); err != nil {
		t.Fatal(err)
	}
	h := func(n int) uint64 { return uint64(day.Add(time.Duration(n) * time.Hour).UnixNano()) }
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{}, "disk full, no card|slow cart lookup|card declined|Charging card"},
		{Query{Service: "payment"}, "disk full, no card|card declined|Charging card"},
		{Query{MinSeverity: 13}, "disk full, no card|slow cart lookup|card declined"},
		{Query{Text: "CARD"}, "disk full, no card|card declined|Charging card"},
		{Query{Start: h(2), End: h(4)}, "slow cart lookup|card declined"},
		{Query{TraceID: model.TraceID{1}, MinSeverity: 17}, "card declined"},
		{Query{Limit: 2}, "disk full, no card|slow cart lookup"},
	} {
		res, err := s.Search(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(res); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.q, got, tc.want)
		}
		if res.Truncated != (tc.q.Limit == 2) {
			t.Errorf("%+v: truncated %v", tc.q, res.Truncated)
		}
	}
	if len(s.ForTrace(model.TraceID{})) != 0 {
		t.Error("an uncorrelated record must not be attached to the zero trace")
	}
}

func TestUncorrelatedDroppedByDefault(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := OpenWith(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteLogs(context.Background(), logsAt(day)); err != nil {
		t.Fatal(err)
	}
	res, _ := s.Search(Query{})
	if len(res.Logs) != 3 || s.Dropped() != 1 {
		t.Errorf("%d kept, %d dropped", len(res.Logs), s.Dropped())
	}
}

func TestRetentionDeletesOldDays(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := OpenWith(Options{Dir: dir, Retention: 48 * time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteLogs(context.Background(), logsAt(now.Add(-10*time.Hour))); err != nil {
		t.Fatal(err)
	}
	now = now.Add(24 * time.Hour) // a new day, a new file
	if err := s.WriteLogs(context.Background(), logsAt(now.Add(-5 * time.Hour))[2:3]); err != nil {
		t.Fatal(err)
	}
	if days, _ := filepath.Glob(filepath.Join(dir, "logs-*.jsonl")); len(days) != 2 {
		t.Fatalf("days %v", days)
	}
	now = now.Add(40 * time.Hour) // the first day ended more than 48 h ago
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	days, _ := filepath.Glob(filepath.Join(dir, "logs-*.jsonl"))
	if len(days) != 1 || !strings.HasSuffix(days[0], "logs-20261202.jsonl") {
		t.Fatalf("after prune: %v", days)
	}
	if len(s.ForTrace(model.TraceID{1})) != 0 || len(s.ForTrace(model.TraceID{2})) != 1 {
		t.Error("index not pruned with the files")
	}
	res, _ := s.Search(Query{})
	if bodies(res) != "slow cart lookup" {
		t.Errorf("search after prune: %q", bodies(res))
	}
	_ = s.Close()
}

func TestLogsHTTP(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := OpenWith(Options{Dir: t.TempDir(), Now: func() time.Time { return day.Add(5 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteLogs(context.Background(), logsAt(day)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.RegisterRoutes(mux)
	get := func(target string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		var v map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v
	}
	code, v := get("/api/v1/logs?service=payment&severity=error&q=card&start=3h")
	logs, _ := v["logs"].([]any)
	if code != 200 || len(logs) != 1 || logs[0].(map[string]any)["body"] != "card declined" {
		t.Errorf("search: %d %v", code, v)
	}
	for _, bad := range []string{"/api/v1/logs?severity=loud", "/api/v1/logs?limit=-1", "/api/v1/logs?trace_id=xyz", "/api/v1/logs?start=2026-12-02T00:00:00Z&end=1h", "/api/v1/traces/zz/logs"} {
		if code, v := get(bad); code != 400 || v["error"] == "" {
			t.Errorf("%s: %d %v", bad, code, v)
		}
	}
	code, v = get("/api/v1/traces/" + (model.TraceID{1}).String() + "/logs")
	if logs, _ := v["logs"].([]any); code != 200 || len(logs) != 2 {
		t.Errorf("trace logs: %d %v", code, v)
	}
}
