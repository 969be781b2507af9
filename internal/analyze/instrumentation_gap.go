package analyze

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// InstrumentationGap finds telemetry that hides problems or must not be
// there: HTTP 5xx answers whose span status is not ERROR, spans without a
// service.name, span names holding ids, and secrets or personal data in
// attributes.
type InstrumentationGap struct {
	CheckStatus    bool `yaml:"check_status"`
	CheckService   bool `yaml:"check_service"`
	CheckSpanNames bool `yaml:"check_span_names"`
	CheckSecrets   bool `yaml:"check_secrets"`
	// MaxExamples caps the spans listed per finding.
	MaxExamples int `yaml:"max_examples"`
}

// NewInstrumentationGap returns the detector with docs/patterns.md
// defaults (every check on).
func NewInstrumentationGap() *InstrumentationGap {
	return &InstrumentationGap{CheckStatus: true, CheckService: true, CheckSpanNames: true, CheckSecrets: true, MaxExamples: 10}
}

func init() { Register(func() Detector { return NewInstrumentationGap() }) }

// Kind implements Detector.
func (*InstrumentationGap) Kind() string { return "instrumentation_gap" }

// InstrumentationGapEvidence is the evidence of an instrumentation_gap
// finding.
type InstrumentationGapEvidence struct {
	// Problem: http_error_not_marked, missing_service_name,
	// high_cardinality_span_name, secret_in_attribute or
	// personal_data_in_attribute.
	Problem string `json:"problem"`
	// Attribute is the attribute key involved (for span names: the name
	// with ids replaced, the shape it should have).
	Attribute string `json:"attribute,omitempty"`
	// DataType for secrets and personal data: email, card_number,
	// bearer_token, password, credentials_in_url.
	DataType string `json:"data_type,omitempty"`
	// Masked is an example value with the sensitive part hidden; the value
	// itself is never repeated.
	Masked     string    `json:"masked,omitempty"`
	HTTPStatus int       `json:"http_status,omitempty"`
	SpanCount  int       `json:"span_count"`
	Services   []string  `json:"services"`
	Spans      []SpanRef `json:"spans"`
	Change     string    `json:"change"`
}

type gapGroup struct {
	ev   InstrumentationGapEvidence
	svcs map[string]bool
	ids  []string
	sev  Severity
}

