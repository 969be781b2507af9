package analyze

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// CacheMiss finds a cache lookup that missed followed by the expensive
// fetch the cache was meant to avoid.
type CacheMiss struct {
	MinFallbackMS float64 `yaml:"min_fallback_ms"`
}

// NewCacheMiss returns the detector with docs/patterns.md defaults.
func NewCacheMiss() *CacheMiss { return &CacheMiss{MinFallbackMS: 50} }

func init() { Register(func() Detector { return NewCacheMiss() }) }

// Kind implements Detector.
func (*CacheMiss) Kind() string { return "cache_miss" }

// CacheMissEvidence is the evidence of a cache_miss finding.
type CacheMissEvidence struct {
	KeyShape string  `json:"key_shape"`
	Key      string  `json:"key,omitempty"` // first key seen
	System   string  `json:"system,omitempty"`
	Lookup   SpanRef `json:"lookup"`
	// Signal is how the miss was recognised: cache_hit_false,
	// miss_attribute, miss_event or get_fetch_set.
	Signal     string    `json:"signal"`
	Misses     int       `json:"misses"`
	Fallback   []SpanRef `json:"fallback"`
	FallbackMS float64   `json:"fallback_ms"` // wall-clock of the fetches
	WroteBack  bool      `json:"wrote_back"`  // a SET of the same key followed
	CostMS     float64   `json:"cost_ms"`     // critical-path time of the fetches
}

var cacheSystems = map[string]bool{"redis": true, "memcached": true, "valkey": true, "hazelcast": true,
	"aerospike": true, "ehcache": true, "caffeine": true, "keydb": true, "dragonfly": true, "geode": true, "coherence": true}

var cacheReads = map[string]bool{"GET": true, "MGET": true, "HGET": true, "HGETALL": true, "HMGET": true,
	"GETS": true, "GETEX": true, "JSON.GET": true}

var cacheWrites = map[string]bool{"SET": true, "SETEX": true, "SETNX": true, "PSETEX": true, "HSET": true,
	"HMSET": true, "MSET": true, "ADD": true, "REPLACE": true, "CAS": true, "JSON.SET": true, "PUT": true}

// cacheOp returns the command and key of a cache span, or ok=false.
func cacheOp(n *Node) (cmd, key, system string, ok bool) {
	s := n.Span
	system = nodeDBSystem(n)
	if !cacheSystems[strings.ToLower(system)] {
		if _, has := s.Attrs.First("cache.hit", "cache.key", "cache.name"); !has {
			return "", "", "", false
		}
		system = nonEmpty(s.Attrs.Str("cache.system", "cache.name"), "cache")
	}
	stmt := s.Attrs.Str("db.query.text", "db.statement")
	if stmt == "" {
		stmt = s.Name
	}
	// Only the first two words are read: the statement is not split
	// into a slice (the look-ahead reads each cache call many times).
	var f [2]string
	nf := 0
	for w := range strings.FieldsSeq(stmt) {
		f[nf] = w
		if nf++; nf == len(f) {
			break
		}
	}
	if op := s.Attrs.Str("db.operation.name", "db.operation", "cache.operation"); op != "" {
		cmd = strings.ToUpper(op)
	} else if nf > 0 {
		cmd = strings.ToUpper(f[0])
	}
	key = s.Attrs.Str("cache.key", "db.redis.key", "db.memcached.key")
	if key == "" && nf > 1 {
		key = f[1]
	}
	return cmd, key, system, true
}

// cacheOps keeps cacheOp's answers for one Detect: the look-ahead after
// each lookup asks them of the same siblings again and again.
type cacheOps struct {
	t    *Trace
	done []bool
	ops  map[int]cacheOpResult // only of the cache calls
}

type cacheOpResult struct{ cmd, key, system string }

func newCacheOps(t *Trace) *cacheOps {
	return &cacheOps{t: t, done: make([]bool, len(t.Nodes)), ops: map[int]cacheOpResult{}}
}

// of is cacheOp(n), read once per node of the trace.
func (c *cacheOps) of(n *Node) (cmd, key, system string, ok bool) {
	if n.Index < 0 || n.Index >= len(c.t.Nodes) || c.t.Nodes[n.Index] != n {
		return cacheOp(n)
	}
	if !c.done[n.Index] {
		c.done[n.Index] = true
		if cmd, key, system, ok := cacheOp(n); ok {
			c.ops[n.Index] = cacheOpResult{cmd, key, system}
		}
	}
	r, ok := c.ops[n.Index]
	return r.cmd, r.key, r.system, ok
}

