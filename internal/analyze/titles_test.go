package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// Names in titles are whole (the UI wraps titles); only unbounded user
// data such as a statement used as a span name is clipped.
func TestTitlesKeepNamesWhole(t *testing.T) {
	long := "/v1/partners/quotation-service/regional-endpoints/europe-west/shipping-estimates/express"
	spans := []model.Span{
		p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 1000),
		p1Call(2, 1, 10, 910, "https://api.partner.example"+long, 200),
	}
	got := NewSlowDependency().Detect(NewTrace(spans), nil)
	if len(got) != 1 || !strings.Contains(got[0].Title, "GET "+long+" took") {
		t.Fatalf("slow_dependency title clips the operation: %+v", got)
	}

	hosts := []string{"users-profile-service.internal.europe-west.example", "orders-history-service.internal.europe-west.example", "recommendations-service.internal.europe-west.example"}
	spans = []model.Span{p1Span(1, 0, "bff", "GET /home", model.KindServer, 0, 500)}
	for i, h := range hosts {
		st := 10 + float64(i)*102
		spans = append(spans, p1Call(byte(10+i), 1, st, st+100, "http://"+h+"/v1/x", 200))
	}
	got = NewSequentialCalls().Detect(NewTrace(spans), nil)
	if len(got) != 1 || !strings.Contains(got[0].Title, strings.Join(hosts, ", ")+" run one after another") {
		t.Fatalf("sequential_calls title clips the targets: %+v", got)
	}

	stmt := "SELECT id, name, description, price_cents, currency, created_at, updated_at FROM products WHERE id = $1"
	db := p1Span(3, 1, "stock", stmt, model.KindClient, 0, 10, model.Attr{Key: "db.system", Value: model.Str("postgresql")})
	tr := NewTrace([]model.Span{spans[0], spans[1], db})
	if got := opName(tr.ByID[db.SpanID], stmt); got != model.Clip(stmt, 60) {
		t.Errorf("a statement as a span name: %q", got)
	}
	if got := opName(tr.ByID[spans[1].SpanID], long); got != long {
		t.Errorf("an HTTP call's name: %q", got)
	}
}
