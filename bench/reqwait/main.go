// Command reqwait reads a Go runtime trace of `tracedx serve` (from
// bench/profserve's /debug/pprof/trace) and tells what its HTTP requests
// waited on: for every request, the time its goroutine spent running,
// runnable (waiting for a processor), in system calls and blocked (with
// the blocking call and who woke it), GC assists, and whether a GC mark
// phase overlapped it. With the harness's -probe-log it also lines the
// client's probes up with the server's requests, which splits a slow
// probe into the time before the server's goroutine woke for it and the
// time the server took.
//
//	go build -o /tmp/profserve ./bench/profserve
//	TRACEDX_PPROF_ADDR=127.0.0.1:16061 go run ./bench/harness -bin /tmp/profserve -rate 30000 -queries -probe-log /tmp/probes &
//	curl -o /tmp/trace.out 'http://127.0.0.1:16061/debug/pprof/trace?seconds=10'   # during the load's second half
//	go run ./bench/reqwait -probes /tmp/probes /tmp/trace.out
//
// A request is one turn of a keep-alive connection's goroutine: from the
// moment it has the request's bytes (woken by the network, or finding them
// already there) to when it reads for the next one. Requests are named by
// the handler that appears in the goroutine's stacks.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

func main() {
	top := flag.Int("top", 8, "slowest requests to show in detail")
	only := flag.String("only", "by id", "show in detail only requests whose API name contains this")
	probes := flag.String("probes", "", "the harness's -probe-log file, to line probes up with the server's requests")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: reqwait [-top n] [-only api] [-probes file] trace.out")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w, err := walk(f)
	if err != nil {
		log.Fatalf("reading %s: %v", flag.Arg(0), err)
	}
	w.report(os.Stdout, *top, *only)
	if *probes != "" {
		ps, err := readProbes(*probes)
		if err != nil {
			log.Fatal(err)
		}
		lineUp(os.Stdout, w, ps)
	}
}

// apis names requests by a handler function in their stacks.
var apis = []struct{ fn, name string }{
	{"jaeger.(*handler).getTrace", "Jaeger v1 by id"},
	{"jaeger.(*handler).v3GetTrace", "Jaeger api_v3 by id"},
	{"tempo.(*handler).traceV1", "Tempo v1 by id"},
	{"tempo.(*handler).traceV2", "Tempo v2 by id"},
	{"v1.(*api).trace", "/api/v1 by id"},
	{"jaeger.(*handler).searchTraces", "Jaeger v1 search"},
	{"jaeger.(*handler).v3FindTraces", "Jaeger api_v3 search"},
	{"tempo.(*handler).search", "Tempo search"},
	{"v1.(*api).search", "/api/v1 search"},
}

// request is one HTTP request as the server's goroutine lived it.
type request struct {
	api        string
	begin, end trace.Time
	tentative  bool // begun when its read returned; undone if that read waits
	states     map[string]trace.Time
	waits      []string // blocking periods over 1 ms, with their stacks
	waitSites  []string // the same, by the two innermost calls
	assist     trace.Time
	duringGC   bool
}

func (r *request) took() trace.Time { return r.end - r.begin }

// goroutine is what the walk keeps per goroutine.
type goroutine struct {
	startFn     string
	since       trace.Time
	reason      string // of the current wait
	blockedAt   string // stack of the current wait or system call
	blockedSite string
	isConn      bool
	req         *request
	readAt      trace.Time // when it began to read the next request
	reading     bool
	assistFrom  trace.Time
}

// span is a stretch a goroutine ran.
type span struct {
	fn         string
	begin, end trace.Time
}

type walker struct {
	t0, t1   trace.Time
	gs       map[trace.GoID]*goroutine
	reqs     []*request
	runs     []span
	inGC     bool
	gcFrom   trace.Time
	gcTime   trace.Time
	gcCycles int
}

func walk(r io.Reader) (*walker, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	w := &walker{gs: map[trace.GoID]*goroutine{}}
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			return w, nil
		}
		if err != nil {
			return nil, err
		}
		if w.t0 == 0 {
			w.t0 = ev.Time()
		}
		w.t1 = ev.Time()
		switch ev.Kind() {
		case trace.EventRangeBegin, trace.EventRangeEnd:
			w.rangeEvent(ev)
		case trace.EventStateTransition:
			if st := ev.StateTransition(); st.Resource.Kind == trace.ResourceGoroutine {
				w.transition(ev, st)
			}
		}
	}
}

