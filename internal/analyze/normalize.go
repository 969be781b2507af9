package analyze

import (
	"strings"
)

// NormalizeStatement reduces a SQL, Redis or Mongo statement to its shape so
// that statements differing only in parameters group together:
// string and numeric literals, hex/uuid-like words and $N bind markers become
// "?", IN-lists and JSON arrays collapse to one "?", repeated identical
// VALUES groups collapse to one, comments (sqlcommenter puts a per-request
// traceparent there) are dropped and whitespace is collapsed. Keywords,
// identifiers and operators are kept verbatim, so the shape stays readable in
// a finding title.
//
// The scanner is a single pass over the bytes with a small stack of open
// brackets; it never fails, whatever the input, because statements are often
// truncated by instrumentations.
func NormalizeStatement(s string) string {
	out := make([]byte, 0, len(s))
	type frame struct {
		open      int  // index of the bracket in out
		inList    bool // "(" right after IN, or "["
		prevStart int  // previous closed sibling group at this level, for VALUES (..),(..)
		prevEnd   int
	}
	stack := []frame{{open: -1, prevStart: -1}}
	pendingSpace := false
	lastQuoted := "" // content of the last double-quoted string kept verbatim
	currentKey := "" // JSON key before the last ':'

	lastNonSpace := func() byte {
		for i := len(out) - 1; i >= 0; i-- {
			if out[i] != ' ' {
				return out[i]
			}
		}
		return 0
	}
	emit := func(b ...byte) {
		if pendingSpace && len(out) > 0 {
			last := out[len(out)-1]
			first := b[0]
			if last != '(' && last != '[' && first != ')' && first != ']' && first != ',' {
				out = append(out, ' ')
			}
		}
		pendingSpace = false
		out = append(out, b...)
	}
	emitStr := func(w string) {
		if pendingSpace && len(out) > 0 {
			last := out[len(out)-1]
			if last != '(' && last != '[' {
				out = append(out, ' ')
			}
		}
		pendingSpace = false
		out = append(out, w...)
	}

	n := len(s)
	for i := 0; i < n; {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			pendingSpace = true
			i++
		case c == '-' && i+1 < n && s[i+1] == '-':
			for i < n && s[i] != '\n' {
				i++
			}
			pendingSpace = true
		case c == '/' && i+1 < n && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				i = n
			} else {
				i += end + 4
			}
			pendingSpace = true
		case isHexByte(c) && i+36 <= n && isUUID(s[i:i+36]) && (i+36 == n || !isWordByte(s[i+36])) && (i == 0 || !isWordByte(s[i-1])):
			emit('?')
			i += 36
		case c == '\'':
			i = skipQuoted(s, i, '\'')
			emit('?')
		case c == '"':
			j := skipQuoted(s, i, '"')
			content := s[i+1 : max(i+1, j-1)]
			prev := lastNonSpace()
			literal := LooksLikeID(content)
			switch prev {
			case ':':
				// A JSON value; the collection named by a Mongo command key
				// is part of the shape.
				literal = literal || !mongoCommandKeys[currentKey]
			case '[':
				literal = true
			case ',':
				if top := stack[len(stack)-1]; top.open >= 0 && out[top.open] == '[' {
					literal = literal || endsWithPlaceholder(out)
				}
			}
			if literal {
				emit('?')
			} else {
				emitStr(s[i:j])
				lastQuoted = content
			}
			i = j
		case c == '`':
			j := skipQuoted(s, i, '`')
			emitStr(s[i:j])
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < n && (isWordByte(s[j]) || s[j] == '.') {
				j++
			}
			emit('?')
			i = j
		case c == '-' && i+1 < n && s[i+1] >= '0' && s[i+1] <= '9' && strings.IndexByte("=<>(,:[", lastNonSpace()) >= 0 && lastNonSpace() != 0:
			j := i + 1
			for j < n && (isWordByte(s[j]) || s[j] == '.') {
				j++
			}
			emit('?')
			i = j
		case c == '$' && i+1 < n && s[i+1] >= '0' && s[i+1] <= '9':
			j := i + 1
			for j < n && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			emit('?')
			i = j
		case isWordByte(c) || c == '$' || c >= 0x80:
			j := i + 1
			for j < n && (isWordByte(s[j]) || s[j] == '$' || s[j] >= 0x80) {
				j++
			}
			w := s[i:j]
			if isHexWord(w) {
				emit('?')
			} else {
				emitStr(w)
			}
			i = j
		case c == '(' || c == '[':
			inList := c == '['
			if c == '(' {
				inList = endsWithKeyword(out, "in")
			}
			emit(c)
			stack = append(stack, frame{open: len(out) - 1, inList: inList, prevStart: -1})
			i++
		case c == ')' || c == ']':
			pendingSpace = false
			if len(out) > 0 && out[len(out)-1] == ' ' {
				out = out[:len(out)-1]
			}
			if len(stack) > 1 {
				f := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if f.inList && onlyPlaceholders(out[f.open+1:]) {
					out = append(out[:f.open+1], '?')
				}
				out = append(out, c)
				parent := &stack[len(stack)-1]
				if parent.prevStart >= 0 && isCommaSep(out[parent.prevEnd:f.open]) &&
					string(out[parent.prevStart:parent.prevEnd]) == string(out[f.open:]) {
					out = out[:parent.prevEnd]
				} else {
					parent.prevStart, parent.prevEnd = f.open, len(out)
				}
			} else {
				out = append(out, c)
			}
			i++
		case c == ',':
			pendingSpace = false
			if len(out) > 0 && out[len(out)-1] == ' ' {
				out = out[:len(out)-1]
			}
			out = append(out, ',')
			pendingSpace = true
			i++
		case c == ':':
			currentKey = lastQuoted
			emit(c)
			i++
		default:
			emit(c)
			i++
		}
	}
	return strings.TrimSpace(string(out))
}

