package cluster

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// forwardedKey marks a gRPC request forwarded by a peer: the receiver
// stores it without looking at the ring again, so nodes whose peer lists
// disagree cannot bounce spans between them. It counts only with the peer
// token (Security.FromPeer).
const forwardedKey = "x-tracedx-forwarded-by"

// Writer is where spans of this node's traces go (the local pipeline).
type Writer interface {
	Write(ctx context.Context, spans []model.Span) error
}

// Forwarder is the ingest sink of a cluster node: it writes the spans of
// traces this node owns locally and forwards the others to their owners
// over OTLP/gRPC, acknowledging a batch only when every part is durable on
// its node. A failed forward is a retryable error (store.ErrOverloaded:
// gRPC UNAVAILABLE, HTTP 503) to the sender, never a silent drop.
type Forwarder struct {
	ring    *Ring
	sec     Security
	local   Writer
	log     *slog.Logger
	timeout time.Duration
	conns   map[string]*grpc.ClientConn
	queues  map[string]*peerQueue
	// encodeAll forwards every span encoded from the model, as before
	// spans were copied as they came (tests compare the two).
	encodeAll bool
	// noSplit leaves requests whole, to be decoded here and forwarded by
	// Write, as before they were split by owner (tests compare the two).
	noSplit bool

	forwarded *prometheus.CounterVec
	copied    prometheus.Counter
	requests  *prometheus.CounterVec
	failures  *prometheus.CounterVec
}

// NewForwarder dials (lazily) every other node, with sec's TLS; every
// forwarded batch carries sec's token and tenant.
func NewForwarder(ring *Ring, local Writer, sec Security, log *slog.Logger) (*Forwarder, error) {
	f := &Forwarder{
		ring: ring, sec: sec, local: local, log: log.With("component", "cluster"), timeout: 15 * time.Second,
		conns: map[string]*grpc.ClientConn{}, queues: map[string]*peerQueue{},
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_cluster_forwarded_spans_total",
			Help: "Spans forwarded to the node owning their trace."}, []string{"peer"}),
		copied: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_cluster_forwarded_spans_copied_total",
			Help: "Spans forwarded in the bytes they came in; the others were encoded again (the limits cut them, or they hold array or map values)."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_cluster_forward_requests_total",
			Help: "Requests forwarding spans to their owner; parts of concurrent batches for one owner share a request."}, []string{"peer"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_cluster_forward_failures_total",
			Help: "Forwarded batches that failed (the sender was told to retry)."}, []string{"peer"}),
	}
	for _, p := range ring.Others() {
		conn, err := grpc.NewClient(p.OTLPGRPC, grpc.WithTransportCredentials(sec.grpcCredentials()))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cluster: client for peer %s at %s: %w", p.ID, p.OTLPGRPC, err)
		}
		f.conns[p.ID] = conn
		f.queues[p.ID] = &peerQueue{}
	}
	return f, nil
}

// Collectors are the forwarder's metrics.
func (f *Forwarder) Collectors() []prometheus.Collector {
	return []prometheus.Collector{f.forwarded, f.copied, f.requests, f.failures}
}

// Close closes the peer connections.
func (f *Forwarder) Close() error {
	for _, c := range f.conns {
		c.Close()
	}
	return nil
}