// Detect implements Detector. One finding per (problem, attribute or name
// shape); severity critical for secrets, warning for personal data, hidden
// errors and missing service names, info for span-name cardinality.
// impact_ms is 0: these cost visibility (or compliance), not request time.
func (d *InstrumentationGap) Detect(t *Trace, _ *Env) []Finding {
	groups := map[string]*gapGroup{}
	var order []string
	note := func(key string, n *Node, mk func() (InstrumentationGapEvidence, Severity)) {
		g := groups[key]
		if g == nil {
			ev, sev := mk()
			g = &gapGroup{ev: ev, svcs: map[string]bool{}, sev: sev}
			groups[key] = g
			order = append(order, key)
		}
		g.ev.SpanCount++
		g.svcs[n.Span.Service] = true
		if len(g.ev.Spans) < max(d.MaxExamples, 1) {
			g.ev.Spans = append(g.ev.Spans, RefOf(t, n))
			g.ids = append(g.ids, spanIDOf(t, n))
		}
	}
	seenResource := map[[2]string]bool{}
	var lastResource [2]string
	haveLast := false
	// Names and attribute keys repeat across spans: judge each once.
	type shaped struct {
		shape string
		ok    bool
	}
	shapes := map[string]shaped{}
	keyKinds := map[string]string{}
	for _, n := range t.Nodes {
		s := n.Span
		if d.CheckStatus && s.StatusCode != model.StatusError {
			if code, ok := HTTPStatus(s); ok && code >= 500 {
				note(fmt.Sprintf("status|%d", code/100), n, func() (InstrumentationGapEvidence, Severity) {
					key := "http.response.status_code"
					if _, cur := s.Attrs.Get(key); !cur {
						key = "http.status_code"
					}
					return InstrumentationGapEvidence{Problem: "http_error_not_marked", Attribute: key, HTTPStatus: code,
						Change: "set the span status to ERROR for HTTP 5xx answers (the OpenTelemetry HTTP conventions require it); " +
							"error rates, alerts and error_origin miss these failures otherwise"}, SeverityWarning
				})
			}
		}
		// A piece of a span reported under its id without an endpoint
		// (Zipkin v1 annotations sent apart) belongs to the span that
		// names the service: its process did set one.
		if d.CheckService && (s.Service == "" || strings.HasPrefix(s.Service, model.UnknownService)) && !fragmentOfNamed(t, n) {
			note("service|"+s.Service+"|"+s.ScopeName, n, func() (InstrumentationGapEvidence, Severity) {
				return InstrumentationGapEvidence{Problem: "missing_service_name", Attribute: "service.name",
					Change: "set service.name on the resource (OTEL_SERVICE_NAME or the SDK's resource); spans of " +
						nonEmpty(s.ScopeName, "this process") + " cannot be told apart from other unnamed services"}, SeverityWarning
			})
		}
		// Database span names are "operation table" by convention, and
		// table names such as orders_2024 are names, not ids. A name that
		// is the span's own route template (GET /500, a test app's error
		// page; /v2/1099-forms) is the low-cardinality name asked for.
		if d.CheckSpanNames && !IsDB(n) && !namedByRoute(s) {
			sh, seen := shapes[s.Name]
			if !seen {
				sh.shape, sh.ok = nameShape(s.Name)
				shapes[s.Name] = sh
			}
			if shape, ok := sh.shape, sh.ok; ok {
				note("name|"+s.Service+"|"+shape, n, func() (InstrumentationGapEvidence, Severity) {
					return InstrumentationGapEvidence{Problem: "high_cardinality_span_name", Attribute: shape,
						Change: fmt.Sprintf("name the span by its template (%q) and put the id in an attribute; "+
							"names with ids make every request its own operation", shape)}, SeverityInfo
				})
			}
		}
		if d.CheckSecrets {
			scan := func(where string, attrs model.Attrs) {
				for i := range attrs {
					a := &attrs[i]
					if a.Value.Type != model.TypeString {
						continue
					}
					kk, seen := keyKinds[a.Key]
					if !seen {
						kk = secretKeyKind(a.Key)
						keyKinds[a.Key] = kk
					}
					typ, masked := sensitive(kk, a.Value.Str)
					if typ == "" {
						continue
					}
					key := where + a.Key
					note("secret|"+typ+"|"+key, n, func() (InstrumentationGapEvidence, Severity) {
						ev := InstrumentationGapEvidence{Attribute: key, DataType: typ, Masked: masked}
						if typ == "email" || typ == "card_number" {
							ev.Problem = "personal_data_in_attribute"
							ev.Change = fmt.Sprintf("drop or hash %s at the source (or with the collector's redaction/attributes processor); "+
								"traces are kept and read widely and must not hold personal data", key)
							if typ == "card_number" {
								return ev, SeverityCritical
							}
							return ev, SeverityWarning
						}
						ev.Problem = "secret_in_attribute"
						ev.Change = fmt.Sprintf("stop recording %s (allow-list captured headers, strip credentials from URLs) and rotate the exposed credential", key)
						return ev, SeverityCritical
					})
				}
			}
			scan("", s.Attrs)
			for i := range s.Events {
				scan("event "+s.Events[i].Name+": ", s.Events[i].Attrs)
			}
			// Resource attributes repeat on every span of a process: scan
			// each distinct resource once.
			if len(s.Resource) > 0 {
				// Spans of one process mostly follow each other: the last
				// span's resource is compared before the set is asked.
				rk := [2]string{s.Service, s.Resource.Str("service.instance.id", "host.name")}
				if (!haveLast || rk != lastResource) && !seenResource[rk] {
					seenResource[rk] = true
					scan("resource ", s.Resource)
				}
				lastResource, haveLast = rk, true
			}
		}
	}
	out := make([]Finding, 0, len(order))
	for _, k := range order {
		g := groups[k]
		for s := range g.svcs {
			g.ev.Services = append(g.ev.Services, s)
		}
		sort.Strings(g.ev.Services)
		svc := strings.Join(g.ev.Services, ", ")
		var title string
		switch g.ev.Problem {
		case "http_error_not_marked":
			title = fmt.Sprintf("%d span(s) of %s answered HTTP %d but their status is not ERROR", g.ev.SpanCount, svc, g.ev.HTTPStatus)
		case "missing_service_name":
			title = fmt.Sprintf("%d span(s) have no service.name (%q)", g.ev.SpanCount, nonEmpty(svc, "empty"))
		case "high_cardinality_span_name":
			title = fmt.Sprintf("%d span name(s) of %s hold ids (shape %q)", g.ev.SpanCount, svc, g.ev.Attribute)
		case "personal_data_in_attribute":
			title = fmt.Sprintf("%s in attribute %s on %d span(s) of %s", strings.ReplaceAll(g.ev.DataType, "_", " "), g.ev.Attribute, g.ev.SpanCount, svc)
		default:
			title = fmt.Sprintf("%s recorded in attribute %s on %d span(s) of %s", strings.ReplaceAll(g.ev.DataType, "_", " "), g.ev.Attribute, g.ev.SpanCount, svc)
		}
		out = append(out, Finding{Kind: d.Kind(), Severity: g.sev, Title: title, SpanIDs: g.ids, Evidence: g.ev,
			Fix: strings.ToUpper(g.ev.Change[:1]) + g.ev.Change[1:] + "."})
	}
	return out
}