func (w *walker) g(id trace.GoID) *goroutine {
	g := w.gs[id]
	if g == nil {
		g = &goroutine{}
		w.gs[id] = g
	}
	return g
}

func (w *walker) rangeEvent(ev trace.Event) {
	rg, now, begin := ev.Range(), ev.Time(), ev.Kind() == trace.EventRangeBegin
	switch {
	case strings.HasPrefix(rg.Name, "GC concurrent mark phase"):
		if begin {
			w.inGC, w.gcFrom = true, now
			w.gcCycles++
			for _, g := range w.gs {
				if g.req != nil {
					g.req.duringGC = true
				}
			}
		} else if w.inGC {
			w.inGC = false
			w.gcTime += now - w.gcFrom
		}
	case rg.Name == "GC mark assist" && rg.Scope.Kind == trace.ResourceGoroutine:
		g := w.g(rg.Scope.Goroutine())
		if begin {
			g.assistFrom = now
		} else if g.assistFrom != 0 {
			if g.req != nil {
				g.req.assist += now - g.assistFrom
			}
			g.assistFrom = 0
		}
	}
}

func (w *walker) transition(ev trace.Event, st trace.StateTransition) {
	now, id := ev.Time(), st.Resource.Goroutine()
	from, to := st.Goroutine()
	g, stk := w.g(id), st.Stack
	if g.startFn == "" && stk != trace.NoStack {
		fs := frames(stk, 0)
		g.startFn = fs[len(fs)-1]
	}
	if has(stk, "net/http.(*conn).serve") {
		g.isConn = true
	}
	if from == trace.GoRunning {
		w.runs = append(w.runs, span{g.startFn, g.since, now})
	}
	if q := g.req; q != nil {
		d := now - g.since
		state := from.String()
		if from == trace.GoWaiting {
			state += " (" + g.reason + ")"
		}
		q.states[state] += d
		if d > 1e6 && (from == trace.GoWaiting || from == trace.GoSyscall) {
			q.waitSites = append(q.waitSites, state+" at "+g.blockedSite)
			wait := fmt.Sprintf("%.2f ms %s at %s", ms(d), state, g.blockedAt)
			if from == trace.GoWaiting {
				wait += "\n        woken by " + strings.Join(frames(ev.Stack(), 8), " < ")
			}
			q.waits = append(q.waits, wait)
		}
		if q.api == "" {
			q.api = apiOf(stk)
		}
	}
	w.boundaries(g, now, from, to, stk)
	if to == trace.GoWaiting || to == trace.GoSyscall {
		g.blockedAt = strings.Join(frames(stk, 12), " < ")
		g.blockedSite = strings.Join(frames(stk, 2), " < ")
	}
	if to == trace.GoWaiting {
		g.reason = st.Reason
	}
	g.since = now
}

// boundaries ends a connection goroutine's request when it reads for the
// next one (bufio Peek in conn.serve) and begins the next when that read
// has data: when the network wakes the goroutine, or at once.
func (w *walker) boundaries(g *goroutine, now trace.Time, from, to trace.GoState, stk trace.Stack) {
	if !g.isConn {
		return
	}
	if has(stk, "bufio.(*Reader).Peek") && has(stk, "(*conn).serve") {
		if g.req != nil && !g.req.tentative {
			g.req.end = now
			w.reqs = append(w.reqs, g.req)
		}
		g.req, g.reading, g.readAt = nil, true, now
		return
	}
	if g.req != nil && g.req.tentative && stk != trace.NoStack {
		g.req.tentative = false
	}
	if !g.reading {
		return
	}
	switch {
	case from == trace.GoWaiting && g.reason == "network":
		g.req, g.reading = w.newRequest(now, false), false
	case from == trace.GoSyscall && to == trace.GoRunning:
		g.req, g.reading = w.newRequest(g.readAt, true), false
	}
}

