package traceql

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tAttr // scoped or unscoped attribute; text is the raw token, attr is filled
	tString
	tInt
	tFloat
	tDuration
	tPunct // { } ( ) , |
	tOp    // operators and structural operators
)

type token struct {
	kind tokKind
	pos  int // byte offset in the query
	text string
	str  string // decoded string literal
	i    int64
	f    float64
	d    time.Duration
	attr Attribute
}

func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of query"
	case tString:
		return strconv.Quote(t.str)
	}
	return fmt.Sprintf("%q", t.text)
}

// SyntaxError reports a parse failure with its position, so clients (and
// Grafana, which shows 4xx bodies verbatim) can point at the problem.
type SyntaxError struct {
	Pos       int // byte offset
	Line, Col int // 1-based
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("parse error at line %d, col %d: %s", e.Line, e.Col, e.Msg)
}

func newSyntaxError(src string, pos int, format string, args ...any) *SyntaxError {
	if pos > len(src) {
		pos = len(src)
	}
	if pos < 0 {
		pos = 0
	}
	line, col := 1, 1
	for _, r := range src[:pos] {
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &SyntaxError{Pos: pos, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

// attribute names end at whitespace or one of these (as in Tempo), which
// lets names carry dots, dashes and slashes without quoting.
const attrTerminators = "{}()=~!<>&|^,"

var threeCharOps = []string{"!>>", "!<<", "&>>", "&<<"}
var twoCharOps = []string{"!=", ">=", "<=", "=~", "!~", "&&", "||", ">>", "<<", "!>", "!<", "&>", "&<", "&~"}

// scopePrefixes start an attribute reference when followed by a dot.
var scopePrefixes = map[string]bool{
	"span": true, "resource": true, "parent": true, "event": true, "link": true,
	"instrumentation": true, "finding": true,
}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for {
		for i < len(src) {
			r, w := utf8.DecodeRuneInString(src[i:])
			if !unicode.IsSpace(r) {
				break
			}
			i += w
		}
		if i >= len(src) {
			toks = append(toks, token{kind: tEOF, pos: i})
			return toks, nil
		}
		start := i
		c := src[i]
		switch {
		case c == '"' || c == '`':
			s, n, err := scanString(src[i:])
			if err != nil {
				return nil, newSyntaxError(src, start, "%v", err)
			}
			i += n
			toks = append(toks, token{kind: tString, pos: start, text: src[start:i], str: s})
		case c >= '0' && c <= '9':
			t, n, err := scanNumber(src[i:])
			if err != nil {
				return nil, newSyntaxError(src, start, "%v", err)
			}
			t.pos = start
			i += n
			toks = append(toks, t)
		case c == '.':
			a, n, err := scanAttrName(src, i+1)
			if err != nil {
				return nil, err
			}
			if f, err := strconv.ParseFloat("0."+a, 64); err == nil && a[0] >= '0' && a[0] <= '9' {
				// `.9` is a number (quantile_over_time(duration, .9)), not an attribute.
				i = n
				toks = append(toks, token{kind: tFloat, pos: start, text: src[start:i], f: f})
				continue
			}
			i = n
			toks = append(toks, token{kind: tAttr, pos: start, text: src[start:i], attr: Attribute{Scope: ScopeNone, Name: a}})
		case isIdentStart(c):
			j := i
			for j < len(src) && isIdentChar(src[j]) {
				j++
			}
			word := src[i:j]
			if j < len(src) && src[j] == '.' && scopePrefixes[word] {
				a, n, err := scanScoped(src, word, j)
				if err != nil {
					return nil, err
				}
				i = n
				toks = append(toks, token{kind: tAttr, pos: start, text: src[start:i], attr: a})
				continue
			}
			i = j
			toks = append(toks, token{kind: tIdent, pos: start, text: word})
		case strings.ContainsRune("{}(),|", rune(c)) && !(c == '|' && strings.HasPrefix(src[i:], "||")):
			i++
			toks = append(toks, token{kind: tPunct, pos: start, text: src[start:i]})
		default:
			op := ""
			for _, o := range threeCharOps {
				if strings.HasPrefix(src[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				for _, o := range twoCharOps {
					if strings.HasPrefix(src[i:], o) {
						op = o
						break
					}
				}
			}
			if op == "" && strings.ContainsRune("=<>!~+-*/%^", rune(c)) {
				op = string(c)
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(src[i:])
				return nil, newSyntaxError(src, start, "unexpected character %q", r)
			}
			i += len(op)
			toks = append(toks, token{kind: tOp, pos: start, text: op})
		}
	}
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || (c >= '0' && c <= '9') || c == ':'
}

// scanScoped reads `span.foo`, `resource.foo`, `parent.span.foo`,
// `finding.kind`... word is the prefix, dot the offset of the dot after it.
func scanScoped(src, word string, dot int) (Attribute, int, error) {
	var a Attribute
	switch word {
	case "span":
		a.Scope = ScopeSpan
	case "resource":
		a.Scope = ScopeResource
	case "event", "link", "instrumentation":
		return a, 0, newSyntaxError(src, dot-len(word), "%s-scoped attributes are not supported", word)
	case "finding":
		name, n, err := scanAttrName(src, dot+1)
		if err != nil {
			return a, 0, err
		}
		if name != "kind" {
			return a, 0, newSyntaxError(src, dot+1, "unknown finding attribute %q (only finding.kind exists)", name)
		}
		return Attribute{Intrinsic: IntrinsicFindingKind}, n, nil
	case "parent":
		a.Parent = true
		rest := dot + 1
		// parent.span.x, parent.resource.x or parent.x (unscoped).
		for _, p := range []struct {
			s     string
			scope Scope
		}{{"span.", ScopeSpan}, {"resource.", ScopeResource}} {
			if strings.HasPrefix(src[rest:], p.s) {
				a.Scope = p.scope
				rest += len(p.s)
				break
			}
		}
		name, n, err := scanAttrName(src, rest)
		if err != nil {
			return a, 0, err
		}
		a.Name = name
		if in, ok := intrinsicNames[name]; ok && a.Scope == ScopeNone {
			// parent.name, parent.duration...: the parent's intrinsic.
			a.Intrinsic, a.Name = in, ""
		}
		return a, n, nil
	}
	name, n, err := scanAttrName(src, dot+1)
	if err != nil {
		return a, 0, err
	}
	a.Name = name
	return a, n, nil
}

// scanAttrName reads an attribute name starting at i; quoted segments
// ("with space") are allowed anywhere in it. It returns the name and the
// offset after it.
func scanAttrName(src string, i int) (string, int, error) {
	var b strings.Builder
	start := i
	for i < len(src) {
		c := src[i]
		if c == '"' {
			s, n, err := scanString(src[i:])
			if err != nil {
				return "", 0, newSyntaxError(src, i, "%v", err)
			}
			b.WriteString(s)
			i += n
			continue
		}
		r, w := utf8.DecodeRuneInString(src[i:])
		if unicode.IsSpace(r) || (r < utf8.RuneSelf && strings.IndexByte(attrTerminators, c) >= 0) {
			break
		}
		b.WriteString(src[i : i+w])
		i += w
	}
	if b.Len() == 0 {
		return "", 0, newSyntaxError(src, start, "expected an attribute name after %q", src[max(0, start-1):start])
	}
	return b.String(), i, nil
}

func scanString(s string) (string, int, error) {
	q := s[0]
	if q == '`' {
		end := strings.IndexByte(s[1:], '`')
		if end < 0 {
			return "", 0, fmt.Errorf("unterminated raw string")
		}
		return s[1 : 1+end], end + 2, nil
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			if err != nil {
				return "", 0, fmt.Errorf("invalid string literal %s", s[:i+1])
			}
			return v, i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

// scanNumber reads an int, a float or a duration (a number followed by a
// unit, possibly compound like 1m30s).
func scanNumber(s string) (token, int, error) {
	i := 0
	isFloat := false
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		if s[i] == '.' {
			isFloat = true
		}
		i++
	}
	// Exponent (1e3, 2.5E-3) when not followed by a unit letter.
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			f, err := strconv.ParseFloat(s[:k], 64)
			if err != nil {
				return token{}, 0, fmt.Errorf("invalid number %q", s[:k])
			}
			return token{kind: tFloat, text: s[:k], f: f}, k, nil
		}
	}
	if i < len(s) && isUnitStart(s[i:]) {
		j := i
		for j < len(s) {
			r, w := utf8.DecodeRuneInString(s[j:])
			if (r >= 'a' && r <= 'z') || r == 'µ' || (r >= '0' && r <= '9') || r == '.' {
				j += w
				continue
			}
			break
		}
		d, err := parseDuration(s[:j])
		if err != nil {
			return token{}, 0, err
		}
		return token{kind: tDuration, text: s[:j], d: d}, j, nil
	}
	if i < len(s) && isIdentStart(s[i]) {
		return token{}, 0, fmt.Errorf("invalid number %q", s[:i+1])
	}
	text := s[:i]
	if isFloat {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return token{}, 0, fmt.Errorf("invalid number %q", text)
		}
		return token{kind: tFloat, text: text, f: f}, i, nil
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return token{}, 0, fmt.Errorf("invalid integer %q", text)
	}
	return token{kind: tInt, text: text, i: n}, i, nil
}

func isUnitStart(s string) bool {
	for _, u := range []string{"ns", "us", "µs", "ms", "s", "m", "h", "d", "w", "y"} {
		if strings.HasPrefix(s, u) {
			return true
		}
	}
	return false
}

// parseDuration accepts Go durations plus Prometheus' d, w and y units.
func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		num, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		var unit time.Duration
		switch rest[i:j] {
		case "d":
			unit = 24 * time.Hour
		case "w":
			unit = 7 * 24 * time.Hour
		case "y":
			unit = 365 * 24 * time.Hour
		default:
			d, err := time.ParseDuration(rest[:j])
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			total += d
			rest = rest[j:]
			continue
		}
		total += time.Duration(num * float64(unit))
		rest = rest[j:]
	}
	return total, nil
}
