package store

import (
	"regexp"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
)

// MatchSpan reports whether one span satisfies every span-level condition
// of q. Engines use it for the exact check after their index-level pruning,
// so all engines share one meaning of a query.
func MatchSpan(q *Query, s *model.Span) bool {
	if q.Range.Start != 0 && s.StartUnixNano < q.Range.Start {
		return false
	}
	if q.Range.End != 0 && s.StartUnixNano >= q.Range.End {
		return false
	}
	if q.Service != "" && s.Service != q.Service {
		return false
	}
	if q.Operation != "" && s.Name != q.Operation {
		return false
	}
	if len(q.Kinds) > 0 {
		ok := false
		for _, k := range q.Kinds {
			if s.Kind == k {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if q.Status != nil && s.StatusCode != *q.Status {
		return false
	}
	d := s.DurationNano()
	if q.MinDuration != 0 && d < q.MinDuration {
		return false
	}
	if q.MaxDuration != 0 && d > q.MaxDuration {
		return false
	}
	for i := range q.Attrs {
		if !MatchAttr(&q.Attrs[i], s) {
			return false
		}
	}
	return true
}

// MatchAttr checks one attribute filter against a span.
func MatchAttr(f *AttrFilter, s *model.Span) bool {
	var v model.Value
	var ok bool
	switch f.Scope {
	case ScopeSpan:
		v, ok = s.Attrs.Get(f.Key)
	case ScopeResource:
		v, ok = s.Resource.Get(f.Key)
		if !ok && f.Key == "service.name" {
			v, ok = model.Str(s.Service), true
		}
	default:
		v, ok = s.Attr(f.Key)
		if !ok && f.Key == "service.name" {
			v, ok = model.Str(s.Service), true
		}
	}
	if f.Op == OpExists {
		return ok
	}
	if !ok {
		// A missing attribute is "not equal" to anything, as in Jaeger and
		// TraceQL, but satisfies no other comparison.
		return f.Op == OpNeq || f.Op == OpNotRegex
	}
	return CompareValue(v, f.Op, f.Value)
}

// HasSpanConditions reports whether q constrains individual spans beyond
// the time range.
func (q *Query) HasSpanConditions() bool {
	return q.Service != "" || q.Operation != "" || len(q.Kinds) > 0 || q.Status != nil ||
		q.MinDuration != 0 || q.MaxDuration != 0 || len(q.Attrs) > 0
}

// MatchTrace reports whether a whole trace satisfies q: trace-level
// conditions, and at least one span satisfying every span-level condition.
func MatchTrace(q *Query, spans []model.Span) bool {
	if len(spans) == 0 {
		return false
	}
	if len(q.TraceIDs) > 0 {
		ok := false
		for _, id := range q.TraceIDs {
			if id == spans[0].TraceID {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if q.MinTraceDuration != 0 || q.MaxTraceDuration != 0 {
		var lo, hi uint64
		for i := range spans {
			if lo == 0 || spans[i].StartUnixNano < lo {
				lo = spans[i].StartUnixNano
			}
			if spans[i].EndUnixNano > hi {
				hi = spans[i].EndUnixNano
			}
		}
		d := uint64(0)
		if hi > lo {
			d = hi - lo
		}
		if q.MinTraceDuration != 0 && d < q.MinTraceDuration {
			return false
		}
		if q.MaxTraceDuration != 0 && d > q.MaxTraceDuration {
			return false
		}
	}
	for i := range spans {
		if MatchSpan(q, &spans[i]) {
			return true
		}
	}
	return false
}

// CompareValue compares v (the stored value) with want using op. Numbers
// compare numerically when both sides are numeric (numeric strings
// included, so tags=http.status_code=500 matches an int attribute); other
// values compare as text.
func CompareValue(v model.Value, op Op, want model.Value) bool {
	switch op {
	case OpExists:
		return true
	case OpRegex, OpNotRegex:
		re, err := cachedRegexp(want.AsString())
		if err != nil {
			return false
		}
		m := re.MatchString(v.AsString())
		return m == (op == OpRegex)
	}
	var c int
	if a, ok := v.AsFloat(); ok {
		if b, ok := want.AsFloat(); ok && (isNumber(v) || isNumber(want)) {
			switch {
			case a < b:
				c = -1
			case a > b:
				c = 1
			}
			return cmpResult(op, c)
		}
	}
	as, bs := v.AsString(), want.AsString()
	switch {
	case as < bs:
		c = -1
	case as > bs:
		c = 1
	}
	return cmpResult(op, c)
}

func isNumber(v model.Value) bool { return v.Type == model.TypeInt || v.Type == model.TypeDouble }

func cmpResult(op Op, c int) bool {
	switch op {
	case OpEq:
		return c == 0
	case OpNeq:
		return c != 0
	case OpGt:
		return c > 0
	case OpGte:
		return c >= 0
	case OpLt:
		return c < 0
	case OpLte:
		return c <= 0
	}
	return false
}

var regexpCache sync.Map // string -> *regexp.Regexp

// cachedRegexp compiles a full-match RE2 pattern once (TraceQL and Tempo
// anchor regexes to the whole value).
func cachedRegexp(p string) (*regexp.Regexp, error) {
	if re, ok := regexpCache.Load(p); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile("^(?:" + p + ")$")
	if err != nil {
		return nil, err
	}
	regexpCache.Store(p, re)
	return re, nil
}