func (w *walker) newRequest(at trace.Time, tentative bool) *request {
	return &request{begin: at, tentative: tentative, duringGC: w.inGC, states: map[string]trace.Time{}}
}

func (w *walker) report(out io.Writer, top int, only string) {
	dur := w.t1 - w.t0
	fmt.Fprintf(out, "trace of %.1f s: %d GC cycles, a mark phase ran %.0f%% of the time\n\n",
		float64(dur)/1e9, w.gcCycles, 100*float64(w.gcTime)/float64(dur))
	byAPI := map[string][]*request{}
	for _, q := range w.reqs {
		if q.api != "" {
			byAPI[q.api] = append(byAPI[q.api], q)
		}
	}
	names := make([]string, 0, len(byAPI))
	for n := range byAPI {
		names = append(names, n)
	}
	sort.Strings(names)
	var inGC, outGC []trace.Time
	fmt.Fprintln(out, "server-side ms (n, p50, p90, max):")
	for _, n := range names {
		ds := make([]trace.Time, len(byAPI[n]))
		for i, q := range byAPI[n] {
			ds[i] = q.took()
			if strings.Contains(n, only) {
				if q.duringGC {
					inGC = append(inGC, q.took())
				} else {
					outGC = append(outGC, q.took())
				}
			}
		}
		fmt.Fprintf(out, "  %-22s %s\n", n, summary(ds))
	}
	fmt.Fprintf(out, "  %q during a GC mark phase: %s\n", only, summary(inGC))
	fmt.Fprintf(out, "  %q outside:                %s\n", only, summary(outGC))

	sites := map[string]int{}
	for _, q := range w.reqs {
		if strings.Contains(q.api, only) {
			for _, s := range q.waitSites {
				sites[s]++
			}
		}
	}
	fmt.Fprintf(out, "waits over 1 ms in %q requests:\n", only)
	for _, s := range sortedKeys(sites) {
		fmt.Fprintf(out, "  %4d  %s\n", sites[s], s)
	}

	slow := append([]*request(nil), w.reqs...)
	sort.Slice(slow, func(i, j int) bool { return slow[i].took() > slow[j].took() })
	shown := 0
	for _, q := range slow {
		if !strings.Contains(q.api, only) {
			continue
		}
		if shown++; shown > top {
			break
		}
		fmt.Fprintf(out, "\n%s at %.3f s: %.2f ms, GC mark phase %v, assisting GC %.2f ms\n",
			q.api, float64(q.begin-w.t0)/1e9, ms(q.took()), q.duringGC, ms(q.assist))
		states := make([]string, 0, len(q.states))
		for s := range q.states {
			states = append(states, s)
		}
		sort.Strings(states)
		for _, s := range states {
			if q.states[s] >= 50e3 {
				fmt.Fprintf(out, "    %-28s %6.2f ms\n", s, ms(q.states[s]))
			}
		}
		for _, wt := range q.waits {
			fmt.Fprintln(out, "    "+wt)
		}
		fmt.Fprintf(out, "    meanwhile the server ran: %s\n", w.ranBetween(q.begin, q.end))
	}
}

func summary(ds []trace.Time) string {
	if len(ds) == 0 {
		return "none"
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return fmt.Sprintf("%4d  %6.2f %6.2f %6.2f", len(ds), ms(ds[len(ds)/2]), ms(ds[len(ds)*9/10]), ms(ds[len(ds)-1]))
}

func ms(t trace.Time) float64 { return float64(t) / 1e6 }

func frames(s trace.Stack, n int) []string {
	var out []string
	for f := range s.Frames() {
		out = append(out, f.Func)
		if n > 0 && len(out) == n {
			break
		}
	}
	if len(out) == 0 {
		out = append(out, "?")
	}
	return out
}

func has(s trace.Stack, fn string) bool {
	for f := range s.Frames() {
		if strings.Contains(f.Func, fn) {
			return true
		}
	}
	return false
}

func apiOf(s trace.Stack) string {
	for f := range s.Frames() {
		for _, a := range apis {
			if strings.Contains(f.Func, a.fn) {
				return a.name
			}
		}
	}
	return ""
}

// sortedKeys lists m's keys, most frequent first.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	return keys
}
