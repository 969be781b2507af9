package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

// probe is one trace-by-id call of the harness (-probe-log).
type probe struct {
	name             string
	start            trace.Time // CLOCK_MONOTONIC, the trace's clock
	took, wrote, got float64    // ms: whole call, request written, first byte back
}

func readProbes(file string) ([]probe, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading probes: %w", err)
	}
	var ps []probe
	for _, line := range strings.Split(string(data), "\n") {
		var p probe
		var phase string
		var round int
		var start int64
		if _, err := fmt.Sscanf(line, "%s %d %q %d %f %f %f", &phase, &round, &p.name, &start, &p.took, &p.wrote, &p.got); err != nil {
			continue
		}
		if strings.Contains(p.name, "{id}") {
			p.start = trace.Time(start)
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// lineUp matches each probe inside the trace to the first by-id request
// the server began after the probe started, slowest probes first, and says
// what the server's goroutines ran while a request waited to be read: none
// at all means the process was off the CPU.
func lineUp(out io.Writer, w *walker, ps []probe) {
	var reqs []*request
	for _, q := range w.reqs {
		if strings.Contains(q.api, "by id") {
			reqs = append(reqs, q)
		}
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].begin < reqs[j].begin })
	var in []probe
	for _, p := range ps {
		if p.start >= w.t0 && p.start <= w.t1 {
			in = append(in, p)
		}
	}
	sort.Slice(in, func(i, j int) bool { return in[i].took > in[j].took })
	// Where the time of each probe over 5 ms mostly went.
	var slow, beforeWake, inServer, afterAnswer int
	for _, p := range in {
		if p.took <= 5 {
			break
		}
		q, ok := matching(reqs, p)
		if !ok {
			continue
		}
		slow++
		woke := ms(q.begin-p.start) - p.wrote
		after := p.took - ms(q.begin-p.start) - ms(q.took())
		switch {
		case woke >= ms(q.took()) && woke >= after:
			beforeWake++
		case ms(q.took()) >= after:
			inServer++
		default:
			afterAnswer++
		}
	}
	fmt.Fprintf(out, "\n%d by-id probes inside the trace, %d over 5 ms; most of their time went: before the server woke for the request %d, in the server %d, after the server answered %d\n",
		len(in), slow, beforeWake, inServer, afterAnswer)
	fmt.Fprintln(out, "the slowest (ms):")
	for i, p := range in {
		if i == 10 {
			break
		}
		q, ok := matching(reqs, p)
		if !ok {
			continue
		}
		woke := q.begin - p.start - trace.Time(p.wrote*1e6)
		fmt.Fprintf(out, "  %-34s client %6.2f: written after %.2f, server woke %.2f later, took %.2f (%s)\n",
			p.name, p.took, p.wrote, ms(woke), ms(q.took()), q.api)
		if woke > 2e6 {
			fmt.Fprintf(out, "      meanwhile the server ran: %s\n", w.ranBetween(q.begin-woke, q.begin))
		}
	}
}

// matching is the first by-id request the server began after the probe
// started (reqs in order of beginning).
func matching(reqs []*request, p probe) (*request, bool) {
	k := sort.Search(len(reqs), func(k int) bool { return reqs[k].begin >= p.start })
	if k == len(reqs) {
		return nil, false
	}
	return reqs[k], true
}

// ranBetween sums what the server's goroutines ran in [from, to), by the
// function each started with.
func (w *walker) ranBetween(from, to trace.Time) string {
	by := map[string]trace.Time{}
	for _, r := range w.runs {
		if lo, hi := max(r.begin, from), min(r.end, to); hi > lo {
			by[r.fn] += hi - lo
		}
	}
	if len(by) == 0 {
		return "nothing"
	}
	fns := make([]string, 0, len(by))
	for fn := range by {
		fns = append(fns, fn)
	}
	sort.Slice(fns, func(i, j int) bool { return by[fns[i]] > by[fns[j]] })
	var parts []string
	for _, fn := range fns[:min(4, len(fns))] {
		parts = append(parts, fmt.Sprintf("%s %.2f ms", fn, ms(by[fn])))
	}
	return strings.Join(parts, ", ")
}
