package analyze

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// ConsumerLag finds messages produced and consumed in the same trace that
// waited long in the broker between the end of the produce and the start of
// the consume.
type ConsumerLag struct {
	MinLagMS float64 `yaml:"min_lag_ms"`
	// CriticalFactor: lag ≥ MinLagMS × CriticalFactor is critical.
	CriticalFactor float64 `yaml:"critical_factor"`
}

// NewConsumerLag returns the detector with docs/patterns.md defaults.
func NewConsumerLag() *ConsumerLag { return &ConsumerLag{MinLagMS: 1000, CriticalFactor: 10} }

func init() { Register(func() Detector { return NewConsumerLag() }) }

// Kind implements Detector.
func (*ConsumerLag) Kind() string { return "consumer_lag" }

// MessageInfo describes where a message went.
type MessageInfo struct {
	System        string `json:"system,omitempty"`
	Destination   string `json:"destination"`
	Partition     string `json:"partition,omitempty"`
	Offset        string `json:"offset,omitempty"`
	ConsumerGroup string `json:"consumer_group,omitempty"`
	MessageID     string `json:"message_id,omitempty"`
}

// ConsumerLagEvidence is the evidence of a consumer_lag finding.
type ConsumerLagEvidence struct {
	MessageInfo
	Producer     SpanRef `json:"producer"`
	Consumer     SpanRef `json:"consumer"`
	LagMS        float64 `json:"lag_ms"`
	ProcessingMS float64 `json:"processing_ms"`
	Via          string  `json:"via"` // "parent" or "link"
}

func messageInfo(s *model.Span) MessageInfo {
	return MessageInfo{
		System:      s.Attrs.Str("messaging.system"),
		Destination: MessageDestination(s),
		Partition: s.Attrs.Str("messaging.destination.partition.id", "messaging.kafka.destination.partition",
			"messaging.kafka.partition"),
		Offset:        s.Attrs.Str("messaging.kafka.offset", "messaging.kafka.message.offset"),
		ConsumerGroup: s.Attrs.Str("messaging.consumer.group.name", "messaging.kafka.consumer.group", "messaging.kafka.consumer_group"),
		MessageID:     s.Attrs.Str("messaging.message.id", "messaging.message_id"),
	}
}

// producerOf returns the producer a consumer span received its message
// from: its parent when that is a PRODUCER span, else the first PRODUCER
// span in the trace it links to.
func producerOf(t *Trace, n *Node) (*Node, string) {
	if n.Span.Kind != model.KindConsumer {
		return nil, ""
	}
	if p := n.Parent; p != nil && p.Span.Kind == model.KindProducer {
		return p, "parent"
	}
	for i := range n.Span.Links {
		l := &n.Span.Links[i]
		if l.TraceID != n.Span.TraceID && !l.TraceID.IsZero() {
			continue
		}
		if p, ok := t.ByID[l.SpanID]; ok && p != n && p.Span.Kind == model.KindProducer {
			return p, "link"
		}
	}
	return nil, ""
}

// Detect implements Detector. impact_ms is the lag itself: the consumer
// runs asynchronously, so the producer's critical path does not contain
// it, but the work the message stands for finished that much later.
func (d *ConsumerLag) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	// Redeliveries of one message to one consumer wait for a back-off, not
	// for the broker: only the first delivery measures lag.
	type key struct {
		producer model.SpanID
		service  string
	}
	first := map[key]*Node{}
	for _, c := range t.Nodes {
		if p, _ := producerOf(t, c); p != nil {
			k := key{p.Span.SpanID, c.Span.Service}
			if f := first[k]; f == nil || c.Start() < f.Start() {
				first[k] = c
			}
		}
	}
	for _, c := range t.Nodes {
		p, via := producerOf(t, c)
		if p == nil || c.Start() <= p.End() || first[key{p.Span.SpanID, c.Span.Service}] != c {
			continue
		}
		lag := c.Start() - p.End()
		if NS(lag) < d.MinLagMS {
			continue
		}
		info := messageInfo(c.Span)
		pi := messageInfo(p.Span)
		if info.Destination == "" {
			info.Destination = pi.Destination
		}
		if info.System == "" {
			info.System = pi.System
		}
		if info.Partition == "" {
			info.Partition = pi.Partition
		}
		if info.Offset == "" {
			info.Offset = pi.Offset
		}
		if info.MessageID == "" {
			info.MessageID = pi.MessageID
		}
		ev := ConsumerLagEvidence{MessageInfo: info, Producer: RefOf(t, p), Consumer: RefOf(t, c), LagMS: roundMS(lag),
			ProcessingMS: roundMS(c.Duration()), Via: via}
		sev := SeverityWarning
		if d.CriticalFactor > 0 && NS(lag) >= d.MinLagMS*d.CriticalFactor {
			sev = SeverityCritical
		}
		where := nonEmpty(info.Destination, "the queue")
		if info.Partition != "" {
			where += " partition " + info.Partition
		}
		title := fmt.Sprintf("message waited %s in %s before %s consumed it (processing took %s)", fmtDur(lag), where,
			c.Span.Service, fmtDur(c.Duration()))
		fix := fmt.Sprintf("The consumer %s is behind: check its lag on %s, add consumers or partitions, speed up or batch its processing, "+
			"and look for a stuck partition or a rebalance.", nonEmpty(info.ConsumerGroup, c.Span.Service), where)
		out = append(out, Finding{Kind: d.Kind(), Severity: sev, Title: title,
			SpanIDs:  []string{p.Span.SpanID.String(), c.Span.SpanID.String()},
			ImpactMS: roundMS(lag), Evidence: ev, Fix: fix})
	}
	return out
}
