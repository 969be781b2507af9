package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

type p1History struct {
	NoHistory
	stmt     map[string]Baseline
	children map[string][]ChildStat
}

func (h p1History) StatementDuration(system, shape string) (Baseline, bool) {
	b, ok := h.stmt[system+"|"+shape]
	return b, ok
}

func (h p1History) UsualChildren(service, op string) ([]ChildStat, bool) {
	c, ok := h.children[service+"|"+op]
	return c, ok
}

func p1DB(id, parent byte, startMS, endMS float64, stmt string) model.Span {
	return p1Span(id, parent, "stock", "SELECT", model.KindClient, startMS, endMS,
		model.Attr{Key: "db.system", Value: model.Str("postgresql")}, model.Attr{Key: "db.statement", Value: model.Str(stmt)})
}

func TestSlowQueryUsesHistory(t *testing.T) {
	// 60 ms of a 400 ms request: below the share rule, but 25x its usual.
	spans := []model.Span{
		p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 400),
		p1DB(2, 1, 5, 65, "SELECT qty FROM stock WHERE sku = 'A-1001'"),
		p1Span(3, 1, "stock", "compute", model.KindInternal, 66, 399),
	}
	shape := "SELECT qty FROM stock WHERE sku = ?"
	d := NewSlowQuery()
	if got := d.Detect(NewTrace(spans), &Env{History: NoHistory{}}); len(got) != 0 {
		t.Fatalf("without history: %d findings, want 0", len(got))
	}
	h := p1History{stmt: map[string]Baseline{"postgresql|" + shape: {P50MS: 2.4, P95MS: 4, Count: 500}}}
	got := d.Detect(NewTrace(spans), &Env{History: h})
	if len(got) != 1 {
		t.Fatalf("with history: %d findings, want 1", len(got))
	}
	ev := got[0].Evidence.(SlowQueryEvidence)
	if ev.Rule != "history" || ev.UsualMS != 2.4 || ev.TimesUsual != 25 || got[0].Severity != SeverityWarning {
		t.Errorf("evidence %+v severity %s", ev, got[0].Severity)
	}
	// impact: its critical time minus the usual duration it would still take.
	if !p1Near(got[0].ImpactMS, 60-2.4, 0.05) {
		t.Errorf("impact %.2f", got[0].ImpactMS)
	}
	// Too few samples: history is not trusted.
	h.stmt["postgresql|"+shape] = Baseline{P50MS: 2.4, Count: 3}
	if got := d.Detect(NewTrace(spans), &Env{History: h}); len(got) != 0 {
		t.Errorf("history with 3 samples must not fire")
	}
	// nil Env works (offline).
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("nil env: %d findings", len(got))
	}
}

func TestSlowQueryThresholdsConfigurable(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 100),
		p1DB(2, 1, 5, 85, "SELECT qty FROM stock WHERE sku = 'A-1001'"),
	}
	d := NewSlowQuery()
	if len(d.Detect(NewTrace(spans), nil)) != 0 {
		t.Fatal("80 ms is below the default 100 ms floor")
	}
	d.MinDurationMS = 50
	if len(d.Detect(NewTrace(spans), nil)) != 1 {
		t.Fatal("lowered floor must fire")
	}
}
