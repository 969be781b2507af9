package faultbed

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
)

// Config of one run.
type Config struct {
	Seed  uint64
	Class Class
	// TracesPerWindow is the mean number of requests per window (default
	// 250).
	TracesPerWindow int
	// Window is the length of each window (default 5 min).
	Window time.Duration
	// MaxSkew bounds each service's constant clock offset (default 25 ms).
	MaxSkew time.Duration
	// Strength scales the fault (default 1): the added delays, the CPU
	// slowdown beyond 1x and the share of failing calls.
	Strength float64
	// Naive ranks with the plain per-service self-time comparison instead
	// of the root-cause ranking, for reference.
	Naive bool
}

func (c Config) withDefaults() Config {
	if c.TracesPerWindow <= 0 {
		c.TracesPerWindow = 250
	}
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 25 * time.Millisecond
	}
	if c.Strength <= 0 {
		c.Strength = 1
	}
	return c
}

// Windows are the traces of one run as a user would select them.
type Windows struct {
	Fault              Fault
	Baseline, Incident [][]model.Span
}

// Outcome is a run's verdict.
type Outcome struct {
	Fault  Fault
	Report rootcause.Report
	// Rank is the 1-based place of the faulty service in the ranking, 0
	// when it is missing.
	Rank int
	// OperationHit is whether the top cause also names the faulty
	// operation (for faults confined to one).
	OperationHit bool
}

// Generate simulates one run: traffic over a baseline and an incident
// window, with the fault switched on at a random time shortly before the
// incident window, as an on-call engineer would select it after noticing.
func Generate(cfg Config) (Windows, error) {
	cfg = cfg.withDefaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(len(cfg.Class))*7919+0x5eed))
	ops := topology()
	fault := pickFault(rng, cfg.Class, ops)
	fault.Delay = time.Duration(float64(fault.Delay) * cfg.Strength)
	fault.Factor = 1 + (fault.Factor-1)*cfg.Strength
	fault.Probability *= cfg.Strength

	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(cfg.Seed%100000) * time.Minute)
	incStart := epoch.Add(2 * cfg.Window)
	// The fault starts up to a minute before the window the user picks.
	fault.Start = incStart.Add(-time.Duration(rng.Float64() * float64(time.Minute)))
	baseStart, incEnd := incStart.Add(-cfg.Window), incStart.Add(cfg.Window)

	rec := tracetest.NewSpanRecorder()
	services := map[string]bool{}
	for _, o := range ops {
		services[o.Service] = true
	}
	names := make([]string, 0, len(services))
	for s := range services {
		names = append(names, s)
	}
	sort.Strings(names)
	ids := &idGen{rng: rand.New(rand.NewPCG(cfg.Seed, 0x1d5))}
	s := &sim{ops: ops, tracers: map[string]trace.Tracer{}, rng: rng, fault: &fault}
	skew := map[string]time.Duration{}
	var providers []*sdktrace.TracerProvider
	for _, name := range names {
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithSpanProcessor(rec),
			sdktrace.WithIDGenerator(ids),
			sdktrace.WithResource(resource.NewWithAttributes("", attribute.String("service.name", name),
				attribute.String("host.name", name+"-1"))))
		providers = append(providers, tp)
		s.tracers[name] = tp.Tracer("tracedx/faultbed")
		skew[name] = time.Duration((2*rng.Float64() - 1) * float64(cfg.MaxSkew))
	}
	defer func() {
		for _, tp := range providers {
			_ = tp.Shutdown(context.Background())
		}
	}()

	// Confounders an incident window has in real life: the mix of
	// requests shifts, and an innocent service drifts a little slower.
	checkoutShare := 0.4 + 0.3*(rng.Float64()-0.5)
	s.drift = names[rng.IntN(len(names))]
	for s.drift == fault.Service {
		s.drift = names[rng.IntN(len(names))]
	}
	s.driftFactor = 1 + 0.2*rng.Float64()

	entries := []*operation{ops["frontend GET /home"], ops["frontend POST /checkout"]}
	mean := float64(cfg.Window) / float64(cfg.TracesPerWindow)
	for t := baseStart; t.Before(incEnd); t = t.Add(time.Duration(rng.ExpFloat64() * mean)) {
		s.active = !t.Before(fault.Start)
		entry, share := entries[0], 0.4
		if !t.Before(incStart) {
			share = checkoutShare
		}
		if rng.Float64() < share {
			entry = entries[1]
		}
		s.serve(context.Background(), nil, entry, t)
	}

	w := Windows{Fault: fault}
	for _, tr := range group(rec.Ended(), skew) {
		start := rootStart(tr)
		switch {
		case start < uint64(incStart.UnixNano()):
			w.Baseline = append(w.Baseline, tr)
		default:
			w.Incident = append(w.Incident, tr)
		}
	}
	if len(w.Baseline) == 0 || len(w.Incident) == 0 {
		return w, fmt.Errorf("faultbed: seed %d produced an empty window", cfg.Seed)
	}
	return w, nil
}

