package analyze

import (
	"strings"
	"testing"
)

func TestLoadDetectorConfig(t *testing.T) {
	ds, err := LoadDetectorConfig([]byte(`
consumer_lag:
  min_lag_ms: 5000
cache_miss: {min_fallback_ms: 120}
instrumentation_gap: false
`))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]Detector{}
	for _, d := range ds {
		kinds[d.Kind()] = d
	}
	if _, ok := kinds["instrumentation_gap"]; ok {
		t.Errorf("instrumentation_gap should be off")
	}
	if got := kinds["consumer_lag"].(*ConsumerLag); got.MinLagMS != 5000 || got.CriticalFactor != 10 {
		t.Errorf("consumer_lag %+v (unset fields keep defaults)", got)
	}
	if got := kinds["cache_miss"].(*CacheMiss); got.MinFallbackMS != 120 {
		t.Errorf("cache_miss %+v", got)
	}
	if len(ds) != len(DefaultDetectors())-1 {
		t.Errorf("%d detectors", len(ds))
	}
	// The thresholds take effect: a 3.2 s lag is below 5 s.
	res := Analyze(loadSpans(t, "../../testdata/traces/consumer_lag/positive-rabbitmq-email-old-semconv.json"), Options{Detectors: ds})
	if len(ofKind(res.Findings, "consumer_lag")) != 0 {
		t.Errorf("threshold not applied")
	}
}

func TestLoadDetectorConfigErrors(t *testing.T) {
	for doc, want := range map[string]string{
		"slow_querry:\n  min_duration_ms: 1\n": `unknown kind "slow_querry"`,
		"consumer_lag:\n  min_lag: 1\n":        "field min_lag not found",
		"consumer_lag:\n  min_lag_ms: soon\n":  "consumer_lag",
		"- a\n- b\n":                           "mapping",
		"consumer_lag: maybe\n":                "want thresholds or false",
		"a: [":                                 "detector config",
	} {
		_, err := LoadDetectorConfig([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", doc, err, want)
		}
	}
	if ds, err := LoadDetectorConfig(nil); err != nil || len(ds) != len(DefaultDetectors()) {
		t.Errorf("empty config: %d, %v", len(ds), err)
	}
}
