// Package zipkin converts Zipkin v2 JSON spans to and from tracedx's model.
//
// Mapping (both directions):
//   - kind CLIENT/SERVER/PRODUCER/CONSUMER map to the OTLP kinds; a span
//     without kind is a local span (INTERNAL).
//   - localEndpoint.serviceName is the service (resource service.name); the
//     local address and port become network.local.address/port.
//   - remoteEndpoint becomes peer.service, network.peer.address and
//     network.peer.port.
//   - tags become string attributes; the "error" tag becomes status ERROR with
//     the tag value as status message.
//   - annotations become events.
//   - 64-bit trace ids are left-padded to 128 bits (and written back as 16 hex
//     characters when the high half is zero).
//   - A shared SERVER span (Zipkin's B3 single-host convention, where client
//     and server report the same span id) gets a derived span id and the
//     client span as parent, so that every span id in a trace is unique and the
//     tree stays a tree. It carries zipkin.shared=true so FromModel can undo it,
//     and the parent it named as zipkin.shared.parent_id: when the client half
//     is never reported, the analysis hangs the server half there.
package zipkin

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// Endpoint is a Zipkin v2 endpoint.
type Endpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
	IPv4        string `json:"ipv4,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	Port        int    `json:"port,omitempty"`
}

// Annotation is a Zipkin v2 annotation (timestamp in microseconds).
type Annotation struct {
	Timestamp uint64 `json:"timestamp"`
	Value     string `json:"value"`
}

// Span is one Zipkin v2 span as found in JSON (timestamps in microseconds).
type Span struct {
	TraceID        string            `json:"traceId"`
	ID             string            `json:"id"`
	ParentID       string            `json:"parentId,omitempty"`
	Name           string            `json:"name,omitempty"`
	Kind           string            `json:"kind,omitempty"`
	Timestamp      uint64            `json:"timestamp,omitempty"`
	Duration       uint64            `json:"duration,omitempty"`
	Debug          bool              `json:"debug,omitempty"`
	Shared         bool              `json:"shared,omitempty"`
	LocalEndpoint  *Endpoint         `json:"localEndpoint,omitempty"`
	RemoteEndpoint *Endpoint         `json:"remoteEndpoint,omitempty"`
	Annotations    []Annotation      `json:"annotations,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// Attribute keys written by the conversion.
const (
	AttrShared       = "zipkin.shared"
	AttrSharedParent = "zipkin.shared.parent_id"
	AttrPeerService  = "peer.service"
	AttrPeerAddress  = "network.peer.address"
	AttrPeerPort     = "network.peer.port"
	AttrLocalAddress = "network.local.address"
	AttrLocalPort    = "network.local.port"
)

// InvalidSpansError reports spans that were dropped from an otherwise valid
// batch (bad ids). ToModel returns it together with the valid spans, so a
// server can answer with a partial success.
type InvalidSpansError struct {
	Rejected int
	// First holds the first few reasons, enough for an error message.
	First []error
}

