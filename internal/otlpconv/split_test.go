package otlpconv

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// ownerOf3 spreads traces over three nodes by their first byte.
func ownerOf3(id model.TraceID) int { return int(id[0]) % 3 }

// splitRequests are random requests, some damaged, and what
// instrumentation sends.
func splitRequests(t *testing.T, rng *rand.Rand) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range 400 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%7 == 0, NowUnixNano: uint64(time.Now().UnixNano())}
		req := g.Request()
		if i%4 == 0 {
			req = otlpconvtest.Mutate(rng, req)
		}
		out = append(out, req)
		if i%10 == 0 {
			b, err := ptraceotlp.NewExportRequestFromTraces(gen.Traces(rng, 5, time.Now())).MarshalProto()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

// TestSplitDecodesAsTheWhole: the parts of a split request decode, part by
// part, into the spans the whole request decodes into, each in the part of
// its trace's owner; a request that fails to decode has a part that fails
// (so a node that checks every part refuses what it refused whole), and
// the check of a part fails exactly when its decoding does, under the
// default limits and limits that cut a lot.
func TestSplitDecodesAsTheWhole(t *testing.T) {
	tight := Limits{MaxDepth: 2, MaxValueBytes: 64, MaxAttrs: 2, MaxEvents: 1, MaxLinks: 1}
	for _, lim := range []Limits{DefaultLimits(), tight} {
		rng := rand.New(rand.NewPCG(31, 32))
		var sp TraceSplitter
		split, failed, multi := 0, 0, 0
		for _, req := range splitRequests(t, rng) {
			whole, _, wholeErr := DecodeTracesProto(req, lim)
			if err := sp.Split(req, 3, ownerOf3, 1); err != nil {
				continue
			}
			split++
			var parts []model.Span
			var partErr error
			owners := 0
			for o, part := range sp.Parts {
				spans, _, err := DecodeTracesProto(part, lim)
				checked, checkErr := CheckTracesProtoPooled(part, lim)
				if (err == nil) != (checkErr == nil) {
					t.Fatalf("part %d: decoding says %v, the check %v", o, err, checkErr)
				}
				if checked != nil {
					checked.Release()
				}
				if err != nil {
					partErr = err
					continue
				}
				if len(spans) != sp.Counts[o] {
					t.Fatalf("part %d has %d spans, Counts says %d", o, len(spans), sp.Counts[o])
				}
				if len(spans) > 0 {
					owners++
				}
				for i := range spans {
					if ownerOf3(spans[i].TraceID) != o {
						t.Fatalf("a span of trace %s is in part %d", spans[i].TraceID, o)
					}
				}
				parts = append(parts, spans...)
			}
			if (wholeErr == nil) != (partErr == nil) {
				t.Fatalf("the whole request decodes with %v, its parts with %v", wholeErr, partErr)
			}
			if wholeErr != nil {
				failed++
				continue
			}
			if owners > 1 {
				multi++
			}
			if !slices.Equal(spanTexts(whole), spanTexts(parts)) {
				t.Fatalf("the parts decode into %d spans unlike the whole's %d", len(parts), len(whole))
			}
		}
		if split < 200 || failed < 10 || multi < 50 {
			t.Fatalf("%d requests split, %d of them failing to decode, %d over several owners: too few to tell", split, failed, multi)
		}
	}
}

// TestSplitKeepsEmptyScopes: ScopeSpans without spans, and ResourceSpans
// without any, go to the part named for them, so that their resource and
// scope are still decoded (and refused if malformed) on some node.
func TestSplitKeepsEmptyScopes(t *testing.T) {
	res := otlpconvtest.Field(nil, fResourceSpansResource, otlpconvtest.Field(nil, 1, otlpconvtest.KeyValue("service.name", otlpconvtest.Field(nil, 1, []byte("svc")))))
	emptyScope := otlpconvtest.Field(nil, fScopeSpansScope, otlpconvtest.Field(nil, 1, []byte("lib")))
	req := otlpconvtest.Field(nil, fRequestResourceSpans, append(append([]byte(nil), res...), otlpconvtest.Field(nil, fResourceSpansScopeSpans, emptyScope)...))
	req = otlpconvtest.Field(req, fRequestResourceSpans, res)
	var sp TraceSplitter
	if err := sp.Split(req, 3, ownerOf3, 2); err != nil {
		t.Fatal(err)
	}
	if len(sp.Parts[0]) != 0 || len(sp.Parts[1]) != 0 || !slices.Equal(sp.Parts[2], req) {
		t.Fatalf("parts %x, %x, %x; want the whole request %x in the last", sp.Parts[0], sp.Parts[1], sp.Parts[2], req)
	}
	if sp.Counts[2] != 0 {
		t.Fatalf("%d spans counted in a request of none", sp.Counts[2])
	}
}

// TestSplitRefuses: a request the decoder must judge is not split.
func TestSplitRefuses(t *testing.T) {
	good := otlpconvtest.TraceRequest(make([]byte, 16), make([]byte, 8), "op")
	for name, req := range map[string][]byte{
		"truncated":      good[:len(good)-3],
		"short trace id": otlpconvtest.TraceRequest([]byte{1, 2, 3, 4, 5}, make([]byte, 8), "op"),
		// Varints (wire type 0) where messages and ids go.
		"wire type":       {1 << 3, 1},
		"span wire type":  otlpconvtest.Field(nil, 1, otlpconvtest.Field(nil, 2, []byte{2 << 3, 1})),
		"trace id varint": otlpconvtest.Field(nil, 1, otlpconvtest.Field(nil, 2, otlpconvtest.Field(nil, 2, []byte{1 << 3, 1}))),
	} {
		var sp TraceSplitter
		if err := sp.Split(req, 3, ownerOf3, 0); err == nil {
			t.Errorf("%s: split, want an error", name)
		}
	}
	var sp TraceSplitter
	if err := sp.Split(good, 3, ownerOf3, 0); err != nil {
		t.Fatalf("a well-formed request: %v", err)
	}
}
