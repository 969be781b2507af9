package analyze

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// PoisonMessage finds one message consumed and failing again and again,
// often ending in a dead-letter destination.
type PoisonMessage struct {
	MinFailedAttempts int `yaml:"min_failed_attempts"`
}

// NewPoisonMessage returns the detector with docs/patterns.md defaults.
func NewPoisonMessage() *PoisonMessage { return &PoisonMessage{MinFailedAttempts: 2} }

func init() { Register(func() Detector { return NewPoisonMessage() }) }

// Kind implements Detector.
func (*PoisonMessage) Kind() string { return "poison_message" }

// ConsumeAttempt is one delivery of the message.
type ConsumeAttempt struct {
	SpanRef
	Failed bool   `json:"failed"`
	Error  string `json:"error,omitempty"`
}

// DeadLetter is where the message ended.
type DeadLetter struct {
	Destination string  `json:"destination"`
	Span        SpanRef `json:"span"`
}

// PoisonMessageEvidence is the evidence of a poison_message finding.
type PoisonMessageEvidence struct {
	MessageInfo
	Consumer       string           `json:"consumer"`
	Attempts       []ConsumeAttempt `json:"attempts"`
	FailedAttempts int              `json:"failed_attempts"`
	Error          string           `json:"error"`
	DeadLetter     *DeadLetter      `json:"dead_letter,omitempty"`
	// Recovered: a later attempt succeeded.
	Recovered bool `json:"recovered"`
	// FailingCall: the call under the failed attempts that failed them,
	// when they failed because of it.
	FailingCall *SpanRef `json:"failing_call,omitempty"`
}

// isDeadLetter recognises dead-letter and parking destinations by the
// names Kafka (Spring's ".DLT"), RabbitMQ, SQS and Service Bus use.
func isDeadLetter(dest string) bool {
	d := strings.ToLower(dest)
	for _, w := range []string{"dlq", "dlt", "dlx", "dead-letter", "deadletter", "dead_letter", "dead.letter", "parking-lot", "parkinglot", "poison"} {
		if strings.Contains(d, w) {
			return true
		}
	}
	return false
}

// Detect implements Detector. Deliveries of one message are recognised by
// messaging.message.id (with the destination), else by the producer span
// they came from (parent or link), else by destination, partition and
// offset. Critical when the message was dead-lettered or never processed,
// warning when a later attempt succeeded. impact_ms is the consumer time
// the failed attempts burned (they run asynchronously to the request).
func (d *PoisonMessage) Detect(t *Trace, _ *Env) []Finding {
	type group struct {
		info     MessageInfo
		msg      string // the message's identity across destinations
		attempts []*Node
	}
	groups := map[string]*group{}
	var keys []string
	// A consumer of a dead-letter queue receives the message after the
	// broker dead-lettered it: that delivery ends the story, it is no
	// attempt (its success is no recovery).
	deadLetters := map[string]*Node{}
	for _, n := range t.Nodes {
		if n.Span.Kind != model.KindConsumer {
			continue
		}
		// The "process" span under a "receive" span is the same delivery.
		if n.Parent != nil && n.Parent.Span.Kind == model.KindConsumer && n.Parent.Span.Service == n.Span.Service {
			continue
		}
		info := messageInfo(n.Span)
		var k, msg string
		switch p, _ := producerOf(t, n); {
		case info.MessageID != "":
			k, msg = "id|"+info.Destination+"|"+info.MessageID, "id|"+info.MessageID
		case p != nil:
			k = "producer|" + p.Span.SpanID.String()
			msg = k
			if info.Destination == "" {
				info.Destination = messageInfo(p.Span).Destination
			}
		case info.Offset != "":
			k = "offset|" + info.Destination + "|" + info.Partition + "|" + info.Offset
		default:
			continue
		}
		if deadLetterDest(n) != "" {
			if msg != "" && deadLetters[msg] == nil {
				deadLetters[msg] = n
			}
			continue
		}
		k += "|" + n.Span.Service
		g := groups[k]
		if g == nil {
			g = &group{info: info, msg: msg}
			groups[k] = g
			keys = append(keys, k)
		}
		g.attempts = append(g.attempts, n)
	}
	var out []Finding
	for _, k := range keys {
		g := groups[k]
		failed := 0
		for _, a := range g.attempts {
			if consumeFailed(a) {
				failed++
			}
		}
		if failed < max(d.MinFailedAttempts, 1) {
			continue
		}
		sort.SliceStable(g.attempts, func(i, j int) bool { return g.attempts[i].Start() < g.attempts[j].Start() })
		ev := PoisonMessageEvidence{MessageInfo: g.info, Consumer: g.attempts[0].Span.Service, FailedAttempts: failed}
		var ids []string
		var burned []*Node
		for _, a := range g.attempts {
			at := ConsumeAttempt{SpanRef: RefOf(t, a), Failed: consumeFailed(a)}
			if at.Failed {
				at.Error = consumeErrorText(a)
				ev.Error = at.Error
				burned = append(burned, a)
			} else {
				ev.Recovered = true
			}
			ev.Attempts = append(ev.Attempts, at)
			ids = append(ids, a.Span.SpanID.String())
		}
		dl := findDeadLetter(g.attempts)
		if dl == nil {
			dl = deadLetters[g.msg]
		}
		if dl != nil {
			ev.DeadLetter = &DeadLetter{Destination: deadLetterDest(dl), Span: RefOf(t, dl)}
			ids = append(ids, dl.Span.SpanID.String())
		}
		var wasted uint64
		var hi uint64
		for _, b := range burned { // sorted by start: union of intervals
			s, e := max(b.Start(), hi), b.End()
			if e > s {
				wasted += e - s
			}
			hi = max(hi, e)
		}
		sev := SeverityCritical
		if ev.Recovered && ev.DeadLetter == nil {
			sev = SeverityWarning
		}
		if ev.Recovered {
			if c := failingCallUnder(burned[0]); c != nil {
				r := RefOf(t, c)
				ev.FailingCall = &r
				// The failure the call brought back is this finding's to
				// tell (an error_origin on it only points here).
				ids = append(ids, c.Span.SpanID.String())
				if e := calleeEntry(c); e != nil {
					ids = append(ids, e.Span.SpanID.String())
				}
			}
		}
		dest := nonEmpty(g.info.Destination, "a message")
		title := fmt.Sprintf("%s failed %d times on the same message from %s", ev.Consumer, failed, dest)
		if ev.Recovered && ev.DeadLetter == nil {
			title += " before a redelivery succeeded"
		}
		if ev.DeadLetter != nil {
			title += ", then it was dead-lettered to " + nonEmpty(ev.DeadLetter.Destination, "a dead-letter queue")
		}
		if ev.Error != "" {
			title += " (" + model.Clip(ev.Error, 80) + ")"
		}
		fix := "Retrying cannot fix a message that fails deterministically: classify the error as non-retryable, " +
			"dead-letter it on the first such failure, and fix the producer or the consumer's parsing/validation."
		if ev.Recovered && ev.DeadLetter == nil {
			// A later delivery of the same message succeeded: the message
			// is fine, the failures were transient.
			fix = "A later delivery of the same message succeeded, so the failures were transient, not the message: "
			if ev.FailingCall != nil {
				svc, op := CallTarget(t, refNode(t, ev.FailingCall))
				fix += "find why " + strings.TrimSpace(svc+" "+op) + " failed, and "
			}
			fix += "retry such errors in the consumer with a backoff (or a delayed redelivery) instead of an immediate requeue."
		} else if ev.DeadLetter != nil {
			fix += " Inspect and replay " + ev.DeadLetter.Destination + " once fixed."
		} else if !ev.Recovered {
			fix += " Configure a dead-letter destination so the message stops blocking its partition."
		}
		out = append(out, Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(wasted),
			Evidence: ev, Fix: fix})
	}
	return out
}