var mongoCommandKeys = map[string]bool{
	"find": true, "aggregate": true, "insert": true, "update": true, "delete": true, "count": true,
	"distinct": true, "findAndModify": true, "collection": true, "getMore": true, "createIndexes": true,
}

// skipQuoted returns the index after the closing quote, honouring doubled
// quotes and backslash escapes; an unterminated literal runs to the end.
func skipQuoted(s string, i int, q byte) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(s)
}

func isWordByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func isHexByte(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func endsWithKeyword(out []byte, kw string) bool {
	end := len(out)
	for end > 0 && out[end-1] == ' ' {
		end--
	}
	start := end - len(kw)
	if start < 0 || !strings.EqualFold(string(out[start:end]), kw) {
		return false
	}
	return start == 0 || !isWordByte(out[start-1])
}

func endsWithPlaceholder(out []byte) bool {
	end := len(out)
	for end > 0 && (out[end-1] == ' ' || out[end-1] == ',') {
		end--
	}
	return end > 0 && out[end-1] == '?'
}

func onlyPlaceholders(b []byte) bool {
	seen := false
	for _, c := range b {
		switch c {
		case '?':
			seen = true
		case ',', ' ':
		default:
			return false
		}
	}
	return seen
}

func isCommaSep(b []byte) bool {
	return strings.TrimSpace(string(b)) == ","
}

// LooksLikeID reports whether a path segment or word is a value rather than
// a name: a number, a uuid, a hex hash, a date-like run of digits, an email,
// or a long token mixing letters and digits (ULIDs, base62 keys), possibly
// after a short prefix such as "ord_" or "user-".
func LooksLikeID(seg string) bool {
	n := len(seg)
	if n == 0 {
		return false
	}
	if strings.IndexByte(seg, '@') > 0 {
		return true
	}
	digits, hex, letters, seps := 0, 0, 0, 0
	for i := 0; i < n; i++ {
		c := seg[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'):
			hex++
			letters++
		case (c >= 'g' && c <= 'z') || (c >= 'G' && c <= 'Z'):
			letters++
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '~' || c == '+' || c == '=':
			seps++
		default:
			return false
		}
	}
	if digits == 0 {
		// Long pure-hex words without digits are hashes only when long.
		return seps == 0 && hex == n && n >= 16
	}
	if digits+seps == n {
		// 42, 2024-01-15, 10.0.0.1, 1699999999.123
		return digits*2 >= n || seps == 0
	}
	if isUUID(seg) {
		return true
	}
	if seps == 0 && hex == n && n >= 8 {
		return true
	}
	// prefix_12345, ord-9f3a2c1b: judge the part after the last separator.
	if seps > 0 {
		k := strings.LastIndexAny(seg, "-_.:~+=")
		if k >= 0 && k+1 < n {
			tail := seg[k+1:]
			if allDigits(tail) {
				return len(tail) >= 3
			}
			return len(tail) >= 8 && LooksLikeID(tail)
		}
		return false
	}
	// ULID / base62: long, with a real share of digits.
	return n >= 12 && digits >= 2 && digits*5 >= n
}

// isHexWord: a bare word in a statement is a value only when it is a hex
// hash (identifiers such as orders_2024 must survive).
func isHexWord(w string) bool {
	digits := 0
	for i := 0; i < len(w); i++ {
		if !isHexByte(w[i]) {
			return false
		}
		if w[i] <= '9' {
			digits++
		}
	}
	return (len(w) >= 8 && digits > 0) || len(w) >= 16
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !isHexByte(c) {
			return false
		}
	}
	return true
}

// NormalizeURL reduces a URL or path to a route-like template: scheme, host,
// query and fragment are dropped and every path segment that LooksLikeID
// becomes "{id}". Segments already templated ("{id}", ":id") are kept, so a
// real http.route passes through unchanged.
func NormalizeURL(s string) string {
	s = strings.TrimSpace(s)
	if k := strings.Index(s, "://"); k >= 0 {
		rest := s[k+3:]
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			s = rest[j:]
		} else {
			s = "/"
		}
	}
	if j := strings.IndexAny(s, "?#"); j >= 0 {
		s = s[:j]
	}
	if s == "" {
		return "/"
	}
	if !strings.Contains(s, "/") {
		if LooksLikeID(s) {
			return "{id}"
		}
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, seg := range strings.Split(s, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		if seg == "" || seg[0] == '{' || seg[0] == ':' {
			b.WriteString(seg)
			continue
		}
		if LooksLikeID(seg) {
			b.WriteString("{id}")
		} else {
			b.WriteString(seg)
		}
	}
	return b.String()
}