// CacheKeyShape collapses the ids in a cache key ("product:123" →
// "product:?"), so the keys one code path reads read as one.
func CacheKeyShape(key string) string {
	if key == "" {
		return ""
	}
	parts := strings.FieldsFunc(key, func(r rune) bool { return r == ':' || r == '/' || r == '|' || r == '#' })
	if len(parts) <= 1 {
		return strings.TrimPrefix(NormalizeStatement("GET "+key), "GET ")
	}
	var b strings.Builder
	pos := 0
	for _, p := range parts {
		i := strings.Index(key[pos:], p) + pos
		b.WriteString(key[pos:i])
		if LooksLikeID(p) {
			b.WriteByte('?')
		} else {
			b.WriteString(p)
		}
		pos = i + len(p)
	}
	b.WriteString(key[pos:])
	return b.String()
}

// missSignal reports whether a lookup says by itself that it missed.
func missSignal(s *model.Span) string {
	if v, ok := s.Attrs.First("cache.hit", "db.cache.hit", "cache_hit"); ok {
		if (v.Type == model.TypeBool && !v.Bool) || strings.EqualFold(v.AsString(), "false") {
			return "cache_hit_false"
		}
		return ""
	}
	for _, k := range []string{"cache.result", "cache.status", "cache.outcome"} {
		if v := strings.ToLower(s.Attrs.Str(k)); v == "miss" || v == "missed" {
			return "miss_attribute"
		}
	}
	if v, ok := s.Attrs.Get("cache.miss"); ok && v.Type == model.TypeBool && v.Bool {
		return "miss_attribute"
	}
	for i := range s.Events {
		switch strings.ToLower(s.Events[i].Name) {
		case "miss", "cache.miss", "cache_miss", "cache miss":
			return "miss_event"
		}
	}
	return ""
}

// fetchedBefore keeps the fallback calls that ended by the time the key
// was written back: the value written cannot come from a call still
// running. One that began just before the write and ran on is another
// request's query, which a pool (mysql2's) ran under this request's
// context when it handed over the connection this one released.
func fetchedBefore(fallback []*Node, write *Node) []*Node {
	kept := fallback[:0]
	for _, f := range fallback {
		if f.End() <= write.Start()+timingTolerance(f, write) {
			kept = append(kept, f)
		}
	}
	return kept
}