// Write stores or forwards spans by the owner of their trace. It reorders
// spans (grouping them by owner); ingest hands over a slice it does not
// read again.
func (f *Forwarder) Write(ctx context.Context, spans []model.Span) error {
	if f.sec.FromPeer(ctx) {
		return f.local.Write(ctx, spans)
	}
	owners := make([]int32, len(spans))
	ends := make([]int, len(f.ring.peers))
	for i := range spans {
		// Spans of a trace usually come together: its owner is looked
		// up once.
		var o int32
		if i > 0 && spans[i].TraceID == spans[i-1].TraceID {
			o = owners[i-1]
		} else {
			o = int32(f.ring.ownerIndex(spans[i].TraceID))
		}
		owners[i] = o
		ends[o]++
	}
	for o, n := range ends {
		if n == len(spans) && o == f.ring.self {
			return f.local.Write(ctx, spans)
		}
	}
	// Spans are forwarded as they came where they can be, so the owner
	// decodes the sender's bytes rather than this node's encoding of them.
	var raws *otlpconv.RawIndex
	if r := ingest.RawSpansFrom(ctx); r != nil && !f.encodeAll {
		raws = otlpconv.NewRawIndex(r)
	}
	for o, n := range ends {
		if n == len(spans) {
			return f.forward(ctx, f.ring.peers[o].ID, spans, raws)
		}
	}
	starts := groupByOwner(spans, owners, ends)
	// The other owners' parts are forwarded concurrently while this
	// goroutine writes the local part.
	var wg sync.WaitGroup
	errs := make([]error, len(ends))
	for o := range ends {
		if o == f.ring.self || starts[o] == ends[o] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[o] = f.forward(ctx, f.ring.peers[o].ID, spans[starts[o]:ends[o]], raws)
		}()
	}
	if o := f.ring.self; starts[o] < ends[o] {
		errs[o] = f.local.Write(ctx, spans[starts[o]:ends[o]])
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// groupByOwner reorders spans in place so that those of owner o are
// spans[starts[o]:ends[o]]; counts holds how many each owner has and is
// turned into the ends. In place, because a copy of a 500-span batch is
// ~150 KB of pointerful memory per request for the collector to clear and
// scan.
func groupByOwner(spans []model.Span, owners []int32, counts []int) (starts []int) {
	starts = make([]int, len(counts))
	for o := 1; o < len(counts); o++ {
		starts[o] = starts[o-1] + counts[o-1]
	}
	for o := range counts {
		counts[o] += starts[o]
	}
	ends := counts
	next := append([]int(nil), starts...)
	// Each swap puts one span in its owner's range for good.
	for o := range ends {
		for next[o] < ends[o] {
			i := next[o]
			k := owners[i]
			if int(k) == o {
				next[o]++
				continue
			}
			j := next[k]
			next[k]++
			spans[i], spans[j] = spans[j], spans[i]
			owners[i], owners[j] = owners[j], owners[i]
		}
	}
	return starts
}

// Coalescing of forwarded parts. A batch split over three owners leaves
// each a third of it, and a node's cost per request (decoding, the write,
// the WAL's sync) is paid per batch, so forwarding parts as they come made
// the owners' batches small. Parts for one owner are joined while a
// request to it is in flight: an idle cluster forwards at once, a busy one
// sends fewer, larger requests. Encoded export requests join by
// concatenation (resource_spans is their only field, repeated).
const (
	// maxInFlight is how many requests to one owner run at once before
	// parts wait to be joined.
	maxInFlight = 1
	// maxBatchBytes bounds a joined request (ingest's default
	// max_request_bytes is 16 MiB); a larger part goes alone.
	maxBatchBytes = 4 << 20
)

// peerQueue joins the parts forwarded to one owner.
type peerQueue struct {
	mu       sync.Mutex
	pending  *batch
	inFlight int
}

// batch is one forwarded request: the encoded parts of one or more
// writes, which all wait for its answer.
type batch struct {
	buf   *[]byte
	spans int
	done  chan struct{}
	err   error // set before done is closed
}

// forward sends spans to their owner, joined with other writes' parts for
// it, and returns once the owner acknowledged them (or refused). Spans raws
// has are copied as they came, the others encoded.
func (f *Forwarder) forward(ctx context.Context, peer string, spans []model.Span, raws *otlpconv.RawIndex) error {
	scratch := requestBuffers.Get().(*[]byte)
	var copied int
	*scratch, copied = appendRequest((*scratch)[:0], spans, raws)
	f.copied.Add(float64(copied))
	return f.enqueue(ctx, peer, scratch, len(spans))
}

// Owners splits a request received from a sender (ingest.SplitSink) over
// the ring's nodes; a peer's request is not split, since every span of it
// is stored here.
func (f *Forwarder) Owners(ctx context.Context) (n, self int, owner func(model.TraceID) int) {
	if f.sec.FromPeer(ctx) || f.encodeAll || f.noSplit {
		return 0, 0, nil
	}
	return len(f.ring.peers), f.ring.self, f.ring.ownerIndex
}

// WriteEncoded forwards req, an encoded export request of spans of node's
// traces (ingest.SplitSink), as it came: the owner decodes the sender's
// bytes, and this node decodes none of them.
func (f *Forwarder) WriteEncoded(ctx context.Context, node int, req []byte, spans int) error {
	if node == f.ring.self {
		return fmt.Errorf("cluster: %d encoded spans are this node's own (%s), not to forward", spans, f.ring.Self().ID)
	}
	f.copied.Add(float64(spans))
	scratch := requestBuffers.Get().(*[]byte)
	*scratch = append((*scratch)[:0], req...)
	return f.enqueue(ctx, f.ring.peers[node].ID, scratch, spans)
}

// enqueue sends the encoded request scratch (from requestBuffers) of
// spans spans to peer, joined with other writes' parts for it, and
// returns once the owner acknowledged them (or refused).
func (f *Forwarder) enqueue(ctx context.Context, peer string, scratch *[]byte, spans int) error {
	q := f.queues[peer]
	q.mu.Lock()
	if q.pending != nil && len(*q.pending.buf)+len(*scratch) > maxBatchBytes {
		// Full: it goes now, whatever is in flight.
		f.dispatch(peer, q)
	}
	if q.pending == nil {
		// The first part becomes the request; later ones are copied in.
		q.pending = &batch{buf: scratch, done: make(chan struct{})}
		scratch = nil
	} else {
		*q.pending.buf = append(*q.pending.buf, *scratch...)
	}
	b := q.pending
	b.spans += spans
	if q.inFlight < maxInFlight {
		f.dispatch(peer, q)
	}
	q.mu.Unlock()
	if scratch != nil {
		requestBuffers.Put(scratch)
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		// The sender hears a retryable error; the spans may still be
		// stored, and its retry is then deduplicated by the owner.
		return fmt.Errorf("forwarding %d spans to node %s: %v: %w", spans, peer, ctx.Err(), store.ErrOverloaded)
	}
}

// dispatch sends q's pending batch; q.mu is held.
func (f *Forwarder) dispatch(peer string, q *peerQueue) {
	b := q.pending
	q.pending = nil
	q.inFlight++
	go f.sendQueued(peer, q, b)
}

// sendQueued sends b, then the parts joined while it was in flight, until
// none wait: under load one goroutine sends to a peer for as long as
// parts keep coming, where a goroutine per request grew its stack anew in
// every gRPC call.
func (f *Forwarder) sendQueued(peer string, q *peerQueue, b *batch) {
	for b != nil {
		b.err = f.send(peer, b)
		q.mu.Lock()
		q.inFlight--
		var next *batch
		if q.pending != nil && q.inFlight < maxInFlight {
			next = q.pending
			q.pending = nil
			q.inFlight++
		}
		q.mu.Unlock()
		close(b.done)
		b = next
	}
}

// send forwards one batch. It runs for every write in it, so it is not
// bound to any one sender's context.
func (f *Forwarder) send(peer string, b *batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	ctx = f.sec.outgoing(ctx, f.ring.Self().ID)
	f.requests.WithLabelValues(peer).Inc()
	var respBytes []byte
	err := f.conns[peer].Invoke(ctx, traceExportMethod, b.buf, &respBytes, grpc.ForceCodec(encodedProto{}))
	if err == nil {
		// The owner answered, so it has read the whole request: the buffer
		// is no longer referenced by the transport.
		requestBuffers.Put(b.buf)
		b.buf = nil
		resp := ptraceotlp.NewExportResponse()
		if err = resp.UnmarshalProto(respBytes); err != nil {
			err = fmt.Errorf("decoding the owner's answer: %w", err)
		} else if ps := resp.PartialSuccess(); ps.RejectedSpans() > 0 {
			err = fmt.Errorf("%d spans rejected: %s", ps.RejectedSpans(), ps.ErrorMessage())
		}
	}
	if err != nil {
		f.failures.WithLabelValues(peer).Inc()
		if status.Code(err) == codes.ResourceExhausted {
			// The owner refused the tenant's spans over its own rate limit:
			// the sender hears 429 / RESOURCE_EXHAUSTED as from the owner,
			// not the 503 of an overloaded cluster.
			return fmt.Errorf("forwarding %d spans to node %s: %v: %w", b.spans, peer, err, ingest.ErrRateLimited)
		}
		f.log.Warn("forwarding spans to their owner failed; the sender is told to retry", "peer", peer, "spans", b.spans, "err", err)
		// Overloaded makes ingest answer with a retryable status.
		return fmt.Errorf("forwarding %d spans to node %s: %v: %w", b.spans, peer, err, store.ErrOverloaded)
	}
	f.forwarded.WithLabelValues(peer).Add(float64(b.spans))
	return nil
}

// appendRequest appends an export request for spans to b and says how
// many of them it copied from raws.
func appendRequest(b []byte, spans []model.Span, raws *otlpconv.RawIndex) ([]byte, int) {
	if raws == nil {
		return otlpconv.AppendExportRequest(b, spans), 0
	}
	copied := make([]int32, 0, len(spans))
	var encode []model.Span
	for i := range spans {
		if raw, ok := raws.Lookup(&spans[i]); ok {
			copied = append(copied, raw)
		} else {
			encode = append(encode, spans[i])
		}
	}
	if len(encode) > 0 {
		b = otlpconv.AppendExportRequest(b, encode)
	}
	// Spans of one scope (as sent) share one ResourceSpans.
	slices.SortStableFunc(copied, func(x, y int32) int { return cmp.Compare(raws.Group(x), raws.Group(y)) })
	return raws.AppendResourceSpans(b, copied), len(copied)
}

// traceExportMethod is OTLP's gRPC trace export, the method the owner's
// ingest serves.
const traceExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// requestBuffers recycles encoded forward requests (tens of KiB each).
var requestBuffers = sync.Pool{New: func() any { return new([]byte) }}

// encodedProto is a gRPC codec for messages that are already protobuf
// bytes: forwarded requests are encoded from the model spans by
// otlpconv.AppendExportRequest, skipping pdata. Its name is "proto", so
// the owner decodes them with its usual codec.
type encodedProto struct{}

func (encodedProto) Name() string { return "proto" }

func (encodedProto) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("cluster: encoded message is %T, want *[]byte", v)
	}
	return *b, nil
}

func (encodedProto) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("cluster: message to decode into is %T, want *[]byte", v)
	}
	// data belongs to gRPC's buffer pool once Unmarshal returns.
	*b = append((*b)[:0], data...)
	return nil
}
