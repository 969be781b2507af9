package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// recordingServer is a server whose sink keeps every batch it is handed.
type recordingServer struct {
	s       *Server
	batches [][]model.Span
}

func newRecordingServer(t *testing.T, cfg Config) *recordingServer {
	t.Helper()
	r := &recordingServer{}
	sink := funcSink(func(_ context.Context, spans []model.Span) error {
		r.batches = append(r.batches, model.AppendClones(nil, spans))
		return nil
	})
	s, err := New(cfg, sink, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	return r
}

// exportViaPdata is the trace export as it was before the direct decoder:
// pdata decodes (and repairs), then the pdata spans are converted.
func exportViaPdata(s *Server, data []byte) (exportResult, error) {
	td, rep, err := decodeTraces(formatProto, data)
	if err != nil {
		return exportResult{}, err
	}
	return s.consumeTraces(context.Background(), protoHTTP, td, rep)
}

// fixtureRequests are the committed OTLP trace requests of this package
// as protobuf: testdata/trace.json and the fuzz seeds (JSON seeds
// re-encoded; ones pdata cannot read are sent as they are).
func fixtureRequests(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	js, err := os.ReadFile("testdata/trace.json")
	if err != nil {
		t.Fatal(err)
	}
	add := func(name string, data []byte, isJSON bool) {
		if !isJSON {
			out[name] = data
			return
		}
		req := ptraceotlp.NewExportRequest()
		if req.UnmarshalJSON(data) != nil {
			out[name] = data
			return
		}
		b, err := req.MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	add("trace.json", js, true)
	seeds, err := filepath.Glob("testdata/fuzz/FuzzOTLPTraces/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range seeds {
		data, isJSON := readFuzzSeed(t, p)
		add(filepath.Base(p), data, isJSON)
	}
	return out
}

// readFuzzSeed reads a seed file of FuzzOTLPTraces ([]byte, bool).
func readFuzzSeed(t *testing.T, path string) ([]byte, bool) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a seed of ([]byte, bool)", path)
	}
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	if !ok {
		t.Fatalf("%s: first value is not []byte", path)
	}
	data, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(data), lines[2] == "bool(true)"
}

// TestDirectDecodeMatchesPdataPath sends the same requests to two servers,
// one through its export (direct decoder, pdata for what it leaves) and
// one through the pdata path alone, each request twice (the second is
// deduplicated): answers, errors and the spans stored must be the same.
func TestDirectDecodeMatchesPdataPath(t *testing.T) {
	reqs := fixtureRequests(t)
	mustBeDirect := []string{"trace.json", "valid-proto", "valid-json", fmt.Sprintf("nested-%d", otlpconv.MaxNesting-1)}
	ts, err := gen.Templates(2, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for i, tpl := range ts {
		name := fmt.Sprintf("loadgen-%d", i)
		reqs[name] = tpl.Fill(nil, rng)
		mustBeDirect = append(mustBeDirect, name)
	}
	for i := range 300 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%3 == 0, NowUnixNano: uint64(time.Now().UnixNano())}
		b := g.Request()
		reqs[fmt.Sprintf("random-%d", i)] = b
		reqs[fmt.Sprintf("mutated-%d", i)] = otlpconvtest.Mutate(rng, b)
	}
	// The nesting check runs only on the pdata path: the direct decoder
	// must refuse the same depths.
	for _, depth := range []int{otlpconv.MaxNesting - 1, otlpconv.MaxNesting, 10_000} {
		kv := otlpconvtest.KeyValue("deep", otlpconvtest.NestedArray(depth))
		reqs[fmt.Sprintf("nested-%d", depth)] = otlpconvtest.TraceRequest(bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8), "deep", kv)
	}
	cfg := DefaultConfig()
	cfg.MaxSpansPerRequest = 30 // some random requests are over it
	// Tight limits, so conversion cuts and drops in the random requests.
	cfg.MaxAttributeDepth, cfg.MaxAttributeValueBytes = 2, 64
	cfg.MaxAttributesPerSpan, cfg.MaxEventsPerSpan, cfg.MaxLinksPerSpan = 3, 2, 1
	direct, viaPdata := newRecordingServer(t, cfg), newRecordingServer(t, cfg)
	names := make([]string, 0, len(reqs))
	for name := range reqs {
		names = append(names, name)
	}
	// One order for both servers: the dedup window depends on it.
	slices.Sort(names)
	compared := 0 // batches already compared
	for _, name := range names {
		data := reqs[name]
		for round := range 2 {
			got, gotErr := direct.s.exportTraces(context.Background(), protoHTTP, formatProto, data)
			want, wantErr := exportViaPdata(viaPdata.s, data)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || got != want {
				t.Fatalf("%s, round %d: direct %+v, %v; pdata %+v, %v", name, round, got, gotErr, want, wantErr)
			}
		}
		if len(direct.batches) != len(viaPdata.batches) {
			t.Fatalf("%s: %d batches stored directly, %d through pdata", name, len(direct.batches), len(viaPdata.batches))
		}
		if g, w := fmt.Sprintf("%#v", direct.batches[compared:]), fmt.Sprintf("%#v", viaPdata.batches[compared:]); g != w {
			t.Fatalf("%s: stored spans differ:\ndirect %s\npdata  %s", name, g, w)
		}
		compared = len(direct.batches)
	}
	directly, stored := 0, 0
	for _, name := range names {
		if _, _, err := otlpconv.DecodeTracesProto(reqs[name], cfg.limits()); err == nil {
			directly++
		}
	}
	for _, b := range direct.batches {
		stored += len(b)
	}
	if directly < 300 || stored < 1000 {
		t.Fatalf("only %d of %d requests decoded directly, %d spans stored: the comparison proves little", directly, len(names), stored)
	}
	for _, name := range mustBeDirect {
		if _, _, err := otlpconv.DecodeTracesProto(reqs[name], cfg.limits()); err != nil {
			t.Errorf("%s: not decoded directly: %v", name, err)
		}
	}
}
