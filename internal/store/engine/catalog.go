package engine

import (
	"encoding/json"
	"math"
	"sort"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// catalog keeps the small lists behind Services, Operations,
// AttributeNames and AttributeValues in memory, each entry with the time
// span it was seen in, so those calls never touch blocks. Blocks persist
// their own catalog in meta.json; the engine's catalog is their union plus
// the head.

const (
	maxValuesPerKey = 1000
	maxValueLen     = 256
)

type seen struct{ First, Last uint64 }

func (s *seen) add(t uint64) {
	if s.First == 0 || t < s.First {
		s.First = t
	}
	if t > s.Last {
		s.Last = t
	}
}

func (s *seen) merge(o seen) {
	if o.First != 0 {
		s.add(o.First)
	}
	s.add(o.Last)
}

type opKey struct {
	Service string
	Name    string
	Kind    model.SpanKind
}

type attrKey struct {
	Scope store.Scope // ScopeSpan or ScopeResource
	Key   string
}

type valKey struct {
	T model.ValueType
	S string
}

type attrEntry struct {
	seen
	values map[valKey]model.Value
}

type catalog struct {
	mu       sync.RWMutex
	services map[string]*seen
	ops      map[opKey]*seen
	attrs    map[attrKey]*attrEntry
}

func newCatalog() *catalog {
	return &catalog{services: map[string]*seen{}, ops: map[opKey]*seen{}, attrs: map[attrKey]*attrEntry{}}
}

// addServices records services and operations; it runs on the write path,
// so it does one lock per batch and skips repeats cheaply.
func (c *catalog) addServices(spans []model.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last opKey
	var lastSeen *seen
	for i := range spans {
		s := &spans[i]
		k := opKey{s.Service, s.Name, s.Kind}
		if lastSeen != nil && k == last {
			lastSeen.add(s.StartUnixNano)
			continue
		}
		sv := c.services[s.Service]
		if sv == nil {
			sv = &seen{}
			c.services[s.Service] = sv
		}
		sv.add(s.StartUnixNano)
		o := c.ops[k]
		if o == nil {
			o = &seen{}
			c.ops[k] = o
		}
		o.add(s.StartUnixNano)
		last, lastSeen = k, o
	}
}

// addAttrs records attribute names and values; it runs off the write path
// (when the head cuts a block), as it touches every attribute.
func (c *catalog) addAttrs(spans []model.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range spans {
		s := &spans[i]
		for j := range s.Attrs {
			c.addAttrLocked(store.ScopeSpan, &s.Attrs[j], s.StartUnixNano)
		}
		for j := range s.Resource {
			c.addAttrLocked(store.ScopeResource, &s.Resource[j], s.StartUnixNano)
		}
	}
}

func (c *catalog) addAttrLocked(scope store.Scope, a *model.Attr, t uint64) {
	k := attrKey{scope, a.Key}
	e := c.attrs[k]
	if e == nil {
		e = &attrEntry{values: map[valKey]model.Value{}}
		c.attrs[k] = e
	}
	e.add(t)
	if len(e.values) >= maxValuesPerKey {
		return
	}
	v := a.Value
	if v.Type == model.TypeBytes || v.Type == model.TypeArray || v.Type == model.TypeMap {
		return
	}
	s := v.AsString()
	if len(s) > maxValueLen {
		return
	}
	vk := valKey{v.Type, s}
	if _, ok := e.values[vk]; !ok {
		e.values[vk] = v
	}
}

func (c *catalog) merge(o *catalogJSON) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range o.Services {
		e := c.services[s.Name]
		if e == nil {
			e = &seen{}
			c.services[s.Name] = e
		}
		e.merge(s.Seen)
	}
	for _, op := range o.Operations {
		k := opKey{op.Service, op.Name, op.Kind}
		e := c.ops[k]
		if e == nil {
			e = &seen{}
			c.ops[k] = e
		}
		e.merge(op.Seen)
	}
	for _, a := range o.Attrs {
		k := attrKey{a.Scope, a.Key}
		e := c.attrs[k]
		if e == nil {
			e = &attrEntry{values: map[valKey]model.Value{}}
			c.attrs[k] = e
		}
		e.seen.merge(a.Seen)
		for _, v := range a.Values {
			if len(e.values) >= maxValuesPerKey {
				break
			}
			e.values[valKey{v.Type, v.AsString()}] = v
		}
	}
}

type catalogJSON struct {
	Services   []namedSeen `json:"services"`
	Operations []opSeen    `json:"operations"`
	Attrs      []attrSeen  `json:"attrs"`
}

type namedSeen struct {
	Name string `json:"name"`
	Seen seen   `json:"seen"`
}

type opSeen struct {
	Service string         `json:"service"`
	Name    string         `json:"name"`
	Kind    model.SpanKind `json:"kind"`
	Seen    seen           `json:"seen"`
}