// Run generates a run and ranks it.
func Run(cfg Config) (Outcome, error) {
	w, err := Generate(cfg)
	if err != nil {
		return Outcome{}, err
	}
	var rep rootcause.Report
	if cfg.Naive {
		rep = naiveRank(w.Baseline, w.Incident)
	} else if rep, err = rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{}); err != nil {
		return Outcome{}, fmt.Errorf("faultbed: ranking seed %d: %w", cfg.Seed, err)
	}
	out := Outcome{Fault: w.Fault, Report: rep}
	for i, c := range rep.Causes {
		if c.Service == w.Fault.Service {
			out.Rank = i + 1
			break
		}
	}
	out.OperationHit = out.Rank == 1 && (w.Fault.Operation == "" || rep.Causes[0].Operation == w.Fault.Operation)
	return out, nil
}

// naiveRank is the plain comparison the ranking is measured against: each
// service's mean self time per trace (span time no child covers, raw
// timestamps, charged to the span's own service), ranked by its rise.
func naiveRank(baseline, incident [][]model.Span) rootcause.Report {
	mean := func(traces [][]model.Span) map[string]float64 {
		out := map[string]float64{}
		for _, tr := range traces {
			t := analyze.NewTrace(tr)
			for _, n := range t.Nodes {
				covered, cursor := uint64(0), n.Start()
				for _, c := range n.Children {
					if lo, hi := max(c.Start(), cursor), min(c.End(), n.End()); hi > lo {
						covered, cursor = covered+hi-lo, hi
					}
				}
				if d := n.Duration(); d > covered {
					out[n.Span.Service] += float64(d-covered) / 1e6 / float64(len(traces))
				}
			}
		}
		return out
	}
	b, i := mean(baseline), mean(incident)
	var rep rootcause.Report
	for svc, v := range i {
		rep.Causes = append(rep.Causes, rootcause.Cause{Service: svc, Score: v - b[svc]})
	}
	sort.Slice(rep.Causes, func(x, y int) bool { return rep.Causes[x].Score > rep.Causes[y].Score })
	return rep
}

func rootStart(spans []model.Span) uint64 {
	var lo uint64
	for i := range spans {
		if spans[i].ParentSpanID.IsZero() {
			return spans[i].StartUnixNano
		}
		if lo == 0 || spans[i].StartUnixNano < lo {
			lo = spans[i].StartUnixNano
		}
	}
	return lo
}

// group converts recorded SDK spans into tracedx traces, in order of first
// span, applying what real hosts do to timestamps: each service's clock is
// off by a constant, and the SDK (JavaScript's in particular) reports
// whole milliseconds.
func group(spans []sdktrace.ReadOnlySpan, skew map[string]time.Duration) [][]model.Span {
	idx := map[model.TraceID]int{}
	var out [][]model.Span
	for _, ro := range spans {
		s := convert(ro, skew)
		i, ok := idx[s.TraceID]
		if !ok {
			i = len(out)
			idx[s.TraceID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], s)
	}
	return out
}

func wholeMS(t time.Time, off time.Duration) uint64 {
	return uint64(t.Add(off).Truncate(time.Millisecond).UnixNano())
}

