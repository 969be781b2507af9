package traceio_test

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"testing"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/api/tempo"
	v1 "github.com/tracedx/tracedx/internal/api/v1"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/traceio"
)

// TestReadsWhatTheAPIsHandOut fetches one trace from tracedx's own API and
// its Tempo API (v1 and v2) and reads each answer back as a trace file:
// every span must come back with its identity, timing, status and
// attributes.
func TestReadsWhatTheAPIsHandOut(t *testing.T) {
	spans := apitest.FixtureSpans(t)
	id := spans[0].TraceID
	var want []model.Span
	for _, s := range spans {
		if s.TraceID == id {
			want = append(want, s)
		}
	}
	if len(want) < 2 {
		t.Fatalf("fixture trace has %d spans; the test needs a parent and a child", len(want))
	}
	st := apitest.NewStore(t, spans)
	for _, tc := range []struct {
		name   string
		h      http.Handler
		path   string
		format traceio.Format
	}{
		{"tracedx", v1.NewHandler(v1.Deps{Store: st}), "/api/v1/traces/" + id.String(), traceio.FormatTracedxJSON},
		{"tempo v1", tempo.NewHandler(st, tempo.Options{}), "/api/traces/" + id.String(), traceio.FormatTempoJSON},
		{"tempo v2", tempo.NewHandler(st, tempo.Options{}), "/api/v2/traces/" + id.String(), traceio.FormatTempoJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != 200 {
				t.Fatalf("GET %s: %d %s", tc.path, rec.Code, rec.Body.String())
			}
			traces, format, err := traceio.Read(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			if format != tc.format || len(traces) != 1 || traces[0].ID != id {
				t.Fatalf("format %s, %d traces", format, len(traces))
			}
			if got, exp := essentials(traces[0].Spans), essentials(want); !reflect.DeepEqual(got, exp) {
				t.Errorf("spans differ\n got %+v\nwant %+v", got, exp)
			}
		})
	}
}

type spanEssentials struct {
	Span, Parent, Name, Service, Kind, Status string
	Start, End                                uint64
	Attrs                                     map[string]string
}

func essentials(spans []model.Span) []spanEssentials {
	out := make([]spanEssentials, len(spans))
	for i, s := range spans {
		attrs := map[string]string{}
		for _, a := range s.Attrs {
			attrs[a.Key] = a.Value.AsString()
		}
		out[i] = spanEssentials{s.SpanID.String(), s.ParentSpanID.String(), s.Name, s.Service, s.Kind.String(), s.StatusCode.String(), s.StartUnixNano, s.EndUnixNano, attrs}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Span < out[j].Span })
	return out
}
