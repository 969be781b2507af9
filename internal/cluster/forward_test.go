package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// gatedSink is an owner's store that holds its first write until gate is
// closed and fails the later ones with err.
type gatedSink struct {
	gate    chan struct{}
	started chan struct{}
	err     error

	mu     sync.Mutex
	writes [][]model.Span
}

func (g *gatedSink) Write(_ context.Context, spans []model.Span) error {
	g.mu.Lock()
	g.writes = append(g.writes, model.AppendClones(nil, spans))
	first := len(g.writes) == 1
	g.mu.Unlock()
	if first {
		close(g.started)
		<-g.gate
		return nil
	}
	return g.err
}

// startOwner runs ingest for node n1 on sink, taking requests with the
// peer token as forwarded, and returns a forwarder of node n0 and the
// spans of traces n1 owns.
func startOwner(t *testing.T, cfg ingest.Config, sink ingest.Sink) (*Forwarder, []model.Span, string) {
	t.Helper()
	sec := Security{Token: peerToken}
	cfg.Forwarded = sec.FromPeer
	addr := startIngest(t, cfg, sink)
	peers := []Peer{{ID: "n0", OTLPGRPC: "127.0.0.1:1", HTTP: "127.0.0.1:1"}, {ID: "n1", OTLPGRPC: addr, HTTP: "127.0.0.1:1"}}
	ring, err := NewRing(peers, "n0")
	if err != nil {
		t.Fatal(err)
	}
	fw, err := NewForwarder(ring, refusingWriter{errors.New("n0 must not store n1's spans")}, sec, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	var owned []model.Span
	for _, s := range makeTraces(rand.New(rand.NewPCG(11, 12)), 200) {
		if ring.TraceOwner(s.TraceID).ID == "n1" {
			owned = append(owned, s)
		}
	}
	return fw, owned, addr
}

// joinedWrites writes one part to the owner and, while the owner holds
// it, seven more, which wait joined in one request; it returns the
// results of the seven and the spans they held.
func joinedWrites(t *testing.T, ownerErr error) (*gatedSink, []error, []model.Span) {
	t.Helper()
	owner := &gatedSink{gate: make(chan struct{}), started: make(chan struct{}), err: ownerErr}
	fw, owned, _ := startOwner(t, ingest.Config{}, owner)
	// A failing test must not leave the owner's write (and the server's
	// graceful stop) waiting.
	var release sync.Once
	open := func() { release.Do(func() { close(owner.gate) }) }
	t.Cleanup(open)
	if len(owned) < 16 {
		t.Fatalf("only %d spans owned by n1", len(owned))
	}
	first := make(chan error, 1)
	go func() { first <- fw.Write(context.Background(), owned[:2]) }()
	<-owner.started
	const joined = 7
	results := make(chan error, joined)
	for i := 0; i < joined; i++ {
		part := owned[2+2*i : 4+2*i]
		go func() { results <- fw.Write(context.Background(), part) }()
	}
	q := fw.queues["n1"]
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		n := 0
		if q.pending != nil {
			n = q.pending.spans
		}
		q.mu.Unlock()
		if n == 2*joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans waiting for the owner, want %d", n, 2*joined)
		}
	}
	select {
	case err := <-results:
		t.Fatalf("a write returned (%v) before its spans reached the owner", err)
	default:
	}
	open()
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	var errs []error
	for i := 0; i < joined; i++ {
		errs = append(errs, <-results)
	}
	return owner, errs, owned[2 : 2+2*joined]
}

// Parts for one owner that come while a request to it is in flight go
// as one request, and each write is acknowledged only once the owner
// stored it.
func TestForwardJoinsPartsPerOwner(t *testing.T) {
	owner, errs, spans := joinedWrites(t, nil)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("joined write: %v", err)
		}
	}
	owner.mu.Lock()
	defer owner.mu.Unlock()
	if len(owner.writes) != 2 {
		t.Fatalf("the owner got %d requests, want 2 (the first and the seven joined)", len(owner.writes))
	}
	got := map[[24]byte]int{}
	for _, s := range owner.writes[1] {
		var k [24]byte
		copy(k[:16], s.TraceID[:])
		copy(k[16:], s.SpanID[:])
		got[k]++
	}
	for _, s := range spans {
		var k [24]byte
		copy(k[:16], s.TraceID[:])
		copy(k[16:], s.SpanID[:])
		if got[k] != 1 {
			t.Fatalf("span %s/%s stored %d times in the joined request", s.TraceID, s.SpanID, got[k])
		}
	}
	if len(owner.writes[1]) != len(spans) {
		t.Fatalf("joined request held %d spans, want %d", len(owner.writes[1]), len(spans))
	}
}

