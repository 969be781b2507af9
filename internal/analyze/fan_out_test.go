package analyze

import (
	"fmt"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func p1Call(id, parent byte, startMS, endMS float64, url string, status int64) model.Span {
	s := p1Span(id, parent, "web", "GET", model.KindClient, startMS, endMS,
		model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "url.full", Value: model.Str(url)},
		model.Attr{Key: "http.response.status_code", Value: model.Int(status)})
	if status >= 500 {
		s.StatusCode = model.StatusError
	}
	return s
}

func TestFanOutModesAndRetryExclusion(t *testing.T) {
	build := func(n int, concurrent bool, status int64) *Trace {
		spans := []model.Span{p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 1000)}
		for i := 0; i < n; i++ {
			st := 10 + float64(i)*50
			if concurrent {
				st = 10
			}
			// A failing call is retried: the same price again, not the next.
			id := 1000 + i
			if status >= 500 {
				id = 1000
			}
			spans = append(spans, p1Call(byte(10+i), 1, st, st+40, fmt.Sprintf("http://pricing/v1/prices/%d", id), status))
		}
		return NewTrace(spans)
	}
	d := NewFanOut()
	got := d.Detect(build(6, false, 200), nil)
	if len(got) != 1 || got[0].Evidence.(FanOutEvidence).Mode != "sequential" || got[0].ImpactMS != 200 {
		t.Fatalf("sequential: %+v", got)
	}
	// Six concurrent calls already cost only the slowest: a batch call
	// would save nothing, so there is nothing to report.
	if got := d.Detect(build(6, true, 200), nil); len(got) != 0 {
		t.Fatalf("concurrent fan-out that saves ~0 ms reported: %q", got[0].Title)
	}
	if got := d.Detect(build(4, false, 200), nil); len(got) != 0 {
		t.Fatal("4 calls are below the threshold")
	}
	// Six sequential failing calls are a retry loop, not a fan-out.
	if got := d.Detect(build(6, false, 503), nil); len(got) != 0 {
		t.Fatalf("retry loop reported as fan_out: %q", got[0].Title)
	}
}
