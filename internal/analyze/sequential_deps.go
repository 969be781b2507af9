package analyze

import (
	"net/url"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// What a trace can show about whether one call of a run needs another's
// answer. A trace records requests (URLs, statements, request bodies,
// bound arguments) and sometimes answers (response bodies a proxy or an
// agent captured, values a callee logged as span events). A later call
// that sends a value which its parent never received and no earlier
// request carried, while an earlier call's answer holds it, took that
// answer as input: the two cannot run together. HotROD's frontend asks
// the driver service for drivers, which logs their locations, then asks
// for a route from each location; a shop's checkout stores the order with
// the tracking id the shipping service answered.

// seqValues is the distinctive values of a set of spans.
type seqValues map[string]struct{}

// seqDeps caches the values of the spans one Detect call looks at.
type seqDeps struct {
	t        *Trace
	hist     History
	requests map[*Node]seqValues // what the call sent (with its proxy hops and the callee's entry)
	sent     map[*Node]seqValues // what those spans record but the answer
	parents  map[*Node]seqValues // what a parent's own request records
	sentIdx  map[*Node]*seqIndex // when each value a parent's calls sent first appeared
	allIdx   map[*Node]*seqIndex // when each value first appeared in a parent's children's subtrees
	answers  map[*Node]seqValues // what the call's subtree answered or logged
	anything map[*Node]seqValues // every value in the call's subtree
	// mayAnswer holds, by node index, whether some span of the node's
	// subtree records an answer addAnswer could read: most traces record
	// none, and then no call's subtree needs reading.
	mayAnswer []bool
}

func newSeqDeps(t *Trace, hist History) *seqDeps {
	return &seqDeps{t: t, hist: hist, requests: map[*Node]seqValues{}, sent: map[*Node]seqValues{}, parents: map[*Node]seqValues{},
		sentIdx: map[*Node]*seqIndex{}, allIdx: map[*Node]*seqIndex{}, answers: map[*Node]seqValues{}, anything: map[*Node]seqValues{}}
}

// requestURLKeys and requestTextKeys hold what a request sends: its URL,
// its body, its statement. Bound arguments (requestArgPrefixes) and
// HotROD's param.* tags are read by prefix.
var (
	requestURLKeys  = []string{"url.full", "http.url", "url.path", "http.target", "http.path", "url.query"}
	requestTextKeys = []string{"http.request.body", "rpc.request.body", "db.query.text", "db.statement", "sql.query",
		"cassandra.query", "redis.args"}
)

// addRequest adds the values span s sends. A URL's scheme and host name
// the peer, not an input.
func (v seqValues) addRequest(s *model.Span) {
	for _, k := range requestURLKeys {
		if x := s.Attrs.Str(k); x != "" {
			v.addText(withoutAuthority(x))
		}
	}
	for _, k := range requestTextKeys {
		if x := s.Attrs.Str(k); x != "" {
			v.addText(x)
		}
	}
	for _, kv := range s.Attrs {
		if strings.HasPrefix(kv.Key, "param.") || hasAnyPrefix(kv.Key, requestArgPrefixes) {
			v.addText(kv.Value.AsString())
		}
	}
}

// addAnswer adds what span s shows of an answer: captured response bodies
// and results, and the values it logged. A body's size or a status code
// is no value the caller can pass on.
func (v seqValues) addAnswer(s *model.Span) {
	for _, kv := range s.Attrs {
		// Every span of every call's subtree passes here: most keys are
		// ruled out without lower-casing them.
		if !containsFold(kv.Key, "result") && !containsFold(kv.Key, "response.body") {
			continue
		}
		k := strings.ToLower(kv.Key)
		if (strings.Contains(k, "response.body") || strings.Contains(k, "result")) &&
			!strings.HasSuffix(k, ".size") && !strings.HasSuffix(k, "length") && !strings.Contains(k, "status") {
			v.addText(kv.Value.AsString())
		}
	}
	for _, e := range s.Events {
		for _, kv := range e.Attrs {
			v.addText(kv.Value.AsString())
		}
	}
}

// spanMayAnswer reports a span addAnswer may read values from: one with
// an attribute key naming a result or a response body, or with an event
// attribute.
func spanMayAnswer(s *model.Span) bool {
	for i := range s.Attrs {
		// Both words start with r: one pass finds either.
		k := s.Attrs[i].Key
		for j := 0; j < len(k); j++ {
			if k[j]|0x20 == 'r' && (hasPrefixFold(k[j:], "result") || hasPrefixFold(k[j:], "response.body")) {
				return true
			}
		}
	}
	for i := range s.Events {
		if len(s.Events[i].Attrs) > 0 {
			return true
		}
	}
	return false
}

// subtreesWith returns, by node index, whether the node or one of its
// descendants satisfies has, in one pass over the trace.
func subtreesWith(t *Trace, has func(*model.Span) bool) []bool {
	out := make([]bool, len(t.Nodes))
	for _, n := range t.Nodes {
		if !has(n.Span) {
			continue
		}
		// Ancestors already marked were reached from another span, and
		// so were theirs.
		for p := n; p != nil && !out[p.Index]; p = p.Parent {
			out[p.Index] = true
		}
	}
	return out
}

// addRequestSide adds everything span s records except its answer: the
// request with its headers, cookies and metadata (a session id travels in
// a cookie and then in several calls' bodies), and the peer's names.
func (v seqValues) addRequestSide(s *model.Span) {
	for _, kv := range s.Attrs {
		if !strings.Contains(strings.ToLower(kv.Key), "response") {
			v.addText(kv.Value.AsString())
		}
	}
}

// addAll adds every string the span carries.
func (v seqValues) addAll(s *model.Span) {
	for _, kv := range s.Attrs {
		v.addText(kv.Value.AsString())
	}
	for _, e := range s.Events {
		for _, kv := range e.Attrs {
			v.addText(kv.Value.AsString())
		}
	}
}

// addText adds the distinctive tokens of x, URL escapes decoded
// (HotROD's route request carries "pickup=549%2C75").
func (v seqValues) addText(x string) {
	if strings.Contains(x, "%") {
		if d, err := url.QueryUnescape(x); err == nil {
			x = d
		}
	}
	eachRun(x, isValueByte, func(run string) bool {
		if tok := strings.Trim(run, ".:-_@"); distinctive(tok) {
			v[tok] = struct{}{}
		}
		return false
	})
}

// eachRun calls f on each maximal run of bytes of s that in accepts, until
// f returns true; it reports whether f did.
func eachRun(s string, in func(byte) bool, f func(string) bool) bool {
	for i := 0; i < len(s); {
		if !in(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && in(s[j]) {
			j++
		}
		if f(s[i:j]) {
			return true
		}
		i = j
	}
	return false
}

// sortedValues: the values in order, so that a finding names the same one
// every time.
func sortedValues(v seqValues) []string {
	out := make([]string, 0, len(v))
	for tok := range v {
		out = append(out, tok)
	}
	sort.Strings(out)
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// isValueByte: ids, keys and numbers are runs of letters, digits and the
// separators ids use (a UUID's dashes, a dotted or colon-separated key).
func isValueByte(b byte) bool {
	return b|0x20 >= 'a' && b|0x20 <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.' || b == ':' || b == '@'
}

// distinctive: a value that could tell one item from another: at least
// three characters with a digit. Words and small numbers (a JSON field
// tag, a page size of 20) match by chance.
func distinctive(tok string) bool {
	return len(tok) >= 3 && strings.ContainsAny(tok, "0123456789")
}

// idLike: a value with letters and digits (an order code, a UUID, a
// cursor), which code rarely spells as a literal, unlike a number (a
// limit, a timeout in ms).
func idLike(tok string) bool {
	letters := strings.IndexFunc(tok, func(r rune) bool { return r|0x20 >= 'a' && r|0x20 <= 'z' }) >= 0
	return letters && distinctive(tok)
}

// request returns what call c sent: its own span, the proxy hops it went
// through and the callee's entry, which records the request as received.
// sent is everything those spans record but the answer.
func (d *seqDeps) request(c *Node) (request, sent seqValues) {
	if v, ok := d.requests[c]; ok {
		return v, d.sent[c]
	}
	request, sent = seqValues{}, seqValues{}
	add := func(s *model.Span) {
		request.addRequest(s)
		sent.addRequestSide(s)
	}
	add(c.Span)
	level := []*Node{c}
	for range proxyHops {
		var next []*Node
		for _, p := range level {
			for _, h := range p.Children {
				if proxyHop(h) {
					add(h.Span)
					next = append(next, h)
				}
			}
		}
		level = next
	}
	if e := calleeEntry(c); e != nil {
		add(e.Span)
	}
	d.requests[c], d.sent[c] = request, sent
	return request, sent
}

// subtree fills v from every span of n's subtree with add.
func subtree(n *Node, v seqValues, add func(seqValues, *model.Span)) {
	stack := []*Node{n}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		add(v, x.Span)
		stack = append(stack, x.Children...)
	}
}

// answer: what c's subtree answered or logged.
func (d *seqDeps) answer(c *Node) seqValues { return cachedSubtree(d.answers, c, seqValues.addAnswer) }

// all: every value in c's subtree.
func (d *seqDeps) all(c *Node) seqValues { return cachedSubtree(d.anything, c, seqValues.addAll) }

func cachedSubtree(m map[*Node]seqValues, c *Node, add func(seqValues, *model.Span)) seqValues {
	if v, ok := m[c]; ok {
		return v
	}
	v := seqValues{}
	subtree(c, v, add)
	m[c] = v
	return v
}

// had reports whether parent p had tok before it sent c: p's own request
// (what the spans from p up to its service entry record but the answer)
// or what sibling returns for a child of p that started before c. idx
// remembers, per parent, when each value first appeared among its
// children, so that a parent of thousands of calls is read once.
func (d *seqDeps) had(p, c *Node, tok string, idx map[*Node]*seqIndex, sibling func(*Node) seqValues) bool {
	own, ok := d.parents[p]
	if !ok {
		own = seqValues{}
		for n := p; n != nil; n = n.Parent {
			own.addRequestSide(n.Span)
			if IsServiceEntry(n) {
				break
			}
		}
		d.parents[p] = own
	}
	if _, ok := own[tok]; ok {
		return true
	}
	x := idx[p]
	if x == nil {
		x = &seqIndex{first: map[string]uint64{}}
		idx[p] = x
	}
	// Children are sorted by start.
	for ; x.next < len(p.Children) && p.Children[x.next].Start() < c.Start(); x.next++ {
		s := p.Children[x.next]
		for t := range sibling(s) {
			if _, ok := x.first[t]; !ok {
				x.first[t] = s.Start()
			}
		}
	}
	at, ok := x.first[tok]
	return ok && at < c.Start()
}

// seqIndex: the start of the first child of a parent whose values hold
// each value, over the children up to next.
type seqIndex struct {
	next  int
	first map[string]uint64
}

// sentWith: what call s sent, with its headers and metadata.
func (d *seqDeps) sentWith(s *Node) seqValues {
	_, sent := d.request(s)
	return sent
}

// SeqInput is a value a call of a run sends that nothing recorded before
// the call shows.
type SeqInput struct {
	Call   SpanRef `json:"call"`
	Target string  `json:"target"`
	Value  string  `json:"value"`
}

// answeredBy returns the call of run whose answer holds a value c sends
// that p did not have before, or nil.
func (d *seqDeps) answeredBy(p *Node, run []*Node, c *Node) *Node {
	// Most traces record no answers: then nothing c sends needs reading.
	if d.mayAnswer == nil {
		d.mayAnswer = subtreesWith(d.t, spanMayAnswer)
	}
	answered := false
	for _, a := range run {
		if d.mayAnswer[a.Index] && len(d.answer(a)) > 0 {
			answered = true
			break
		}
	}
	if !answered {
		return nil
	}
	req, _ := d.request(c)
	for _, tok := range sortedValues(req) {
		for _, a := range run {
			// A value p had before c proves nothing about c's inputs, nor
			// one that two calls which ran together elsewhere share.
			if _, ok := d.answer(a)[tok]; ok && !d.had(p, c, tok, d.sentIdx, d.sentWith) && !d.independent(p, a, c) {
				return a
			}
		}
	}
	return nil
}

// independent reports that in earlier traces of p's operation the calls to
// a's and c's targets ran at the same time, or each ran first: neither
// waits for the other's answer.
func (d *seqDeps) independent(p, a, c *Node) bool {
	e := EntryOf(p)
	if e == nil {
		return false
	}
	as, ao := CallTarget(d.t, a)
	cs, co := CallTarget(d.t, c)
	st, ok := d.hist.CallPair(e.Span.Service, e.Span.Name, [2]string{as, ao}, [2]string{cs, co})
	return ok && st.Independent()
}

// unexplained returns, for each call of run after the first, an id-like
// value it sends that nothing recorded before it shows: not p's request,
// no earlier request or answer, nothing logged ("" when there is none).
// Only while every earlier call of p is in the run: then an earlier call
// of the run is the one place the trace has left for the value to come
// from, besides input the trace does not record.
func (d *seqDeps) unexplained(p *Node, run []*Node) []string {
	out := make([]string, len(run))
	next := 0 // run[next] is the next call of the run among p's children
	for _, s := range p.Children {
		if next == len(run) {
			break
		}
		if s != run[next] {
			if IsCall(s) {
				break // a call outside the run answered before what follows
			}
			continue
		}
		if next > 0 && !d.independentOfAll(p, run[:next], s) {
			req, _ := d.request(s)
			for _, tok := range sortedValues(req) {
				// What p's calls sent is a cheap first look; their whole
				// subtrees are read only for values not found there.
				if idLike(tok) && !d.had(p, s, tok, d.sentIdx, d.sentWith) && !d.had(p, s, tok, d.allIdx, d.all) {
					out[next] = tok
					break
				}
			}
		}
		next++
	}
	return out
}

// independentOfAll: c ran together with, or before, each call of run in
// earlier traces.
func (d *seqDeps) independentOfAll(p *Node, run []*Node, c *Node) bool {
	for _, a := range run {
		if !d.independent(p, a, c) {
			return false
		}
	}
	return true
}