type attrSeen struct {
	Scope  store.Scope
	Key    string
	Seen   seen
	Values []model.Value
}

// attrSeenJSON is attrSeen as meta.json stores it. Values are kept in
// one plain list per type: a catalog holds up to 1000 values for each
// high-cardinality key (URLs, addresses, sizes), and as model.Value
// objects ({"Type":1,"Str":"...","Int":0,...}) they took ~500 KB in
// every block's meta.json, most of it field names. Blocks written before
// keep theirs in Values, which is still read.
type attrSeenJSON struct {
	Scope  store.Scope   `json:"scope"`
	Key    string        `json:"key"`
	Seen   seen          `json:"seen"`
	Strs   []string      `json:"strs,omitempty"`
	Ints   []int64       `json:"ints,omitempty"`
	Floats []float64     `json:"floats,omitempty"`
	Bools  []bool        `json:"bools,omitempty"`
	Values []model.Value `json:"values,omitempty"`
}

func (a attrSeen) MarshalJSON() ([]byte, error) {
	j := attrSeenJSON{Scope: a.Scope, Key: a.Key, Seen: a.Seen}
	for _, v := range a.Values {
		switch v.Type {
		case model.TypeString:
			j.Strs = append(j.Strs, v.Str)
		case model.TypeInt:
			j.Ints = append(j.Ints, v.Int)
		case model.TypeDouble:
			// JSON has no NaN or infinities; the catalog only offers
			// values for autocompletion, so those are left out rather
			// than failing the block's meta.json.
			if !math.IsNaN(v.Float) && !math.IsInf(v.Float, 0) {
				j.Floats = append(j.Floats, v.Float)
			}
		case model.TypeBool:
			j.Bools = append(j.Bools, v.Bool)
		default:
			j.Values = append(j.Values, v)
		}
	}
	return json.Marshal(j)
}

func (a *attrSeen) UnmarshalJSON(b []byte) error {
	var j attrSeenJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = attrSeen{Scope: j.Scope, Key: j.Key, Seen: j.Seen, Values: j.Values}
	for _, s := range j.Strs {
		a.Values = append(a.Values, model.Str(s))
	}
	for _, n := range j.Ints {
		a.Values = append(a.Values, model.Int(n))
	}
	for _, f := range j.Floats {
		a.Values = append(a.Values, model.Float(f))
	}
	for _, t := range j.Bools {
		a.Values = append(a.Values, model.Bool(t))
	}
	return nil
}

func (c *catalog) export() *catalogJSON {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := &catalogJSON{}
	for n, s := range c.services {
		out.Services = append(out.Services, namedSeen{n, *s})
	}
	for k, s := range c.ops {
		out.Operations = append(out.Operations, opSeen{k.Service, k.Name, k.Kind, *s})
	}
	for k, e := range c.attrs {
		a := attrSeen{Scope: k.Scope, Key: k.Key, Seen: e.seen}
		for _, v := range e.values {
			a.Values = append(a.Values, v)
		}
		out.Attrs = append(out.Attrs, a)
	}
	return out
}

func inRange(r store.TimeRange, s seen) bool { return r.Overlaps(s.First, s.Last) }

func (c *catalog) serviceList(r store.TimeRange) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.services))
	for n, s := range c.services {
		if inRange(r, *s) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func (c *catalog) operationList(service string, r store.TimeRange) []store.Operation {
	c.mu.RLock()
	defer c.mu.RUnlock()
	dedup := map[store.Operation]bool{}
	for k, s := range c.ops {
		if (service == "" || k.Service == service) && inRange(r, *s) {
			dedup[store.Operation{Name: k.Name, Kind: k.Kind}] = true
		}
	}
	out := make([]store.Operation, 0, len(dedup))
	for op := range dedup {
		out = append(out, op)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

func scopeMatches(want, have store.Scope) bool { return want == store.ScopeAny || want == have }

func (c *catalog) attrNames(scope store.Scope, r store.TimeRange) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	dedup := map[string]bool{}
	for k, e := range c.attrs {
		if scopeMatches(scope, k.Scope) && inRange(r, e.seen) {
			dedup[k.Key] = true
		}
	}
	out := make([]string, 0, len(dedup))
	for k := range dedup {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c *catalog) attrValues(scope store.Scope, key string, r store.TimeRange, limit int) []model.Value {
	c.mu.RLock()
	defer c.mu.RUnlock()
	dedup := map[valKey]model.Value{}
	for k, e := range c.attrs {
		if k.Key != key || !scopeMatches(scope, k.Scope) || !inRange(r, e.seen) {
			continue
		}
		for vk, v := range e.values {
			dedup[vk] = v
		}
	}
	out := make([]model.Value, 0, len(dedup))
	for _, v := range dedup {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		if out[i].Type == model.TypeInt {
			return out[i].Int < out[j].Int
		}
		return out[i].AsString() < out[j].AsString()
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
