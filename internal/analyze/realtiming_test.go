package analyze

import (
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Real SDKs do not hand out the exact times a fixture builder writes. These
// transforms turn any fixture into what a real exporter would send, so a
// detector's timing rules are tested against the clocks they meet in
// production (docs/patterns.md, "Timing tolerance").

// roundToMillis returns a copy of spans with start and end truncated to
// whole milliseconds, as the JavaScript SDK reports them (its clock is
// performance.now() in ms; sub-ms parts are lost). Back-to-back siblings
// can then overlap or touch by up to 1 ms.
func roundToMillis(spans []model.Span) []model.Span {
	out := append([]model.Span(nil), spans...)
	const ms = uint64(time.Millisecond)
	for i := range out {
		out[i].StartUnixNano -= out[i].StartUnixNano % ms
		out[i].EndUnixNano -= out[i].EndUnixNano % ms
	}
	return out
}

// skewService returns a copy of spans with every span of service shifted by
// offset, as when that service's host clock is off (NTP keeps hosts within
// a few ms; containers on a drifting VM can be tens of ms apart).
func skewService(spans []model.Span, service string, offset time.Duration) []model.Span {
	out := append([]model.Span(nil), spans...)
	for i := range out {
		if out[i].Service != service {
			continue
		}
		out[i].StartUnixNano = uint64(int64(out[i].StartUnixNano) + int64(offset))
		out[i].EndUnixNano = uint64(int64(out[i].EndUnixNano) + int64(offset))
	}
	return out
}

// jitterMillis shifts every span's start and end by a pseudo-random amount
// in [-maxShift, +maxShift] (deterministic by span index), then rounds to
// whole milliseconds: the worst of both in one call.
func jitterMillis(spans []model.Span, maxShift time.Duration) []model.Span {
	out := append([]model.Span(nil), spans...)
	for i := range out {
		d := int64(maxShift) * int64((i*7919)%201-100) / 100
		out[i].StartUnixNano = uint64(int64(out[i].StartUnixNano) + d)
		out[i].EndUnixNano = uint64(int64(out[i].EndUnixNano) + d)
		if out[i].EndUnixNano < out[i].StartUnixNano {
			out[i].EndUnixNano = out[i].StartUnixNano
		}
	}
	return roundToMillis(out)
}

var _, _ = jitterMillis, skewService // used by detector tests as they adopt them