func (e *InvalidSpansError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d zipkin span(s) rejected", e.Rejected)
	for i, err := range e.First {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

const maxReasons = 3

// ToModel decodes a Zipkin v2 JSON array of spans. When the JSON itself is
// malformed it returns (nil, err). When only some spans are invalid it
// returns the valid spans and an *InvalidSpansError.
func ToModel(data []byte) ([]model.Span, error) {
	var zs []Span
	if err := json.Unmarshal(data, &zs); err != nil {
		return nil, fmt.Errorf("decode zipkin v2 json (expected an array of spans): %w", err)
	}
	return Convert(zs)
}

// Convert converts decoded Zipkin spans; see ToModel for the error contract.
func Convert(zs []Span) ([]model.Span, error) {
	out := make([]model.Span, 0, len(zs))
	var bad *InvalidSpansError
	merged := mergeFragments(zs)
	for i := range zs {
		if merged[i] {
			continue
		}
		s, err := convertSpan(&zs[i])
		if err != nil {
			if bad == nil {
				bad = &InvalidSpansError{}
			}
			bad.Rejected++
			if len(bad.First) < maxReasons {
				bad.First = append(bad.First, fmt.Errorf("span %d: %w", i, err))
			}
			continue
		}
		out = append(out, s)
	}
	if bad != nil {
		return out, bad
	}
	return out, nil
}

// mergeFragments folds spans without timestamp into a timed span of the
// same trace, id and shared flag in the batch, as Zipkin does when it
// reads a trace: such a fragment is a late report of that span (a
// tracer that flushed a tag or an annotation after the span was sent;
// SmartThings' platformapi sends 84 of them in one trace). The timed span
// keeps its own values; the fragment adds the tags, annotations, name,
// kind and endpoints it lacks. It returns which entries were merged away.
func mergeFragments(zs []Span) []bool {
	type key struct {
		trace, id string
		shared    bool
	}
	var timed map[key]int
	var merged []bool
	for i := range zs {
		if zs[i].Timestamp != 0 {
			continue
		}
		if timed == nil {
			timed = make(map[key]int, len(zs))
			for j := range zs {
				if zs[j].Timestamp != 0 {
					timed[key{zs[j].TraceID, zs[j].ID, zs[j].Shared}] = j
				}
			}
			merged = make([]bool, len(zs))
		}
		j, ok := timed[key{zs[i].TraceID, zs[i].ID, zs[i].Shared}]
		if !ok {
			continue
		}
		mergeInto(&zs[j], &zs[i])
		merged[i] = true
	}
	if merged == nil {
		return make([]bool, len(zs))
	}
	return merged
}

func mergeInto(dst, frag *Span) {
	if dst.Name == "" {
		dst.Name = frag.Name
	}
	if dst.Kind == "" {
		dst.Kind = frag.Kind
	}
	if dst.ParentID == "" {
		dst.ParentID = frag.ParentID
	}
	if dst.LocalEndpoint == nil {
		dst.LocalEndpoint = frag.LocalEndpoint
	}
	if dst.RemoteEndpoint == nil {
		dst.RemoteEndpoint = frag.RemoteEndpoint
	}
	dst.Annotations = append(dst.Annotations, frag.Annotations...)
	for k, v := range frag.Tags {
		if _, ok := dst.Tags[k]; ok {
			continue
		}
		if dst.Tags == nil {
			dst.Tags = map[string]string{}
		}
		dst.Tags[k] = v
	}
}

func convertSpan(z *Span) (model.Span, error) {
	var s model.Span
	tid, err := model.ParseTraceID(z.TraceID)
	if err != nil {
		return s, err
	}
	if tid.IsZero() {
		return s, fmt.Errorf("%w: trace id is all zeros", model.ErrBadID)
	}
	sid, err := model.ParseSpanID(z.ID)
	if err != nil {
		return s, err
	}
	if sid.IsZero() {
		return s, fmt.Errorf("%w: span id is all zeros", model.ErrBadID)
	}
	var parent model.SpanID
	if z.ParentID != "" {
		if parent, err = model.ParseSpanID(z.ParentID); err != nil {
			return s, fmt.Errorf("parent: %w", err)
		}
	}
	// Microseconds times 1000 must fit the model's nanoseconds; a wrapped
	// value would be stored as a plausible but wrong time.
	const maxMicros = math.MaxUint64 / 1000
	if z.Timestamp > maxMicros || z.Duration > maxMicros-z.Timestamp {
		return s, fmt.Errorf("timestamp %d µs plus duration %d µs is out of range", z.Timestamp, z.Duration)
	}
	s.TraceID, s.SpanID, s.ParentSpanID = tid, sid, parent
	s.Name = z.Name
	s.StartUnixNano = z.Timestamp * 1000
	s.EndUnixNano = (z.Timestamp + z.Duration) * 1000
	if z.Timestamp == 0 {
		// Zipkin leaves timestamp out of spans it could not time (a late
		// fragment, a span whose start was lost); their annotations, when
		// there are any, still say when they ran. Without any the start
		// stays 0, which readers must drop rather than show at 1970.
		s.StartUnixNano, s.EndUnixNano = annotationSpan(z.Annotations, z.Duration)
	}
	switch strings.ToUpper(z.Kind) {
	case "CLIENT":
		s.Kind = model.KindClient
	case "SERVER":
		s.Kind = model.KindServer
	case "PRODUCER":
		s.Kind = model.KindProducer
	case "CONSUMER":
		s.Kind = model.KindConsumer
	default:
		s.Kind = model.KindInternal
	}
	s.Service = model.UnknownService
	if le := z.LocalEndpoint; le != nil && le.ServiceName != "" {
		s.Service = le.ServiceName
		s.Resource = model.Attrs{{Key: "service.name", Value: model.Str(le.ServiceName)}}
	}

	keys := make([]string, 0, len(z.Tags))
	for k := range z.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make(model.Attrs, 0, len(keys)+6)
	for _, k := range keys {
		v := z.Tags[k]
		if k == "error" {
			s.StatusCode = model.StatusError
			if v != "true" {
				s.StatusMessage = v
			}
			continue
		}
		attrs = append(attrs, model.Attr{Key: k, Value: model.Str(v)})
	}
	// OpenTelemetry's Zipkin mapping carries the span status in
	// otel.status_code (and its description); Brave's error tag, when
	// also there, has already said the same.
	switch z.Tags["otel.status_code"] {
	case "ERROR":
		if s.StatusCode != model.StatusError {
			s.StatusCode, s.StatusMessage = model.StatusError, z.Tags["otel.status_description"]
		}
	case "OK":
		if s.StatusCode != model.StatusError {
			s.StatusCode = model.StatusOK
		}
	}
	attrs = appendEndpoint(attrs, z.LocalEndpoint, "", AttrLocalAddress, AttrLocalPort)
	attrs = appendEndpoint(attrs, z.RemoteEndpoint, AttrPeerService, AttrPeerAddress, AttrPeerPort)
	if z.Shared && s.Kind == model.KindServer {
		// The client half owns the id; the server half becomes its child.
		s.ParentSpanID = sid
		s.SpanID = sharedID(sid)
		attrs = append(attrs, model.Attr{Key: AttrShared, Value: model.Bool(true)})
		if !parent.IsZero() {
			attrs = append(attrs, model.Attr{Key: AttrSharedParent, Value: model.Str(parent.String())})
		}
	}
	if len(attrs) > 0 {
		s.Attrs = attrs
	}
	if len(z.Annotations) > 0 {
		s.Events = make([]model.Event, len(z.Annotations))
		for i, a := range z.Annotations {
			s.Events[i] = model.Event{TimeUnixNano: a.Timestamp * 1000, Name: a.Value}
		}
	}
	return s, nil
}

// annotationSpan returns the earliest annotation as start and, as end, the
// later of the last annotation and start plus dur (all µs, returned in ns);
// zeros when no annotation has a time.
func annotationSpan(as []Annotation, dur uint64) (start, end uint64) {
	const maxMicros = math.MaxUint64 / 1000
	var lo, hi uint64
	for _, a := range as {
		if a.Timestamp == 0 || a.Timestamp > maxMicros {
			continue
		}
		if lo == 0 || a.Timestamp < lo {
			lo = a.Timestamp
		}
		hi = max(hi, a.Timestamp)
	}
	if lo == 0 {
		return 0, 0
	}
	if dur <= maxMicros-lo {
		hi = max(hi, lo+dur)
	}
	return lo * 1000, hi * 1000
}

func appendEndpoint(attrs model.Attrs, e *Endpoint, svcKey, addrKey, portKey string) model.Attrs {
	if e == nil {
		return attrs
	}
	if svcKey != "" && e.ServiceName != "" {
		attrs = append(attrs, model.Attr{Key: svcKey, Value: model.Str(e.ServiceName)})
	}
	if e.IPv4 != "" {
		attrs = append(attrs, model.Attr{Key: addrKey, Value: model.Str(e.IPv4)})
	} else if e.IPv6 != "" {
		attrs = append(attrs, model.Attr{Key: addrKey, Value: model.Str(e.IPv6)})
	}
	if e.Port != 0 {
		attrs = append(attrs, model.Attr{Key: portKey, Value: model.Int(int64(e.Port))})
	}
	return attrs
}

// sharedID derives a stable, non-zero span id for the server half of a
// shared span, so that retries of the same span deduplicate.
func sharedID(id model.SpanID) model.SpanID {
	h := fnv.New64a()
	h.Write([]byte("zipkin-shared"))
	h.Write(id[:])
	var out model.SpanID
	binary.BigEndian.PutUint64(out[:], h.Sum64()|1)
	return out
}

// FromModel encodes spans as a Zipkin v2 JSON array.
func FromModel(spans []model.Span) ([]byte, error) {
	zs := FromModelSpans(spans)
	b, err := json.Marshal(zs)
	if err != nil {
		return nil, fmt.Errorf("encode zipkin json: %w", err)
	}
	return b, nil
}

// FromModelSpans converts spans to Zipkin v2 spans. Attribute values are
// rendered as text (Zipkin tags are strings); resource attributes other than
// service.name become tags too, since Zipkin has no resource.
func FromModelSpans(spans []model.Span) []Span {
	// Shared server spans need their client's parent, which is in the batch
	// when both halves are exported together.
	byID := make(map[model.SpanID]*model.Span, len(spans))
	for i := range spans {
		byID[spans[i].SpanID] = &spans[i]
	}
	out := make([]Span, 0, len(spans))
	for i := range spans {
		s := &spans[i]
		z := Span{
			TraceID:   traceIDString(s.TraceID),
			ID:        s.SpanID.String(),
			Name:      s.Name,
			Timestamp: s.StartUnixNano / 1000,
			Duration:  durationMicros(s),
		}
		if !s.ParentSpanID.IsZero() {
			z.ParentID = s.ParentSpanID.String()
		}
		switch s.Kind {
		case model.KindClient:
			z.Kind = "CLIENT"
		case model.KindServer:
			z.Kind = "SERVER"
		case model.KindProducer:
			z.Kind = "PRODUCER"
		case model.KindConsumer:
			z.Kind = "CONSUMER"
		}
		if s.Service != "" && s.Service != model.UnknownService {
			z.LocalEndpoint = &Endpoint{ServiceName: s.Service}
		}
		tags := map[string]string{}
		for _, a := range s.Attrs {
			switch a.Key {
			case AttrShared:
				if a.Value.Type == model.TypeBool && a.Value.Bool && !s.ParentSpanID.IsZero() {
					z.Shared = true
					z.ID = s.ParentSpanID.String()
					z.ParentID = ""
					if c, ok := byID[s.ParentSpanID]; ok && !c.ParentSpanID.IsZero() {
						z.ParentID = c.ParentSpanID.String()
					} else if !ok {
						z.ParentID = s.Attrs.Str(AttrSharedParent)
					}
				}
			case AttrSharedParent:
			case AttrPeerService:
				remote(&z).ServiceName = a.Value.AsString()
			case AttrPeerAddress:
				setIP(remote(&z), a.Value.AsString())
			case AttrPeerPort:
				remote(&z).Port = portOf(a.Value)
			case AttrLocalAddress:
				setIP(local(&z), a.Value.AsString())
			case AttrLocalPort:
				local(&z).Port = portOf(a.Value)
			default:
				tags[a.Key] = a.Value.AsString()
			}
		}
		for _, a := range s.Resource {
			if a.Key == "service.name" {
				continue
			}
			if _, ok := tags[a.Key]; !ok {
				tags[a.Key] = a.Value.AsString()
			}
		}
		if s.StatusCode == model.StatusError {
			msg := s.StatusMessage
			if msg == "" {
				msg = "true"
			}
			tags["error"] = msg
		}
		if len(tags) > 0 {
			z.Tags = tags
		}
		for _, e := range s.Events {
			z.Annotations = append(z.Annotations, Annotation{Timestamp: e.TimeUnixNano / 1000, Value: e.Name})
		}
		out = append(out, z)
	}
	return out
}

func traceIDString(t model.TraceID) string {
	if [8]byte(t[:8]) == ([8]byte{}) {
		return t.String()[16:]
	}
	return t.String()
}

func durationMicros(s *model.Span) uint64 {
	d := s.DurationNano()
	if d > 0 && d < 1000 {
		return 1 // Zipkin treats 0 as "unknown"; keep sub-µs spans visible.
	}
	return d / 1000
}

func remote(z *Span) *Endpoint {
	if z.RemoteEndpoint == nil {
		z.RemoteEndpoint = &Endpoint{}
	}
	return z.RemoteEndpoint
}

func local(z *Span) *Endpoint {
	if z.LocalEndpoint == nil {
		z.LocalEndpoint = &Endpoint{}
	}
	return z.LocalEndpoint
}

func setIP(e *Endpoint, ip string) {
	if strings.Contains(ip, ":") {
		e.IPv6 = ip
	} else {
		e.IPv4 = ip
	}
}

func portOf(v model.Value) int {
	if i, ok := v.AsInt(); ok {
		return int(i)
	}
	p, _ := strconv.Atoi(v.AsString())
	return p
}

// IsInvalidSpans reports whether err only says that some spans were
// rejected (the rest of the batch is usable).
func IsInvalidSpans(err error) (*InvalidSpansError, bool) {
	var e *InvalidSpansError
	ok := errors.As(err, &e)
	return e, ok
}
