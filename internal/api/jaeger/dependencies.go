package jaeger

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// DependencyLink is one edge of the service graph: Parent called Child
// CallCount times in the window.
type DependencyLink struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

// DependencySource computes the service graph over [end-lookback, end).
// The server may wire a service-graph component that maintains it
// incrementally; ScanDependencies is the always-correct fallback.
type DependencySource interface {
	Dependencies(ctx context.Context, end time.Time, lookback time.Duration) ([]DependencyLink, error)
}

// ScanDependencies computes the service graph by reading every trace with
// a span in the window: one call for every span whose parent span belongs
// to another service. Correct, but its cost grows with the window.
type ScanDependencies struct {
	Store store.Store
	// MaxTraces bounds the scan (0: no bound).
	MaxTraces int
}

// Dependencies implements DependencySource.
func (d *ScanDependencies) Dependencies(ctx context.Context, end time.Time, lookback time.Duration) ([]DependencyLink, error) {
	q := store.Query{Range: windowRange(end, lookback), Limit: d.MaxTraces}
	counts := map[[2]string]uint64{}
	err := d.Store.ScanTraces(ctx, q, func(spans []model.Span) error {
		AddDependencies(spans, counts)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning traces for dependencies: %w", err)
	}
	return linksFromCounts(counts), nil
}

// AddDependencies adds the service-to-service calls of one trace to counts,
// keyed by (parent service, child service).
func AddDependencies(spans []model.Span, counts map[[2]string]uint64) {
	svc := make(map[model.SpanID]string, len(spans))
	for i := range spans {
		svc[spans[i].SpanID] = spans[i].Service
	}
	for i := range spans {
		s := &spans[i]
		if s.ParentSpanID.IsZero() {
			continue
		}
		p, ok := svc[s.ParentSpanID]
		if !ok || p == s.Service {
			continue
		}
		counts[[2]string{p, s.Service}]++
	}
}

func linksFromCounts(counts map[[2]string]uint64) []DependencyLink {
	out := make([]DependencyLink, 0, len(counts))
	for k, n := range counts {
		out = append(out, DependencyLink{Parent: k[0], Child: k[1], CallCount: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Parent != out[j].Parent {
			return out[i].Parent < out[j].Parent
		}
		return out[i].Child < out[j].Child
	})
	return out
}

func windowRange(end time.Time, lookback time.Duration) store.TimeRange {
	e := end.UnixNano()
	s := end.Add(-lookback).UnixNano()
	if s < 0 {
		s = 0
	}
	return store.TimeRange{Start: uint64(s), End: uint64(e)}
}

// parseMillisTime reads a unix-milliseconds parameter, defaulting to now.
func parseMillisTime(r *http.Request, name string, now time.Time) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return now, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > apiparam.MaxUnixMillis {
		return time.Time{}, badParam(name, fmt.Errorf("want unix milliseconds between 0 and %d, got %q", apiparam.MaxUnixMillis, v))
	}
	return time.UnixMilli(n), nil
}

// parseMillisDuration reads a milliseconds duration parameter.
func parseMillisDuration(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > apiparam.MaxUnixMillis {
		return 0, badParam(name, fmt.Errorf("want a positive number of milliseconds up to %d, got %q", apiparam.MaxUnixMillis, v))
	}
	return time.Duration(n) * time.Millisecond, nil
}

func (h *handler) dependencies(w http.ResponseWriter, r *http.Request) {
	end, err := parseMillisTime(r, "endTs", h.opts.Now())
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	lookback, err := parseMillisDuration(r, "lookback", 24*time.Hour)
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	links, err := h.opts.Dependencies.Dependencies(r.Context(), end, lookback)
	if err != nil {
		h.writeErr(w, r, fmt.Errorf("computing dependencies: %w", err))
		return
	}
	// Optional focus on one service, as Jaeger offers.
	if svc := r.URL.Query().Get("service"); svc != "" {
		kept := links[:0:0]
		for _, l := range links {
			if l.Parent == svc || l.Child == svc {
				kept = append(kept, l)
			}
		}
		links = kept
	}
	if links == nil {
		links = []DependencyLink{}
	}
	h.writeData(w, r, links, len(links), nil)
}

// DependencyFunc adapts one function to DependencySource, for wiring a
// service-graph component.
type DependencyFunc func(ctx context.Context, end time.Time, lookback time.Duration) ([]DependencyLink, error)

// Dependencies implements DependencySource.
func (f DependencyFunc) Dependencies(ctx context.Context, end time.Time, lookback time.Duration) ([]DependencyLink, error) {
	return f(ctx, end, lookback)
}
