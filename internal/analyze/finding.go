package analyze

// Severity of a finding.
type Severity string

const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Rank orders severities: info 1, warning 2, critical 3, unknown 0.
func (s Severity) Rank() int {
	switch s {
	case SeverityInfo:
		return 1
	case SeverityWarning:
		return 2
	case SeverityCritical:
		return 3
	}
	return 0
}

// Finding is one diagnosed problem. The JSON field names are a public
// contract (docs/patterns.md).
type Finding struct {
	Kind     string   `json:"kind"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	TraceID  string   `json:"trace_id,omitempty"`
	SpanIDs  []string `json:"span_ids"`
	// ImpactMS is the time on the critical path that a fix would remove,
	// never a plain sum of overlapping spans.
	ImpactMS float64 `json:"impact_ms"`
	// Evidence is a detector-specific struct (typed per kind); after a round
	// trip through storage it is a generic JSON value.
	Evidence any    `json:"evidence"`
	Fix      string `json:"fix"`
	// Culprit is the place to fix, which may differ from where the problem
	// was observed: a callee that started late blames what sits in front of
	// the callee, a retry storm blames the failing dependency, an N+1 blames
	// the caller's loop. Nil only for findings stored before culprits existed.
	Culprit *Culprit `json:"culprit,omitempty"`
}

// Culprit names the service and operation to fix and why that one.
type Culprit struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
	// SpanID is the span that shows the cause ("" for cross-trace findings
	// without one representative span).
	SpanID string `json:"span_id,omitempty"`
	// Reason says in one sentence why this place is to blame.
	Reason string `json:"reason"`
}

// Baseline is what history knows about the usual duration of something.
type Baseline struct {
	P50MS, P95MS float64
	Count        int // samples behind the figures
}

// ChildStat is a usual child call of an operation.
type ChildStat struct {
	Service, Operation string
	MeanCount          float64 // mean calls per parent
	Presence           float64 // share of parents that have it, 0..1
}

// History gives detectors what the store knows from earlier traces. Every
// method may report ok=false; detectors must work without history (offline,
// `tracedx analyze`) and better with it (in the server).
type History interface {
	// OperationDuration: usual duration of spans (service, span name).
	OperationDuration(service, operation string) (Baseline, bool)
	// StatementDuration: usual duration of a normalised db statement.
	StatementDuration(dbSystem, shape string) (Baseline, bool)
	// UsualChildren: calls usually made under (service, operation).
	UsualChildren(service, operation string) ([]ChildStat, bool)
	// CallPair: how the calls of (service, operation) to targets a and b
	// (CallTarget service and operation) ran relative to each other.
	CallPair(service, operation string, a, b [2]string) (CallPairStat, bool)
}

// CallPairStat tells how an operation's calls to two targets ran relative
// to each other in earlier traces (decayed counts of parents that made
// both; the first call to each target counts).
type CallPairStat struct {
	Parents  float64
	Together float64 // the two ran at the same time
	AFirst   float64 // a's call ended before b's started
	BFirst   float64
}

// Independent: the two ran at the same time, or each ran first: neither
// can need the other's answer.
func (s CallPairStat) Independent() bool { return s.Together >= 1 || (s.AFirst >= 1 && s.BFirst >= 1) }

// NoHistory is the History of offline analysis.
type NoHistory struct{}

func (NoHistory) OperationDuration(string, string) (Baseline, bool) { return Baseline{}, false }
func (NoHistory) StatementDuration(string, string) (Baseline, bool) { return Baseline{}, false }
func (NoHistory) UsualChildren(string, string) ([]ChildStat, bool)  { return nil, false }
func (NoHistory) CallPair(string, string, [2]string, [2]string) (CallPairStat, bool) {
	return CallPairStat{}, false
}
