package logstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
	f, _ := os.OpenFile(filepath.Join(dir, "logs.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
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
