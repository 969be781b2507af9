package red

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Prometheus names and labels follow Tempo's metrics-generator span
// metrics, which Grafana's service overview queries.
var (
	callsDesc = prometheus.NewDesc("traces_spanmetrics_calls_total",
		"Spans received, by service, span name, kind and status.",
		[]string{"service", "span_name", "span_kind", "status_code"}, nil)
	latencyDesc = prometheus.NewDesc("traces_spanmetrics_latency",
		"Span duration in seconds.",
		[]string{"service", "span_name", "span_kind", "status_code"}, nil)
	sizeDesc = prometheus.NewDesc("traces_spanmetrics_size_total",
		"Bytes of spans received (their OTLP protobuf size), by service, span name, kind and status.",
		[]string{"service", "span_name", "span_kind", "status_code"}, nil)
)

// DefaultExemplarLabel is the exemplar label holding the trace id, the
// name Tempo's metrics-generator writes and Grafana links from.
const DefaultExemplarLabel = "traceID"

// PromSpanKind renders a kind as the span_kind label value.
func PromSpanKind(k model.SpanKind) string {
	switch k {
	case model.KindInternal:
		return "SPAN_KIND_INTERNAL"
	case model.KindServer:
		return "SPAN_KIND_SERVER"
	case model.KindClient:
		return "SPAN_KIND_CLIENT"
	case model.KindProducer:
		return "SPAN_KIND_PRODUCER"
	case model.KindConsumer:
		return "SPAN_KIND_CONSUMER"
	}
	return "SPAN_KIND_UNSPECIFIED"
}

var statusLabels = [3]string{"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- callsDesc
	ch <- latencyDesc
	ch <- sizeDesc
}

// Collect implements prometheus.Collector: cumulative counters since start.
// Serve with promhttp.HandlerOpts{EnableOpenMetrics: true} to expose the
// exemplars.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.st.EachExt(func(k tsdb.Key, e *promState) {
		kind := PromSpanKind(model.SpanKind(k.K))
		for st := 0; st < 3; st++ {
			if e.calls[st] == 0 {
				continue
			}
			labels := []string{k.A, k.B, kind, statusLabels[st]}
			c := prometheus.MustNewConstMetric(callsDesc, prometheus.CounterValue, float64(e.calls[st]), labels...)
			if last, ok := latestExemplar(&e.ex[st]); ok {
				c = withExemplars(c, []prometheus.Exemplar{m.promExemplar(last)})
			}
			ch <- c
			ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.CounterValue, float64(e.bytes[st]), labels...)
			buckets := make(map[float64]uint64, tsdb.NumProm-1)
			var cum uint64
			exs := make([]prometheus.Exemplar, 0, 4)
			for i := 0; i < tsdb.NumProm; i++ {
				cum += e.buckets[st][i]
				if i < tsdb.NumProm-1 {
					buckets[tsdb.PromBoundSeconds(i)] = cum
				}
				if !e.ex[st][i].trace.IsZero() {
					exs = append(exs, m.promExemplar(e.ex[st][i]))
				}
			}
			h := prometheus.MustNewConstHistogram(latencyDesc, e.calls[st], float64(e.sumUS[st])/1e6, buckets, labels...)
			ch <- withExemplars(h, exs)
		}
	})
}

func latestExemplar(ex *[tsdb.NumProm]exemplar) (exemplar, bool) {
	var best exemplar
	for _, e := range ex {
		if !e.trace.IsZero() && e.ns >= best.ns {
			best = e
		}
	}
	return best, !best.trace.IsZero()
}

func (m *Metrics) promExemplar(e exemplar) prometheus.Exemplar {
	return prometheus.Exemplar{
		Value:     float64(e.us) / 1e6,
		Labels:    prometheus.Labels{m.opt.ExemplarLabel: e.trace.String()},
		Timestamp: time.Unix(0, int64(e.ns)),
	}
}

// withExemplars attaches exemplars, keeping the plain metric if the
// library rejects them (it validates label length), so one odd exemplar
// never drops a series.
func withExemplars(m prometheus.Metric, exs []prometheus.Exemplar) prometheus.Metric {
	if len(exs) == 0 {
		return m
	}
	mm, err := prometheus.NewMetricWithExemplars(m, exs...)
	if err != nil {
		return m
	}
	return mm
}