// Detect implements Detector. The fallback is what the lookup's miss
// triggered: a read-through cache's own children (the loader runs inside
// the lookup span), else the following sibling calls up to the write-back
// of the same key (or, without a write-back, the next call). An explicit
// GET without a miss signal counts only when a fetch and a SET of the same
// key follow it, so a hit never matches. Misses of one key shape under one
// parent make one finding.
func (d *CacheMiss) Detect(t *Trace, _ *Env) []Finding {
	type group struct {
		ev       CacheMissEvidence
		lookup   *Node
		fallback []*Node
		ids      []string
		parent   *Node
	}
	var groups []*group
	index := map[[2]string]*group{}
	ops := newCacheOps(t)
	for _, n := range t.Nodes {
		if n.Parent == nil {
			continue
		}
		cmd, key, system, ok := ops.of(n)
		if !ok {
			continue
		}
		sig := missSignal(n.Span)
		explicitHit := false
		if v, ok := n.Span.Attrs.First("cache.hit", "db.cache.hit"); ok && sig == "" {
			explicitHit = v.AsString() == "true"
		}
		if sig == "" && (explicitHit || !cacheReads[cmd]) {
			continue
		}
		var fallback []*Node
		wrote := false
		for _, c := range n.Children {
			if IsCall(c) || len(c.Children) > 0 {
				if _, _, _, isCache := ops.of(c); !isCache {
					fallback = append(fallback, c)
				}
			}
		}
		if len(fallback) == 0 {
			// The fetch and the write-back follow the lookup closely; a
			// bounded look-ahead keeps parents with thousands of cache
			// calls linear.
			all := n.Parent.Children
			// Clock rounding can show the fetch starting up to a ms
			// before the lookup "ended" (timing.go).
			i0 := sort.Search(len(all), func(i int) bool { return all[i].Start()+1e6 >= n.End() })
			sibs := all[i0:min(len(all), i0+cacheLookahead)]
			for _, s := range sibs {
				if s == n {
					continue
				}
				if c2, k2, _, isCache := ops.of(s); isCache {
					if cacheWrites[c2] && k2 == key && key != "" {
						wrote = true
						fallback = fetchedBefore(fallback, s)
						break
					}
					continue
				}
				if !IsCall(s) && len(s.Children) == 0 {
					continue
				}
				fallback = append(fallback, s)
				if sig != "" && !hasLaterWrite(ops, sibs, s, key) {
					break
				}
			}
			if sig == "" && !wrote {
				continue // a GET without a miss signal and no write-back: most likely a hit
			}
		}
		if len(fallback) == 0 {
			continue
		}
		if sig == "" {
			sig = "get_fetch_set"
		}
		var lo, hi uint64
		for i, f := range fallback {
			if i == 0 || f.Start() < lo {
				lo = f.Start()
			}
			hi = max(hi, f.End())
		}
		wall := hi - lo
		if NS(wall) < d.MinFallbackMS {
			continue
		}
		shape := CacheKeyShape(key)
		gk := [2]string{spanIDOf(t, n.Parent), shape}
		g := index[gk]
		if g == nil {
			g = &group{lookup: n, parent: n.Parent, ev: CacheMissEvidence{KeyShape: shape, Key: model.Clip(key, 120), System: system,
				Lookup: RefOf(t, n), Signal: sig, WroteBack: wrote}}
			index[gk] = g
			groups = append(groups, g)
		}
		g.ev.Misses++
		g.ev.FallbackMS += NS(wall)
		g.ids = append(g.ids, spanIDOf(t, n))
		for _, f := range fallback {
			g.fallback = append(g.fallback, f)
			g.ev.Fallback = append(g.ev.Fallback, RefOf(t, f))
			g.ids = append(g.ids, spanIDOf(t, f))
		}
	}
	var out []Finding
	for _, g := range groups {
		cost := critUnder(t, g.fallback...)
		g.ev.CostMS = roundMS(cost)
		g.ev.FallbackMS = float64(int64(g.ev.FallbackMS*10+0.5)) / 10
		what := "a miss"
		if g.ev.Misses > 1 {
			what = fmt.Sprintf("%d misses", g.ev.Misses)
		}
		keyText := g.ev.KeyShape
		if keyText == "" {
			keyText = g.lookup.Span.Name
		}
		// The fetch the miss paid for is the costliest fallback span, not
		// the first: a pool's connect or a cheap lookup often opens it.
		fetch := spanLabel(t, longestSpan(g.fallback))
		title := fmt.Sprintf("cache %s on %s under %s fell back to %s (%.0f ms)", what, keyText, displayOp(g.parent), fetch, g.ev.FallbackMS)
		fix := "Check the key's TTL and eviction (is it written back, with a TTL long enough for its read rate?), warm the cache for hot keys, " +
			"and coalesce concurrent misses so one fetch fills the key."
		if !g.ev.WroteBack && g.ev.Signal != "get_fetch_set" {
			fix = "The fetched value is not written back here: populate the cache after the fetch (with a TTL) so the next request hits. " + fix
		}
		out = append(out, Finding{Kind: d.Kind(), Severity: SeverityForImpact(cost, critTotal(t)), Title: title, SpanIDs: g.ids,
			ImpactMS: roundMS(cost), Evidence: g.ev, Fix: fix})
	}
	return out
}

const cacheLookahead = 24

func hasLaterWrite(ops *cacheOps, sibs []*Node, after *Node, key string) bool {
	if key == "" {
		return false
	}
	for _, s := range sibs {
		if s.Start()+1e6 < after.End() {
			continue
		}
		if c, k, _, ok := ops.of(s); ok && cacheWrites[c] && k == key {
			return true
		}
	}
	return false
}

// longestSpan returns the longest of ns (the first of equals).
func longestSpan(ns []*Node) *Node {
	var best *Node
	for _, n := range ns {
		if best == nil || n.Duration() > best.Duration() {
			best = n
		}
	}
	return best
}
