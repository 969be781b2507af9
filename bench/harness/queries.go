package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// queryStats are latencies of queries during one probe. The top-level
// fields are the Jaeger v1 HTTP API's, which tracedx, Jaeger and
// VictoriaTraces all serve; APIs has every API probed (tracedx: also
// Jaeger api_v3, Tempo and /api/v1), keyed by method and path.
type queryStats struct {
	Rounds      int     `json:"rounds"`
	Failed      int     `json:"failed"`
	SearchP50Ms float64 `json:"search_p50_ms"`
	SearchP99Ms float64 `json:"search_p99_ms"`
	TraceP50Ms  float64 `json:"trace_by_id_p50_ms"`
	TraceP99Ms  float64 `json:"trace_by_id_p99_ms"`
	// Tempo API search by service (tracedx only, 20 results).
	TempoSearchP50Ms float64               `json:"tempo_search_p50_ms,omitempty"`
	TempoSearchP99Ms float64               `json:"tempo_search_p99_ms,omitempty"`
	APIs             map[string]apiLatency `json:"apis,omitempty"`
}

// apiLatency is one API's share of a probe.
type apiLatency struct {
	N      int     `json:"n"`
	Failed int     `json:"failed,omitempty"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
}

// queryProbe is one API call of a round: a search by service (20
// results) or a trace by id.
type queryProbe struct {
	name   string
	search bool
	url    func(svc, id string, now time.Time) string
}

const (
	jaegerSearch = "jaeger GET /api/traces?service"
	jaegerTrace  = "jaeger GET /api/traces/{id}"
	tempoSearch  = "tempo GET /api/search"
)

// tracedxProbes are the APIs tracedx serves besides Jaeger v1: the
// Jaeger api_v3, Tempo (under tempoBase) and tracedx's own /api/v1.
func tracedxProbes(base, tempoBase string) []queryProbe {
	rfc := func(t time.Time) string { return url.QueryEscape(t.UTC().Format(time.RFC3339Nano)) }
	return []queryProbe{
		{"jaeger GET /api/v3/traces?service", true, func(svc, _ string, now time.Time) string {
			return base + "/api/v3/traces?query.num_traces=20&query.service_name=" + url.QueryEscape(svc) +
				"&query.start_time_min=" + rfc(now.Add(-time.Hour)) + "&query.start_time_max=" + rfc(now)
		}},
		{"jaeger GET /api/v3/traces/{id}", false, func(_, id string, _ time.Time) string { return base + "/api/v3/traces/" + id }},
		{tempoSearch, true, func(svc, _ string, _ time.Time) string {
			return tempoBase + "/api/search?limit=20&q=" + url.QueryEscape(fmt.Sprintf("{ resource.service.name = %q }", svc))
		}},
		{"tempo GET /api/traces/{id}", false, func(_, id string, _ time.Time) string { return tempoBase + "/api/traces/" + id }},
		{"tempo GET /api/v2/traces/{id}", false, func(_, id string, _ time.Time) string { return tempoBase + "/api/v2/traces/" + id }},
		{"tracedx GET /api/v1/search?service", true, func(svc, _ string, _ time.Time) string {
			return base + "/api/v1/search?limit=20&service=" + url.QueryEscape(svc)
		}},
		{"tracedx GET /api/v1/traces/{id}", false, func(_, id string, _ time.Time) string { return base + "/api/v1/traces/" + id }},
	}
}

// probeQueries waits delay, then for dur runs rounds 100 ms apart: a
// search by service for the 20 newest traces through the Jaeger v1 API
// (base, …/api is appended), then one of those traces by id through it,
// then, with tempoBase set (tracedx), every other API of tracedxProbes in
// a random order, each trace-by-id call on a different one of the found
// traces so that no call reads pages the one before it just cached.
//
// With probeLog set, every call is also written there as a line
// "phase round name monotonic_start_ns ms wrote_ms first_byte_ms", to line probes up with a
// runtime trace of the server (whose clock is CLOCK_MONOTONIC too).
func probeQueries(base, tempoBase string, delay, dur time.Duration, phase string, probeLog io.Writer) queryStats {
	time.Sleep(delay)
	client := &prober{c: &http.Client{Timeout: 10 * time.Second}, log: probeLog, phase: phase}
	probes := []queryProbe{{jaegerTrace, false, func(_, id string, _ time.Time) string { return base + "/api/traces/" + id }}}
	if tempoBase != "" {
		probes = append(probes, tracedxProbes(base, tempoBase)...)
	}
	var st queryStats
	took := map[string][]time.Duration{}
	failed := map[string]int{}
	svc := ""
	end := time.Now().Add(dur)
	for ; time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if svc == "" {
			var svcs struct{ Data []string }
			if _, err := client.getJSON("services", base+"/api/services", &svcs); err != nil || len(svcs.Data) == 0 {
				continue
			}
			slices.Sort(svcs.Data)
			svc = svcs.Data[0]
		}
		st.Rounds++
		client.round = st.Rounds
		var found struct {
			Data []struct {
				TraceID string `json:"traceID"`
			}
		}
		d, err := client.getJSON(jaegerSearch, base+"/api/traces?limit=20&lookback=1h&service="+url.QueryEscape(svc), &found)
		if err != nil || len(found.Data) == 0 {
			st.Failed++
			failed[jaegerSearch]++
			continue
		}
		took[jaegerSearch] = append(took[jaegerSearch], d)
		rand.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
		for k, p := range probes {
			id := found.Data[(st.Rounds*len(probes)+k)%len(found.Data)].TraceID
			d, err := client.getJSON(p.name, p.url(svc, id, time.Now()), nil)
			if err != nil {
				st.Failed++
				failed[p.name]++
				continue
			}
			took[p.name] = append(took[p.name], d)
		}
	}
	st.APIs = map[string]apiLatency{}
	for name, ds := range took {
		l := apiLatency{N: len(ds), Failed: failed[name]}
		l.P50Ms, l.P99Ms = percentiles(ds)
		st.APIs[name] = l
	}
	for name, n := range failed {
		if _, ok := took[name]; !ok {
			st.APIs[name] = apiLatency{Failed: n}
		}
	}
	st.SearchP50Ms, st.SearchP99Ms = st.APIs[jaegerSearch].P50Ms, st.APIs[jaegerSearch].P99Ms
	st.TraceP50Ms, st.TraceP99Ms = st.APIs[jaegerTrace].P50Ms, st.APIs[jaegerTrace].P99Ms
	st.TempoSearchP50Ms, st.TempoSearchP99Ms = st.APIs[tempoSearch].P50Ms, st.APIs[tempoSearch].P99Ms
	return st
}

// prober is the probing client. It reads every body into one reused
// buffer: reading each (searches return 20 whole traces, ~0.5 MB) into a
// new one made the harness collect its small heap several times a second,
// and a probe that met one of its stop-the-world pauses counted it as the
// server's latency.
type prober struct {
	c     *http.Client
	body  bytes.Buffer
	log   io.Writer
	phase string
	round int
}

func (p *prober) getJSON(name, u string, into any) (time.Duration, error) {
	mono := monotonicNanos()
	start := time.Now()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	// When the request was on the socket and when the first byte came
	// back tell the client's share of a slow probe from the server's.
	var wrote, firstByte time.Duration
	if p.log != nil {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest:         func(httptrace.WroteRequestInfo) { wrote = time.Since(start) },
			GotFirstResponseByte: func() { firstByte = time.Since(start) },
		}))
	}
	resp, err := p.c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p.body.Reset()
	_, err = p.body.ReadFrom(resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if p.log != nil {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
		fmt.Fprintf(p.log, "%s %d %q %d %.3f %.3f %.3f\n", p.phase, p.round, name, mono, ms(took), ms(wrote), ms(firstByte))
	}
	if into != nil {
		if err := json.Unmarshal(p.body.Bytes(), into); err != nil {
			return 0, fmt.Errorf("GET %s: %w", u, err)
		}
	}
	return took, nil
}

// monotonicNanos is CLOCK_MONOTONIC, the clock of Go's runtime traces.
func monotonicNanos() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1e3 }
	return ms(d[len(d)/2]), ms(d[len(d)*99/100])
}

// jaegerConfig is a Jaeger v2 all-in-one configuration with in-memory
// storage on the given addresses.
func jaegerConfig(grpcAddr, httpAddr, queryAddr string) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
extensions:
  jaeger_query:
    # Off: it would trace its own queries to localhost:4317, another
    # server's port or none.
    enable_tracing: false
    storage:
      traces: mem
    http:
      endpoint: %q
    grpc:
      endpoint: 127.0.0.1:0
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`, queryAddr, grpcAddr, httpAddr)
}
