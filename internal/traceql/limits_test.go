package traceql

import (
	"errors"
	"strings"
	"testing"
)

// The query: a 30 KB pattern that made one search run 19 s.
func TestExpensiveRegexIsRefused(t *testing.T) {
	var le *LimitError
	for _, pat := range []string{
		strings.Repeat("(a|b)*", 5000),   // 30 KB
		strings.Repeat("[a-z]{100}", 60), // 600 bytes, 6,000+ instructions
	} {
		_, err := Parse(`{ name =~ "` + pat + `" }`)
		if !errors.As(err, &le) {
			t.Errorf("pattern of %d bytes: %v", len(pat), err)
		}
	}
	if _, err := Parse(`{ name =~ "GET /api/(users|orders)/[0-9]+" && resource.service.name !~ "test-.*" }`); err != nil {
		t.Errorf("an ordinary pattern: %v", err)
	}
	lim := DefaultLimits()
	lim.MaxRegexBytes = 4
	if _, err := ParseLimited(`{ name =~ "abcde" }`, lim); !errors.As(err, &le) || !strings.Contains(err.Error(), "5 bytes, limit is 4") {
		t.Errorf("configured limit: %v", err)
	}
	// An invalid pattern is still a syntax error, not a cost.
	var se *SyntaxError
	if _, err := Parse(`{ name =~ "(" }`); !errors.As(err, &se) {
		t.Errorf("invalid pattern: %v", err)
	}
}