// consumeFailed: the delivery or the processing under it failed.
func consumeFailed(n *Node) bool {
	if Failed(n) {
		return true
	}
	for _, c := range n.Children {
		if c.Span.Kind == model.KindConsumer && c.Span.Service == n.Span.Service && Failed(c) {
			return true
		}
	}
	return false
}

func consumeErrorText(n *Node) string {
	typ, msg := ExceptionOf(n.Span)
	if typ == "" && msg == "" {
		for _, c := range n.Children {
			if Failed(c) {
				typ, msg = ExceptionOf(c.Span)
				break
			}
		}
	}
	return model.Clip(strings.Trim(typ+": "+msg, ": "), 200)
}

// deadLetterDest returns the dead-letter destination a PRODUCER or
// CONSUMER span sends to or receives from, or "". A consumer's queue may
// show only in its span name, and names the place better than the
// destination then: OpenTelemetry JS's amqplib names it "<queue> process"
// and records the exchange the broker dead-lettered through as its
// destination.
func deadLetterDest(n *Node) string {
	if n.Span.Kind != model.KindProducer && n.Span.Kind != model.KindConsumer {
		return ""
	}
	if n.Span.Kind == model.KindConsumer {
		for _, w := range strings.Fields(n.Span.Name) {
			if isDeadLetter(w) {
				return w
			}
		}
	}
	if d := messageInfo(n.Span).Destination; isDeadLetter(d) {
		return d
	}
	return ""
}

// failingCallUnder returns the failed call that failed attempt n: the
// first failed call under it, followed down through the failed calls
// under that call to the deepest one.
func failingCallUnder(n *Node) *Node {
	var found *Node
	stack := []*Node{n}
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if m != n && IsCall(m) && Failed(m) {
			found = m
			stack = stack[:0]
		}
		for i := len(m.Children) - 1; i >= 0; i-- {
			stack = append(stack, m.Children[i])
		}
	}
	return found
}

// findDeadLetter looks for a PRODUCER span to a dead-letter destination
// under the attempts or next to them.
func findDeadLetter(attempts []*Node) *Node {
	var found *Node
	check := func(n *Node) {
		if found == nil && n.Span.Kind == model.KindProducer && deadLetterDest(n) != "" {
			found = n
		}
	}
	for i := len(attempts) - 1; i >= 0 && found == nil; i-- {
		stack := []*Node{attempts[i]}
		for len(stack) > 0 && found == nil {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			check(n)
			stack = append(stack, n.Children...)
		}
	}
	if found == nil && attempts[0].Parent != nil {
		for _, s := range attempts[0].Parent.Children {
			check(s)
		}
	}
	return found
}
