package analyze

// Timing tolerance (docs/patterns.md): real SDKs do not report exact
// times. The JavaScript SDK rounds to whole milliseconds, so two calls
// made back to back can appear to overlap by up to a millisecond; clocks of
// different hosts disagree by a few ms. Every decision that compares two
// spans' times ("concurrent?", "one after another?", "outlived its
// parent?") allows for that before it concludes anything.

// timingTolerance is the overlap or overrun between a and b that clocks
// alone explain: 1 ms, or 2 % of the shorter span when that is more.
func timingTolerance(a, b *Node) uint64 {
	shorter := min(a.Duration(), b.Duration())
	return max(uint64(1e6), shorter/50)
}

// overlapNS is how long a and b run at the same time.
func overlapNS(a, b *Node) uint64 {
	lo, hi := max(a.Start(), b.Start()), min(a.End(), b.End())
	return subSat(hi, lo)
}

// concurrent reports whether a and b ran at the same time by more than
// the clocks' tolerance.
func concurrent(a, b *Node) bool { return overlapNS(a, b) > timingTolerance(a, b) }

// Concurrent is concurrent for the baselines, which learn which calls an
// operation runs at the same time.
func Concurrent(a, b *Node) bool { return concurrent(a, b) }

// crossHostSkewNS is the clock offset allowed between two services' hosts
// where a detector has no setting of its own (NTP keeps hosts within a
// few ms; containers on a drifting VM can be tens of ms apart).
const crossHostSkewNS = 25e6
