package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/sampling"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// rememberedDecisions bounds the sampling decisions kept for search
// results (~60 B each).
const rememberedDecisions = 200_000

// withSampling turns tail sampling on when configured: the pipeline
// decides after analysis and the engine drops what is not kept.
func (s *Server) withSampling(p *pipeline, b sampling.Baselines, eng *engine.Engine) {
	sc := s.cfg.Sampling
	if !sc.Enabled {
		return
	}
	p.sampler = sampling.New(sampling.Policy{KeepErrors: sc.KeepErrors, KeepFindings: analyze.Severity(sc.KeepFindings),
		KeepSlowerThan: sc.KeepSlowerThan, Rate: sc.Rate, EndpointRates: sc.EndpointRates, MinPerMinute: sc.MinPerMinute,
		MaxFindingTracesPerMinute: sc.MaxFindingTracesPerMinute}, b, rememberedDecisions, s.reg)
	p.decide = eng.Decide
	p.storedReason = eng.SampledReason
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_store_sampled_out_traces_total",
		Help: "Traces (or late fragments) compaction took out of the kept blocks because sampling dropped them: into blocks that expire after retention.traces, or removed when that is 0."},
		func() float64 { return float64(eng.Stats().DroppedTracesTotal) }))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_store_unkept_block_bytes",
		Help: "Bytes of blocks holding the traces sampling did not keep, deleted after retention.traces (part of the block bytes)."},
		func() float64 { return float64(eng.Stats().UnkeptBlockBytes) }))
}

// sampledReason is the API's view of a trace's sampling decision: the
// sampler's memory of recent decisions, else what the store recorded.
func (p *pipeline) sampledReason(id model.TraceID) string {
	if p.sampler == nil {
		return ""
	}
	if r := p.sampler.Reason(id); r != "" {
		return string(r)
	}
	if p.storedReason != nil {
		return p.storedReason(id)
	}
	return ""
}

// hasTrace tells the findings API whether a finding's trace is still
// stored (the store opens after the findings store).
func (s *Server) hasTrace(id model.TraceID) bool {
	st, ok := s.store.(interface{ HasTrace(model.TraceID) bool })
	return !ok || st.HasTrace(id)
}
