package traceql

import (
	"fmt"
	"regexp"
	"regexp/syntax"
)

// Limits bound what one query may cost. Go's regular expressions run in
// time linear in the input, but also linear in the size of the compiled
// program, and a query's pattern runs against every span of every trace it
// scans: a 30 KB pattern made one search run 19 s. Patterns are therefore
// capped in length and in compiled size when the query is parsed.
type Limits struct {
	// MaxRegexBytes bounds the text of one pattern.
	MaxRegexBytes int
	// MaxRegexInsts bounds the compiled program of one pattern
	// (regexp/syntax instructions).
	MaxRegexInsts int
}

// DefaultLimits fit any pattern a person writes in a search box.
func DefaultLimits() Limits { return Limits{MaxRegexBytes: 1024, MaxRegexInsts: 5000} }

// LimitError says a query exceeds a cost limit. APIs answer it with 422:
// the query is well formed but too expensive to run.
type LimitError struct{ Msg string }

func (e *LimitError) Error() string { return "query too expensive: " + e.Msg }

// compileRegex compiles a TraceQL pattern (a full match) within lim.
func compileRegex(pattern string, lim Limits) (*regexp.Regexp, error) {
	if len(pattern) > lim.MaxRegexBytes {
		return nil, &LimitError{fmt.Sprintf("regular expression of %d bytes, limit is %d", len(pattern), lim.MaxRegexBytes)}
	}
	full := "^(?:" + pattern + ")$"
	// Measure the program before regexp.Compile builds its matchers.
	re, err := syntax.Parse(full, syntax.Perl)
	if err != nil {
		return nil, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, err
	}
	if n := len(prog.Inst); n > lim.MaxRegexInsts {
		return nil, &LimitError{fmt.Sprintf("regular expression compiles to %d instructions, limit is %d: use fewer repetitions and alternatives", n, lim.MaxRegexInsts)}
	}
	return regexp.Compile(full)
}