// When the owner fails a joined request, every write in it is told to
// retry: none is acknowledged.
func TestForwardJoinedFailureReachesEveryWrite(t *testing.T) {
	_, errs, _ := joinedWrites(t, errors.New("disk full"))
	for i, err := range errs {
		if !errors.Is(err, store.ErrOverloaded) {
			t.Fatalf("write %d of a failed joined request: %v, want a retryable error", i, err)
		}
	}
}

// recordSink keeps what it stores.
type recordSink struct {
	mu    sync.Mutex
	spans []model.Span
}

func (r *recordSink) Write(_ context.Context, spans []model.Span) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = model.AppendClones(r.spans, spans)
	return nil
}

func (r *recordSink) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.spans) }

// The owner skips the limits the receiving node applied only for a
// request with the peer token: a forged marker is checked and counted
// like any sender's. Ids and times are checked and dedup runs either way.
func TestOwnerTrustsOnlyThePeerToken(t *testing.T) {
	sink := &recordSink{}
	_, owned, addr := startOwner(t, ingest.Config{MaxSpansPerSecond: 3, MaxSpansPerTrace: 1}, sink)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(spans []model.Span, md ...string) (ptraceotlp.ExportResponse, error) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
		return ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
	}
	peer := []string{forwardedKey, "n0", "authorization", "Bearer " + peerToken}
	forged := []string{forwardedKey, "n0"}

	// Two traces of two spans each: over the per-trace limit and the
	// rate, all stored from a peer, which counted them already.
	resp, err := send(owned[:4], peer...)
	if err != nil || resp.PartialSuccess().RejectedSpans() != 0 || sink.count() != 4 {
		t.Fatalf("peer's request: %v, %d rejected, %d stored; want all 4 stored", err, resp.PartialSuccess().RejectedSpans(), sink.count())
	}
	// The same again is deduplicated, and a span without an id refused.
	bad := owned[4]
	bad.SpanID = model.SpanID{}
	resp, err = send(append(append([]model.Span(nil), owned[:4]...), bad), peer...)
	if err != nil || resp.PartialSuccess().RejectedSpans() != 1 || sink.count() != 4 {
		t.Fatalf("peer's retry with a span without id: %v, %d rejected, %d stored; want 1 rejected, none stored", err, resp.PartialSuccess().RejectedSpans(), sink.count())
	}
	// The forged marker: the per-trace limit applies, and the rate, whose
	// bucket the peer's spans left full, is charged.
	resp, err = send(owned[6:10], forged...)
	if err != nil || resp.PartialSuccess().RejectedSpans() != 2 || sink.count() != 6 {
		t.Fatalf("forged marker: %v, %d rejected, %d stored; want 2 rejected by the per-trace limit", err, resp.PartialSuccess().RejectedSpans(), sink.count())
	}
	if _, err = send(owned[10:14], forged...); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("forged marker over the rate: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestGroupByOwner: after the in-place grouping every owner's range holds
// exactly its spans, none lost or duplicated, for owners with no spans
// too.
func TestGroupByOwner(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{0, 1, 2, 7, 500} {
		for owners := 1; owners <= 4; owners++ {
			spans := make([]model.Span, n)
			of := make([]int32, n)
			counts := make([]int, owners)
			want := map[model.SpanID]int32{}
			for i := range spans {
				spans[i].SpanID = model.SpanID{byte(i), byte(i >> 8), 1}
				// Owner 0 gets none when there are several, to cover
				// empty ranges.
				of[i] = int32(r.IntN(owners))
				if owners > 1 && of[i] == 0 {
					of[i] = 1
				}
				counts[of[i]]++
				want[spans[i].SpanID] = of[i]
			}
			ends := append([]int(nil), counts...)
			starts := groupByOwner(spans, of, ends)
			seen := map[model.SpanID]bool{}
			for o := range owners {
				if got := ends[o] - starts[o]; got != counts[o] {
					t.Fatalf("n=%d owners=%d: owner %d has a range of %d spans, want %d", n, owners, o, got, counts[o])
				}
				for _, sp := range spans[starts[o]:ends[o]] {
					if want[sp.SpanID] != int32(o) || seen[sp.SpanID] {
						t.Fatalf("n=%d owners=%d: span %s in owner %d's range (owner %d, seen before %v)", n, owners, sp.SpanID, o, want[sp.SpanID], seen[sp.SpanID])
					}
					seen[sp.SpanID] = true
				}
			}
			if len(seen) != n {
				t.Fatalf("n=%d owners=%d: %d spans after grouping, want %d", n, owners, len(seen), n)
			}
		}
	}
}
