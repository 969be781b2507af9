package findingstore

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// In a cluster each node runs the cross-trace detectors over the traces
// it owns, a share of the traffic. A condition of all the traffic (an
// endpoint's latency regression, a pool every request waits on) shows in
// every node's share, and each node stores its own finding of it with its
// share of the evidence. The merged answers join those findings into one.

// defaultJoinWindow is the window of a cross-trace finding whose evidence
// names none (new_error_type, cache_stampede, auth_expiry_race): a node
// itself reports such a key again only after it stayed quiet this long
// (the systemic detectors' default error window).
const defaultJoinWindow = 5 * time.Minute

// maxJoinedExamples caps the example traces (and spans) of a joined
// finding: about what three nodes' findings carry.
const maxJoinedExamples = 30

// countFields are the evidence fields of the cross-trace kinds that count
// requests, traces or events: each node counted its own share, so a
// joined finding's are the sums.
var countFields = []string{"requests", "errors", "traces", "calls", "failures", "successes", "rewrites", "version_traces"}

// unionFields are the evidence lists of names or codes that a joined
// finding holds once each.
var unionFields = []string{"callers", "codes"}

// JoinSystemic returns fs with the cross-trace findings that describe the
// same condition joined into one: the same kind and key (the detectors
// key a condition by what it is about, e.g.
// "latency_regression/checkout/GET /cart") and windows that overlap (a
// finding's window is [Time-window_s, Updated or Time]). A joined finding sums the
// members' impact and evidence counts, spans the union of their windows
// (Time is the latest member's), joins their example traces, culprits and
// nodes, and says how many findings it joins; the title and the other
// figures are those of the member with the most impact. Per-trace
// findings are never joined. The joined finding takes the place of its
// first member; fs is not changed.
func JoinSystemic(fs []Stored) []Stored {
	byKey := map[string][]int{}
	for i := range fs {
		if f := &fs[i]; f.Systemic && f.Key != "" {
			k := f.Kind + "\x00" + f.Key
			byKey[k] = append(byKey[k], i)
		}
	}
	var replaced map[int]*Stored // first member's index: the joined finding
	var dropped map[int]bool     // the other members
	for _, set := range joinable(fs, byKey) {
		if replaced == nil {
			replaced, dropped = map[int]*Stored{}, map[int]bool{}
		}
		members := make([]Stored, len(set))
		for j, i := range set {
			members[j] = fs[i]
			dropped[i] = true
		}
		first := slices.Min(set)
		j := joinFindings(members)
		replaced[first] = &j
		delete(dropped, first)
	}
	if replaced == nil {
		return fs
	}
	out := make([]Stored, 0, len(fs)-len(dropped))
	for i := range fs {
		switch {
		case replaced[i] != nil:
			out = append(out, *replaced[i])
		case !dropped[i]:
			out = append(out, fs[i])
		}
	}
	return out
}

// joinable returns, of the findings byKey groups by kind and key, the
// sets of two or more whose windows overlap.
func joinable(fs []Stored, byKey map[string][]int) [][]int {
	var out [][]int
	for _, idx := range byKey {
		if len(idx) < 2 {
			continue
		}
		for _, set := range overlapping(fs, idx) {
			if len(set) >= 2 {
				out = append(out, set)
			}
		}
	}
	return out
}

// overlapping splits the findings idx (one kind and key) into sets whose
// windows overlap, directly or through other members.
func overlapping(fs []Stored, idx []int) [][]int {
	type span struct {
		i          int
		start, end time.Time
	}
	spans := make([]span, len(idx))
	for j, i := range idx {
		spans[j] = span{i, fs[i].Time.Add(-windowOf(&fs[i])), lastSeen(&fs[i])}
	}
	sort.Slice(spans, func(a, b int) bool { return spans[a].start.Before(spans[b].start) })
	var sets [][]int
	var end time.Time
	for j, s := range spans {
		if j == 0 || s.start.After(end) {
			sets = append(sets, nil)
			end = s.end
		}
		sets[len(sets)-1] = append(sets[len(sets)-1], s.i)
		end = maxTime(end, s.end)
	}
	return sets
}

// lastSeen is the end of a cross-trace finding's window: the latest
// evaluation that still saw its condition, when it was updated since it
// opened. A long incident one node opened an hour before another node
// (a restart, a key that changed owner) is still one condition.
func lastSeen(f *Stored) time.Time { return maxTime(f.Time, f.Updated) }

// windowOf is how long before its Time a cross-trace finding's condition
// was observed.
func windowOf(f *Stored) time.Duration {
	ev, _ := evidenceMap(f.Evidence)
	if s, ok := ev["window_s"].(float64); ok && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	return defaultJoinWindow
}

