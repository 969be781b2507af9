package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestTimeoutMismatchSkewAndAsync(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 100),
		p1Call(2, 1, 5, 95, "http://api/v1/x", 200),
		p1Span(3, 2, "api", "GET /v1/x", model.KindServer, 6, 96.5), // 1.5 ms skew
		p1Span(4, 1, "web", "publish", model.KindProducer, 96, 97),
		p1Span(5, 4, "worker", "process", model.KindConsumer, 150, 900),
	}
	d := NewTimeoutMismatch()
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("skew or async reported: %q", got[0].Title)
	}
	spans[2].EndUnixNano += 300e6
	got := d.Detect(NewTrace(spans), nil)
	if len(got) != 1 || !p1Near(got[0].Evidence.(TimeoutMismatchEvidence).InvertedByMS, 301.5, 0.01) || got[0].Severity != SeverityWarning {
		t.Fatalf("overrun: %+v", got)
	}
}