// namedByRoute reports a span named by its http.route: "GET /500" with
// route "/500" holds no id, whatever digits the template has.
func namedByRoute(s *model.Span) bool {
	r := HTTPRoute(s)
	return r != "" && (s.Name == r || strings.HasSuffix(s.Name, " "+r))
}

// nameShape returns the span name with id-like words and path segments
// replaced, and whether anything was replaced.
func nameShape(name string) (string, bool) {
	if !containsDigitOrAt(name) && len(name) < 16 {
		return name, false
	}
	// Check without allocating; most names are fine.
	if !nameHasID(name) {
		return name, false
	}
	words := strings.Fields(name)
	for i, w := range words {
		segs := strings.Split(w, "/")
		for j, seg := range segs {
			if idWord(seg) {
				segs[j] = "{id}"
			}
		}
		words[i] = strings.Join(segs, "/")
	}
	return strings.Join(words, " "), true
}

// idWord: a word or path segment holding a value. Numbers under three
// digits (attempt 2, shard 7) are low-cardinality and pass.
func idWord(w string) bool {
	if w == "" || w[0] == '{' || w[0] == ':' || (len(w) < 3 && allDigits(w)) {
		return false
	}
	return LooksLikeID(w) && !isVersionLike(w) && !isHostPort(w) && !isDatedName(w)
}

// isDatedName reports a name with a date at its end: a cache, table or
// index rotated by day, month or year (Yelp's recorded trace reads
// "user_details_cache-20150901"; logs-2015.09.01, orders_2024). Such a
// name changes once a day, not once a request.
func isDatedName(w string) bool {
	j := len(w)
	for j > 0 && (w[j-1]-'0' < 10 || w[j-1] == '-' || w[j-1] == '_' || w[j-1] == '.') {
		j--
	}
	if !strings.ContainsFunc(w[:j], func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }) {
		return false
	}
	return isDate(strings.TrimLeft(w[j:], "-_."))
}

// isDate: YYYY, YYYYMM or YYYYMMDD, or year, month and day joined by one
// of - _ . (2015-09, 2015.09.01).
func isDate(s string) bool {
	var parts []string
	if allDigits(s) {
		for _, n := range []int{4, 2, 2} {
			if len(s) >= n {
				parts, s = append(parts, s[:n]), s[n:]
			}
		}
		if s != "" {
			return false
		}
	} else if k := strings.IndexAny(s, "-_."); k > 0 {
		parts = strings.Split(s, s[k:k+1])
	}
	if len(parts) == 0 || len(parts) > 3 || len(parts[0]) != 4 {
		return false
	}
	limits := []int{2099, 12, 31}
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || (i > 0 && len(p) != 2) || v > limits[i] || (i == 0 && v < 1970) || (i > 0 && v < 1) {
			return false
		}
	}
	return true
}

// isHostPort reports host:port, the name Envoy gives its spans by default
// (Zipkin's recorded Envoy trace: "localhost:10000"): one name per
// upstream, not per request.
func isHostPort(w string) bool {
	i := strings.LastIndexByte(w, ':')
	if i <= 0 || len(w)-i-1 < 1 || len(w)-i-1 > 5 || !allDigits(w[i+1:]) {
		return false
	}
	if p, err := strconv.Atoi(w[i+1:]); err != nil || p > 65535 {
		return false
	}
	for _, r := range w[:i] {
		if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func nameHasID(name string) bool {
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == ' ' || name[i] == '/' || name[i] == '\t' {
			if i > start && idWord(name[start:i]) {
				return true
			}
			start = i + 1
		}
	}
	return false
}

func containsDigitOrAt(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] >= '0' && s[i] <= '9') || s[i] == '@' {
			return true
		}
	}
	return false
}

