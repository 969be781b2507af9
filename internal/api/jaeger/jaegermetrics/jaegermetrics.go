// Package jaegermetrics holds the JSON shape of Jaeger's metrics API
// (/api/metrics/{latencies|calls|errors}): its protobuf MetricFamily as
// JSON, which the UI's Monitor tab reads. It is a leaf package so that the
// HTTP layer (internal/api/jaeger) and the RED component (internal/red)
// share one type without either importing the other.
package jaegermetrics

// MetricFamily is the response body, written without the {"data":…}
// envelope of the other v1 endpoints.
type MetricFamily struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Help    string   `json:"help"`
	Metrics []Metric `json:"metrics"`
}

// Metric is one labelled series (labels service_name and, grouped by
// operation, operation).
type Metric struct {
	Labels       []Label       `json:"labels"`
	MetricPoints []MetricPoint `json:"metricPoints"`
}

// Label is a series label.
type Label struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// MetricPoint is one sample; Timestamp is RFC 3339.
type MetricPoint struct {
	GaugeValue GaugeValue `json:"gaugeValue"`
	Timestamp  string     `json:"timestamp"`
}

// GaugeValue holds the value; nil (JSON null) means "no data at this
// step", which the UI draws as a gap.
type GaugeValue struct {
	DoubleValue *float64 `json:"doubleValue"`
}

// Gauge returns a GaugeValue holding v.
func Gauge(v float64) GaugeValue { return GaugeValue{DoubleValue: &v} }
