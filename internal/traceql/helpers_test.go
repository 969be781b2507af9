package traceql

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// fixture spans are described compactly: name, service, parent name,
// start/end in ms from t0, kind, status and attributes.
type fx struct {
	name, service, parent string
	start, end            int
	kind                  model.SpanKind
	status                model.StatusCode
	attrs                 model.Attrs
}

var t0 = uint64(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())

func sid(n int) model.SpanID { return model.SpanID{0, 0, 0, 0, 0, 0, byte((n + 1) >> 8), byte(n + 1)} }

func build(traceByte byte, offsetMs int, fxs []fx) []model.Span {
	tid := model.TraceID{traceByte, 1, 2, 3}
	ids := map[string]model.SpanID{}
	for i, f := range fxs {
		ids[f.name] = sid(i)
	}
	out := make([]model.Span, len(fxs))
	for i, f := range fxs {
		s := model.Span{
			TraceID: tid, SpanID: sid(i), Name: f.name, Kind: f.kind, StatusCode: f.status,
			StartUnixNano: t0 + uint64((offsetMs+f.start)*1e6), EndUnixNano: t0 + uint64((offsetMs+f.end)*1e6),
			Service: f.service, Resource: model.Attrs{{Key: "service.name", Value: model.Str(f.service)}, {Key: "env", Value: model.Str("prod")}},
			Attrs: f.attrs, ScopeName: "lib",
		}
		if f.parent != "" {
			s.ParentSpanID = ids[f.parent]
		}
		if f.status == model.StatusError {
			s.StatusMessage = "boom"
		}
		out[i] = s
	}
	return out
}

// checkout is the main fixture: a frontend request fanning out to cart
// (with three database calls) and payment.
func checkout() []model.Span {
	return build(0xaa, 0, []fx{
		{"GET /checkout", "frontend", "", 0, 1000, model.KindServer, model.StatusUnset, model.Attrs{{Key: "http.method", Value: model.Str("GET")}, {Key: "http.status_code", Value: model.Int(200)}}},
		{"call cart", "frontend", "GET /checkout", 10, 300, model.KindClient, model.StatusUnset, nil},
		{"POST /cart", "cart", "call cart", 20, 290, model.KindServer, model.StatusError, model.Attrs{{Key: "http.status_code", Value: model.Int(500)}}},
		{"SELECT a", "cart", "POST /cart", 30, 40, model.KindClient, model.StatusUnset, model.Attrs{{Key: "db.system", Value: model.Str("postgres")}}},
		{"SELECT b", "cart", "POST /cart", 50, 60, model.KindClient, model.StatusUnset, model.Attrs{{Key: "db.system", Value: model.Str("postgres")}}},
		{"SELECT c", "cart", "POST /cart", 70, 80, model.KindClient, model.StatusOK, model.Attrs{{Key: "db.system", Value: model.Str("mysql")}}},
		{"call payment", "frontend", "GET /checkout", 400, 900, model.KindClient, model.StatusUnset, nil},
		{"charge", "payment", "call payment", 410, 890, model.KindServer, model.StatusUnset, model.Attrs{{Key: "amount", Value: model.Float(12.5)}, {Key: "retry", Value: model.Bool(true)}, {Key: "service.name", Value: model.Str("span-level")}}},
	})
}

func mustParse(t testing.TB, q string) *Query {
	t.Helper()
	pq, err := Parse(q)
	if err != nil {
		t.Fatalf("Parse(%q): %v", q, err)
	}
	return pq
}

// names returns the sorted span names of all spansets.
func names(sets []Spanset) string {
	var out []string
	for _, s := range sets {
		for _, sp := range s.Spans {
			out = append(out, sp.Name)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "|")
}

func evalNames(t *testing.T, q string, spans []model.Span, fl FindingsLookup) string {
	t.Helper()
	sets, err := mustParse(t, q).Eval(context.Background(), spans, fl)
	if err != nil {
		t.Fatalf("Eval(%q): %v", q, err)
	}
	return names(sets)
}