func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i]-'0' < 10 {
			n++
		}
	}
	return n
}

// isVersionLike keeps "1.1", "v2", "HTTP/1.1"-style words.
func isVersionLike(w string) bool {
	l := strings.ToLower(w)
	v := strings.TrimPrefix(l, "v")
	if len(v) == 0 || len(v) > 8 || (v == l && !strings.Contains(v, ".")) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if (v[i] < '0' || v[i] > '9') && v[i] != '.' {
			return false
		}
	}
	return true
}

// secretKeyKind says whether an attribute key names a credential by
// itself ("password", "bearer_token" for authorization headers, API keys
// and tokens), or "".
func secretKeyKind(key string) string {
	lk := strings.ToLower(key)
	switch {
	case strings.Contains(lk, "password") || strings.Contains(lk, "passwd"):
		return "password"
	// The Authorization header is the key's last part
	// (http.request.header.authorization, proxy-authorization); a namespace
	// such as spring.security.authorization.decision holds the outcome of
	// an access check, never a credential.
	case strings.HasSuffix(lk[strings.LastIndexByte(lk, '.')+1:], "authorization") ||
		strings.HasSuffix(lk, "api_key") || strings.HasSuffix(lk, "apikey") ||
		strings.HasSuffix(lk, "x-api-key") || strings.HasSuffix(lk, "secret") || strings.HasSuffix(lk, "access_token") ||
		strings.HasSuffix(lk, "refresh_token"):
		return "bearer_token"
	}
	return ""
}

// sensitive classifies an attribute value as a secret or personal data and
// returns a masked example, or "". keyKind is secretKeyKind of its key.
func sensitive(keyKind, v string) (typ, masked string) {
	if len(v) < 6 {
		return "", ""
	}
	// A token is the run of token characters after "Bearer ": a template's
	// reference in its place ("Bearer ${AUTH_TOKEN}" in a Robot Framework
	// keyword's arguments, "{{token}}" in a request template) is no
	// credential.
	if i := indexBearer(v); i >= 0 {
		tok := strings.TrimSpace(v[i+7:])
		if n := token68Len(tok); n >= 12 {
			return "bearer_token", v[i:i+7] + maskToken(tok[:n])
		}
	}
	if keyKind != "" && !withheld(v) {
		return keyKind, maskToken(v)
	}
	if k := strings.Index(v, "://"); k >= 0 {
		rest := v[k+3:]
		if at := strings.IndexByte(rest, '@'); at > 0 {
			if end := strings.IndexAny(rest, "/?#"); end < 0 || at < end {
				// Instrumentations that record a connection URL often
				// mask its password themselves (amqplib's messaging.url
				// "amqp://guest:***@host"): nothing leaks then.
				if c := strings.IndexByte(rest[:at], ':'); c > 0 && !withheld(rest[c+1:at]) {
					return "credentials_in_url", v[:k+3] + rest[:c] + ":****" + rest[at:min(len(rest), at+40)]
				}
			}
		}
	}
	if m := findEmail(v); m != "" {
		return "email", m
	}
	if countDigits(v) >= 13 {
		if m := findCard(v); m != "" {
			return "card_number", m
		}
	}
	return "", ""
}

// token68Len is the length of the leading run of characters a bearer
// token is made of (RFC 6750's b64token: letters, digits, -._~+/ and
// trailing =).
func token68Len(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return i
		}
	}
	return len(s)
}

// withheld reports a secret's value that is not there: empty, masked
// ("***"), marked redacted, or a template's reference to it.
func withheld(v string) bool {
	switch strings.ToLower(strings.Trim(v, "[]<>")) {
	case "", "redacted", "masked", "hidden":
		return true
	}
	return strings.Contains(v, "***") || templateRef(v)
}

// templateRef reports a value that names a secret instead of holding it:
// a template or environment reference ("${DB_PASSWORD}", "{{token}}",
// "$API_KEY", "<your-key>"), after an auth scheme word if any.
func templateRef(v string) bool {
	v = strings.TrimSpace(v)
	if f := strings.Fields(v); len(f) == 2 && (strings.EqualFold(f[0], "bearer") || strings.EqualFold(f[0], "basic") || strings.EqualFold(f[0], "token")) {
		v = f[1]
	}
	switch {
	case strings.HasPrefix(v, "${") && strings.HasSuffix(v, "}"), strings.HasPrefix(v, "{{") && strings.HasSuffix(v, "}}"),
		strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">"):
		return true
	case len(v) > 1 && v[0] == '$':
		return strings.TrimFunc(v[1:], func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' }) == ""
	}
	return false
}

