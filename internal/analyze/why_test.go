package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestWhyChainFollowsCriticalPathToCause(t *testing.T) {
	ms := uint64(1e6)
	base := uint64(1_700_000_000_000_000_000)
	sp := func(id, parent byte, svc, name string, kind model.SpanKind, start, end uint64) model.Span {
		s := model.Span{TraceID: model.TraceID{1}, SpanID: model.SpanID{id}, Service: svc, Name: name, Kind: kind,
			StartUnixNano: base + start*ms, EndUnixNano: base + end*ms}
		if parent != 0 {
			s.ParentSpanID = model.SpanID{parent}
		}
		return s
	}
	spans := []model.Span{
		sp(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 6100),
		sp(2, 1, "checkout", "GET /stock", model.KindClient, 100, 5000),
		sp(3, 2, "inventory", "GET /stock", model.KindServer, 110, 4990),
		sp(4, 3, "inventory", "SELECT stock", model.KindClient, 150, 4950),
		sp(5, 1, "checkout", "POST /charge", model.KindClient, 5000, 5100),
	}
	why := whyChain(NewTrace(spans), []Finding{{Title: "SELECT on stock took 4,800 ms", ImpactMS: 4700, Fix: "add an index"}})
	text := strings.Join(why, "\n")
	for _, want := range []string{"checkout POST /checkout took 6.1 s", "80 % of that (4.9 s) was checkout GET /stock",
		"inventory SELECT stock", "Cause: SELECT on stock took 4,800 ms", "Fix: add an index"} {
		if !strings.Contains(text, want) {
			t.Errorf("why chain lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "was inventory GET /stock") {
		t.Errorf("the client→server hop must be said once:\n%s", text)
	}
}
