package findingstore

import (
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// FromResult turns the per-trace findings of one analysed trace into
// records: Time is the trace start, Service/Operation those of the
// finding's culprit, else of the first span it names (else the root), so
// listing by service finds the service where the problem sits rather than
// the edge that received the request.
func FromResult(spans []model.Span, res analyze.Result) []Stored {
	if len(res.Findings) == 0 {
		return nil
	}
	sum := model.Summarize(spans)
	byID := make(map[string]*model.Span, len(spans))
	for i := range spans {
		byID[spans[i].SpanID.String()] = &spans[i]
	}
	out := make([]Stored, 0, len(res.Findings))
	for _, f := range res.Findings {
		st := Stored{Finding: f, Time: time.Unix(0, int64(sum.StartUnixNano)), Service: sum.RootService, Operation: sum.RootName}
		if st.TraceID == "" {
			st.TraceID = res.TraceID
		}
		for _, id := range f.SpanIDs {
			if s, ok := byID[id]; ok {
				st.Service, st.Operation = s.Service, s.Name
				break
			}
		}
		// The culprit is where the problem is to be fixed, which is what a
		// list of findings by service should answer (a late callee start
		// is seen on the caller's span but belongs to the callee).
		if c := f.Culprit; c != nil && c.Service != "" {
			st.Service, st.Operation = c.Service, c.Operation
		}
		out = append(out, st)
	}
	return out
}

// Findings strips the records back to findings (for the trace analysis API).
func Findings(list []Stored) []analyze.Finding {
	out := make([]analyze.Finding, len(list))
	for i := range list {
		out[i] = list[i].Finding
	}
	return out
}