// evidenceMap returns evidence as a JSON object, whatever form it is in
// (a detector's struct, raw JSON from the store, a decoded answer).
func evidenceMap(ev any) (map[string]any, error) {
	if m, ok := ev.(map[string]any); ok {
		return m, nil
	}
	raw, ok := ev.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// joinFindings joins the findings of one condition (at least two).
func joinFindings(members []Stored) Stored {
	primary := 0
	for i := range members {
		if members[i].ImpactMS > members[primary].ImpactMS {
			primary = i
		}
	}
	out := members[primary]
	out.SpanIDs, out.ExampleTraceIDs, out.Nodes, out.Culprits = nil, nil, nil, nil
	out.ImpactMS, out.Joined = 0, 0
	start := out.Time
	culprits := map[analyze.Culprit]bool{}
	var evs []map[string]any
	for i := range members {
		m := &members[i]
		out.ImpactMS += m.ImpactMS
		out.Joined += max(m.Joined, 1)
		if sevRank(string(m.Severity)) > sevRank(string(out.Severity)) {
			out.Severity = m.Severity
		}
		out.Time = maxTime(out.Time, m.Time)
		out.Updated = maxTime(out.Updated, m.Updated)
		start = minTime(start, m.Time.Add(-windowOf(m)))
		out.ExampleTraceIDs = appendNew(out.ExampleTraceIDs, m.ExampleTraceIDs, maxJoinedExamples)
		out.SpanIDs = appendNew(out.SpanIDs, m.SpanIDs, maxJoinedExamples)
		out.Nodes = appendNew(out.Nodes, m.Nodes, math.MaxInt)
		for _, c := range append(m.Culprits, derefCulprit(m.Culprit)...) {
			if !culprits[c] {
				culprits[c] = true
				out.Culprits = append(out.Culprits, c)
			}
		}
		if ev, err := evidenceMap(m.Evidence); err == nil && ev != nil {
			evs = append(evs, ev)
			if i == primary {
				evs[0], evs[len(evs)-1] = evs[len(evs)-1], evs[0]
			}
		}
	}
	out.ImpactMS = math.Round(out.ImpactMS*10) / 10
	sort.Strings(out.Nodes)
	if len(out.Culprits) < 2 {
		out.Culprits = nil
	}
	if len(evs) == len(members) {
		out.Evidence = joinEvidence(evs, out.Time.Sub(start))
	}
	if len(out.Nodes) > 0 {
		out.Title += fmt.Sprintf(" (seen by %d nodes; evidence summed)", len(out.Nodes))
	} else {
		out.Title += fmt.Sprintf(" (joined from %d nodes' findings; evidence summed)", out.Joined)
	}
	return out
}

func derefCulprit(c *analyze.Culprit) []analyze.Culprit {
	if c == nil {
		return nil
	}
	return []analyze.Culprit{*c}
}

// appendNew appends the items of add not yet in to, up to limit items.
func appendNew(to, add []string, limit int) []string {
	for _, s := range add {
		if len(to) >= limit {
			break
		}
		if !slices.Contains(to, s) {
			to = append(to, s)
		}
	}
	return to
}

// joinEvidence is the evidence of a joined finding: the first member's
// (the one with the most impact) for the figures that are not counts (a
// percentile, a baseline), its counts summed, its
// lists of names joined, the error rate recomputed from the sums and the
// window the union of the members'.
func joinEvidence(evs []map[string]any, window time.Duration) json.RawMessage {
	out := make(map[string]any, len(evs[0]))
	for k, v := range evs[0] {
		out[k] = v
	}
	for _, f := range countFields {
		if _, ok := out[f].(float64); !ok {
			continue
		}
		var sum float64
		for _, ev := range evs {
			n, _ := ev[f].(float64)
			sum += n
		}
		out[f] = sum
	}
	for _, f := range unionFields {
		var all []any
		seen := map[string]bool{}
		for _, ev := range evs {
			list, _ := ev[f].([]any)
			for _, v := range list {
				if k := fmt.Sprint(v); !seen[k] {
					seen[k] = true
					all = append(all, v)
				}
			}
		}
		if all != nil {
			out[f] = all
		}
	}
	if req, ok := out["requests"].(float64); ok && req > 0 {
		if errs, ok := out["errors"].(float64); ok {
			if _, ok := out["error_rate"]; ok {
				out["error_rate"] = math.Round(errs/req*1e4) / 1e4
			}
		}
	}
	if _, ok := out["window_s"]; ok {
		out["window_s"] = math.Round(window.Seconds())
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}
