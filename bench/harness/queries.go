package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// queryStats are latencies of queries through the Jaeger v1 HTTP API,
// which tracedx, Jaeger and VictoriaTraces all serve.
type queryStats struct {
	Rounds      int     `json:"rounds"`
	Failed      int     `json:"failed"`
	SearchP50Ms float64 `json:"search_p50_ms"`
	SearchP99Ms float64 `json:"search_p99_ms"`
	TraceP50Ms  float64 `json:"trace_by_id_p50_ms"`
	TraceP99Ms  float64 `json:"trace_by_id_p99_ms"`
	// Tempo API search by service (tracedx only, 20 results).
	TempoSearchP50Ms float64 `json:"tempo_search_p50_ms,omitempty"`
	TempoSearchP99Ms float64 `json:"tempo_search_p99_ms,omitempty"`
}

// probeQueries waits delay, then for dur runs rounds 100 ms apart: a
// search by service for the 20 newest traces, then one of those traces by
// id. base is the Jaeger API root (…/api is appended). With tempoBase
// set, each round also searches the same service through the Tempo API.
func probeQueries(base, tempoBase string, delay, dur time.Duration) queryStats {
	time.Sleep(delay)
	client := &http.Client{Timeout: 10 * time.Second}
	var st queryStats
	var search, trace, tempo []time.Duration
	svc := ""
	end := time.Now().Add(dur)
	for ; time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if svc == "" {
			var svcs struct{ Data []string }
			if _, err := getJSON(client, base+"/api/services", &svcs); err != nil || len(svcs.Data) == 0 {
				continue
			}
			slices.Sort(svcs.Data)
			svc = svcs.Data[0]
		}
		st.Rounds++
		var found struct {
			Data []struct {
				TraceID string `json:"traceID"`
			}
		}
		took, err := getJSON(client, base+"/api/traces?limit=20&lookback=1h&service="+url.QueryEscape(svc), &found)
		if err != nil || len(found.Data) == 0 {
			st.Failed++
			continue
		}
		search = append(search, took)
		id := found.Data[st.Rounds%len(found.Data)].TraceID
		if took, err = getJSON(client, base+"/api/traces/"+id, nil); err != nil {
			st.Failed++
			continue
		}
		trace = append(trace, took)
		if tempoBase != "" {
			q := url.QueryEscape(fmt.Sprintf("{ resource.service.name = %q }", svc))
			if took, err = getJSON(client, tempoBase+"/api/search?limit=20&q="+q, nil); err != nil {
				st.Failed++
				continue
			}
			tempo = append(tempo, took)
		}
	}
	st.TempoSearchP50Ms, st.TempoSearchP99Ms = percentiles(tempo)
	st.SearchP50Ms, st.SearchP99Ms = percentiles(search)
	st.TraceP50Ms, st.TraceP99Ms = percentiles(trace)
	return st
}

func getJSON(c *http.Client, u string, into any) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			return 0, fmt.Errorf("GET %s: %w", u, err)
		}
	}
	return took, nil
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
