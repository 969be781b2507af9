package jaeger

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// pdataJSON is the reference for the api_v3 responses: pdata's JSON of
// otlpconv.ToTraces over the traces' spans appended into one slice, as the
// handlers marshalled them before TracesOf.
func pdataJSON(t testing.TB, traces [][]model.Span) []byte {
	t.Helper()
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(otlpconv.ToTraces(slices.Concat(traces...)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v3Cases are sets of traces for the api_v3 encodings: one resource, the
// awkward values, compositions stored as JSON text (arrays and maps), many
// resources and random sets.
func v3Cases() map[string][][]model.Span {
	cases := map[string][][]model.Span{
		"one span":          {apitest.SynthTrace(0, 1)},
		"awkward":           {awkwardSpans()},
		"synthetic 20x20":   nil,
		"seventy resources": {randomSpans(rand.New(rand.NewPCG(5, 6)), 400, 70)},
	}
	for i := range 20 {
		cases["synthetic 20x20"] = append(cases["synthetic 20x20"], apitest.SynthTrace(i, 20))
	}
	composite := apitest.SynthTrace(99, 4)
	for i := range composite {
		composite[i].Attrs = append(slices.Clip(composite[i].Attrs),
			model.Attr{Key: "arr", Value: model.Value{Type: model.TypeArray, Str: `["x",1,true,{"k":[2.5]}]`}},
			// One key per level: otlpconv fills a map from a Go map, whose
			// order differs from one conversion to the next.
			model.Attr{Key: "map", Value: model.Value{Type: model.TypeMap, Str: `{"a":{"b":[null,"c"]}}`}},
			model.Attr{Key: "notjson", Value: model.Value{Type: model.TypeMap, Str: `{oops`}})
	}
	cases["composite"] = [][]model.Span{composite, apitest.SynthTrace(100, 3)}
	r := rand.New(rand.NewPCG(17, 19))
	for i := range 30 {
		var traces [][]model.Span
		for range 1 + r.IntN(20) {
			traces = append(traces, randomSpans(r, 1+r.IntN(40), 1+r.IntN(14)))
		}
		cases[fmt.Sprintf("random %d", i)] = traces
	}
	return cases
}

// TestWriteOTLPMatchesPdata: writeOTLP answers {"result": pdata's JSON of
// the spans appended into one slice}, whatever the traces hold.
func TestWriteOTLPMatchesPdata(t *testing.T) {
	h := NewHandler(apitest.NewStore(t, nil), Options{}).(*handler)
	for name, traces := range v3Cases() {
		rec := httptest.NewRecorder()
		h.writeOTLP(rec, httptest.NewRequest(http.MethodGet, "/api/v3/traces", nil), traces)
		want := slices.Concat([]byte(`{"result":`), pdataJSON(t, traces), []byte("}\n"))
		sameBytes(t, name, rec.Body.Bytes(), want)
	}
}

// TestV3ResponsesMatchPdata: the search and trace-by-id responses, through
// the handler, are {"result": pdata's JSON of the traces found}.
func TestV3ResponsesMatchPdata(t *testing.T) {
	ctx := context.Background()
	var all []model.Span
	r := rand.New(rand.NewPCG(23, 29))
	for range 30 {
		all = append(all, randomSpans(r, 1+r.IntN(30), 1+r.IntN(6))...)
	}
	st := apitest.NewStore(t, all)
	h := NewHandler(st, Options{})
	get := func(path string) []byte {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		body, _ := io.ReadAll(rec.Body)
		if cl := rec.Header().Get("Content-Length"); cl != fmt.Sprint(len(body)) {
			t.Fatalf("%s: Content-Length %s for %d bytes", path, cl, len(body))
		}
		return body
	}
	envelope := func(b []byte) []byte { return slices.Concat([]byte(`{"result":`), b, []byte("}\n")) }
	for _, svc := range []string{"svc-0", "svc-3"} {
		found, err := searchWholeTraces(ctx, st, store.Query{Service: svc, Limit: 20})
		if err != nil || len(found) < 2 {
			t.Fatalf("%s: %d traces found, %v", svc, len(found), err)
		}
		sameBytes(t, "search "+svc, get("/api/v3/traces?query.serviceName="+svc+"&query.searchDepth=20"), envelope(pdataJSON(t, found)))
		id := found[1][0].TraceID
		spans, err := st.Trace(ctx, id, store.TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "trace "+id.String(), get("/api/v3/traces/"+id.String()), envelope(pdataJSON(t, [][]model.Span{spans})))
	}
}