// indexBearer finds "Bearer " in any common casing without scanning the
// value once per position.
func indexBearer(s string) int {
	for _, tail := range []string{"earer ", "EARER "} {
		from := 0
		for {
			i := strings.Index(s[from:], tail)
			if i < 0 {
				break
			}
			i += from
			if i > 0 && (s[i-1] == 'b' || s[i-1] == 'B') {
				return i - 1
			}
			from = i + 1
		}
	}
	return -1
}

func maskToken(tok string) string {
	if len(tok) <= 8 {
		return "****"
	}
	return tok[:4] + fmt.Sprintf("…(%d chars hidden)", len(tok)-4)
}

func isEmailLocal(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0
}

func isDomainByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
}

// findEmail returns a masked address when v contains one.
func findEmail(v string) string {
	for at := strings.IndexByte(v, '@'); at >= 0; {
		i := at
		for i > 0 && isEmailLocal(v[i-1]) {
			i--
		}
		j := at + 1
		for j < len(v) && isDomainByte(v[j]) {
			j++
		}
		local, domain := v[i:at], strings.TrimRight(v[at+1:j], ".-")
		dot := strings.LastIndexByte(domain, '.')
		if len(local) > 0 && dot > 0 && len(domain)-dot-1 >= 2 && !strings.Contains(local, "***") {
			tld := domain[dot+1:]
			alpha := true
			for k := 0; k < len(tld); k++ {
				if !((tld[k] >= 'a' && tld[k] <= 'z') || (tld[k] >= 'A' && tld[k] <= 'Z')) {
					alpha = false
				}
			}
			if alpha {
				return local[:1] + "***@***." + tld
			}
		}
		next := strings.IndexByte(v[at+1:], '@')
		if next < 0 {
			break
		}
		at += 1 + next
	}
	return ""
}

// findCard returns a masked card number when v holds a run of 13-19
// digits (spaces or dashes allowed between groups) with a card brand's
// prefix and a valid Luhn check digit. Brand prefixes keep timestamps and
// ids (which pass Luhn one time in ten) out.
func findCard(v string) string {
	digits := make([]byte, 0, 19)
	// A card number stands alone: a digit run glued to letters
	// (ord_4111…, abc4111…) is part of an identifier.
	startOK := true
	flush := func(next byte) string {
		n := len(digits)
		if startOK && !isWordByte(next) && n >= 13 && n <= 19 && cardBrand(digits) && luhn(digits) {
			return strings.Repeat("*", n-4) + string(digits[n-4:])
		}
		return ""
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			if len(digits) == 0 {
				startOK = i == 0 || !isWordByte(v[i-1])
			}
			digits = append(digits, c)
			if len(digits) > 19 {
				// Too long for a card: skip the rest of the run.
				for i+1 < len(v) && ((v[i+1] >= '0' && v[i+1] <= '9') || v[i+1] == ' ' || v[i+1] == '-') {
					i++
				}
				digits = digits[:0]
			}
		case (c == ' ' || c == '-') && len(digits) > 0 && i+1 < len(v) && v[i+1] >= '0' && v[i+1] <= '9':
		default:
			if m := flush(c); m != "" {
				return m
			}
			digits = digits[:0]
		}
	}
	return flush(' ')
}

func cardBrand(d []byte) bool {
	n := len(d)
	p2 := int(d[0]-'0')*10 + int(d[1]-'0')
	p4 := p2*100 + int(d[2]-'0')*10 + int(d[3]-'0')
	switch {
	case d[0] == '4':
		return n == 13 || n == 16 || n == 19 // Visa
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720:
		return n == 16 // Mastercard
	case p2 == 34 || p2 == 37:
		return n == 15 // Amex
	case p4 == 6011 || p2 == 65:
		return n >= 16 // Discover
	}
	return false
}

func luhn(d []byte) bool {
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i] - '0')
		if double {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

// fragmentOfNamed reports a span sharing its id with another span that
// names a service.
func fragmentOfNamed(t *Trace, n *Node) bool {
	o := t.ByID[n.Span.SpanID]
	return o != nil && o != n && o.Span.Service != "" && !strings.HasPrefix(o.Span.Service, model.UnknownService)
}