func convert(ro sdktrace.ReadOnlySpan, skew map[string]time.Duration) model.Span {
	sc := ro.SpanContext()
	s := model.Span{
		TraceID:      model.TraceID(sc.TraceID()),
		SpanID:       model.SpanID(sc.SpanID()),
		ParentSpanID: model.SpanID(ro.Parent().SpanID()),
		Name:         ro.Name(),
		Kind:         model.SpanKind(ro.SpanKind()),
		ScopeName:    ro.InstrumentationScope().Name,
	}
	for _, kv := range ro.Resource().Attributes() {
		s.Resource = append(s.Resource, model.Attr{Key: string(kv.Key), Value: value(kv.Value)})
		if kv.Key == "service.name" {
			s.Service = kv.Value.AsString()
		}
	}
	off := skew[s.Service]
	s.StartUnixNano, s.EndUnixNano = wholeMS(ro.StartTime(), off), wholeMS(ro.EndTime(), off)
	switch ro.Status().Code {
	case codes.Error:
		s.StatusCode, s.StatusMessage = model.StatusError, ro.Status().Description
	case codes.Ok:
		s.StatusCode = model.StatusOK
	}
	for _, kv := range ro.Attributes() {
		s.Attrs = append(s.Attrs, model.Attr{Key: string(kv.Key), Value: value(kv.Value)})
	}
	for _, e := range ro.Events() {
		ev := model.Event{Name: e.Name, TimeUnixNano: wholeMS(e.Time, off)}
		for _, kv := range e.Attributes {
			ev.Attrs = append(ev.Attrs, model.Attr{Key: string(kv.Key), Value: value(kv.Value)})
		}
		s.Events = append(s.Events, ev)
	}
	return s
}

func value(v attribute.Value) model.Value {
	switch v.Type() {
	case attribute.BOOL:
		return model.Bool(v.AsBool())
	case attribute.INT64:
		return model.Int(v.AsInt64())
	case attribute.FLOAT64:
		return model.Float(v.AsFloat64())
	default:
		return model.Str(v.String())
	}
}

// idGen makes the SDK's ids reproducible from the seed, so a run's example
// trace ids are the same every time.
type idGen struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func (g *idGen) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var t trace.TraceID
	binary.BigEndian.PutUint64(t[:8], g.rng.Uint64())
	binary.BigEndian.PutUint64(t[8:], g.rng.Uint64()|1)
	return t, g.spanID()
}

func (g *idGen) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.spanID()
}

func (g *idGen) spanID() trace.SpanID {
	var s trace.SpanID
	binary.BigEndian.PutUint64(s[:], g.rng.Uint64()|1)
	return s
}

// ClassResult is the accuracy of the ranking on one fault class.
type ClassResult struct {
	Class              Class
	Runs               int
	Top1, Top3, OpTop1 int
	Misses             []string // the faults missed at top 1, with what came first
}

// Accuracy runs each class runs times with seeds seedBase, seedBase+1, ...
// and cfg's other settings.
func Accuracy(classes []Class, runs int, seedBase uint64, cfg Config) ([]ClassResult, error) {
	var out []ClassResult
	for _, c := range classes {
		res := ClassResult{Class: c}
		for i := 0; i < runs; i++ {
			cfg.Seed, cfg.Class = seedBase+uint64(i), c
			o, err := Run(cfg)
			if err != nil {
				return nil, err
			}
			res.Runs++
			if o.Rank == 1 {
				res.Top1++
			} else {
				first := "nothing"
				if len(o.Report.Causes) > 0 {
					first = o.Report.Causes[0].Service + " " + o.Report.Causes[0].Operation
				}
				res.Misses = append(res.Misses, fmt.Sprintf("seed %d: %s; ranked %d, first %s", seedBase+uint64(i), o.Fault.String(), o.Rank, first))
			}
			if o.Rank >= 1 && o.Rank <= 3 {
				res.Top3++
			}
			if o.OperationHit {
				res.OpTop1++
			}
		}
		out = append(out, res)
	}
	return out, nil
}
