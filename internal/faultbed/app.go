// Package faultbed is a fault-injection test bed for the root-cause ranking
// (internal/rootcause): a twelve-service shop whose requests are simulated
// in virtual time and recorded with the OpenTelemetry Go SDK (one
// TracerProvider per service, W3C traceparent propagation between them),
// then converted to tracedx spans the way real hosts would deliver them:
// timestamps rounded to whole milliseconds and each service's clock skewed
// by a constant offset. A run injects one fault class at a random service
// and a random time (seeded), cuts a baseline and an incident window out of
// the traffic and asks the ranking which service is to blame.
//
// Virtual time keeps a run to well under a second while the SDK records
// real spans: every span gets explicit start and end timestamps.
package faultbed

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// call is one outgoing call of an operation: to another service's
// operation, or to an uninstrumented dependency (a database or cache) when
// DB is set.
type call struct {
	Service, Op string
	DB          *dbCall
}

// dbCall is a client span to a dependency without its own spans.
type dbCall struct {
	System, Statement string
	Base              time.Duration
}

// Name is the span name a database client would give the call.
func (d *dbCall) Name() string { return d.Statement }

// step is a piece of an operation: some own work, then calls made in
// parallel (one call: sequential).
type step struct {
	Work  time.Duration
	Calls []call
}

type operation struct {
	Service, Name string
	Steps         []step
}

// topology is the shop: two entry endpoints on frontend, a call tree of
// twelve services with parallel and sequential calls and five databases or
// caches.
func topology() map[string]*operation {
	ops := []*operation{
		{Service: "frontend", Name: "GET /home", Steps: []step{
			{Work: 2 * time.Millisecond},
			{Calls: []call{{Service: "catalog", Op: "GET /products"}, {Service: "recommend", Op: "GET /recommendations"}}},
			{Work: 3 * time.Millisecond},
		}},
		{Service: "frontend", Name: "POST /checkout", Steps: []step{
			{Work: 2 * time.Millisecond, Calls: []call{{Service: "cart", Op: "GET /cart"}}},
			{Calls: []call{{Service: "checkout", Op: "POST /orders"}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "catalog", Name: "GET /products", Steps: []step{
			{Work: 2 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "postgresql", Statement: "SELECT products", Base: 6 * time.Millisecond}}}},
			{Work: 1 * time.Millisecond, Calls: []call{{Service: "pricing", Op: "GET /prices"}}},
			{Work: 2 * time.Millisecond},
		}},
		{Service: "catalog", Name: "GET /products/top", Steps: []step{
			{Work: 1 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "postgresql", Statement: "SELECT top_products", Base: 4 * time.Millisecond}}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "recommend", Name: "GET /recommendations", Steps: []step{
			{Work: 3 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "redis", Statement: "GET", Base: 1 * time.Millisecond}}}},
			{Calls: []call{{Service: "catalog", Op: "GET /products/top"}}},
			{Work: 4 * time.Millisecond},
		}},
		{Service: "pricing", Name: "GET /prices", Steps: []step{
			{Work: 2 * time.Millisecond, Calls: []call{{Service: "currency", Op: "GET /convert"}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "currency", Name: "GET /convert", Steps: []step{{Work: 2 * time.Millisecond}}},
		{Service: "cart", Name: "GET /cart", Steps: []step{
			{Work: 1 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "redis", Statement: "HGETALL", Base: 1 * time.Millisecond}}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "checkout", Name: "POST /orders", Steps: []step{
			{Work: 2 * time.Millisecond, Calls: []call{{Service: "cart", Op: "GET /cart"}}},
			{Calls: []call{{Service: "payment", Op: "POST /charge"}}},
			{Work: 1 * time.Millisecond, Calls: []call{{Service: "inventory", Op: "POST /reserve"}, {Service: "shipping", Op: "POST /quote"}}},
			{Calls: []call{{Service: "email", Op: "POST /send"}}},
			{Work: 2 * time.Millisecond},
		}},
		{Service: "payment", Name: "POST /charge", Steps: []step{
			{Work: 2 * time.Millisecond, Calls: []call{{Service: "fraud", Op: "POST /score"}}},
			{Work: 1 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "postgresql", Statement: "INSERT payments", Base: 5 * time.Millisecond}}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "fraud", Name: "POST /score", Steps: []step{{Work: 8 * time.Millisecond}}},
		{Service: "inventory", Name: "POST /reserve", Steps: []step{
			{Work: 1 * time.Millisecond, Calls: []call{{DB: &dbCall{System: "postgresql", Statement: "UPDATE stock", Base: 7 * time.Millisecond}}}},
			{Work: 1 * time.Millisecond},
		}},
		{Service: "shipping", Name: "POST /quote", Steps: []step{
			{Work: 3 * time.Millisecond, Calls: []call{{Service: "currency", Op: "GET /convert"}}},
			{Work: 2 * time.Millisecond},
		}},
		{Service: "email", Name: "POST /send", Steps: []step{{Work: 3 * time.Millisecond}}},
	}
	out := make(map[string]*operation, len(ops))
	for _, o := range ops {
		out[o.Service+" "+o.Name] = o
	}
	return out
}

// sim runs requests through the topology in virtual time.
type sim struct {
	ops     map[string]*operation
	tracers map[string]trace.Tracer
	rng     *rand.Rand
	fault   *Fault
	// active is whether the fault is on for the request being simulated.
	active bool
	// drift is an innocent service whose work is driftFactor slower while
	// the fault is active: the noise a real incident window has.
	drift       string
	driftFactor float64
}

var propagator = propagation.TraceContext{}

// jitter varies a base duration log-normally (σ 0.25), as service times do.
func (s *sim) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * math.Exp(0.25*s.rng.NormFloat64()))
}

// network is the one-way time of a hop between hosts.
func (s *sim) network() time.Duration {
	return 300*time.Microsecond + time.Duration(s.rng.Float64()*float64(700*time.Microsecond))
}

// serve runs one operation starting at t in a context carrying the
// incoming traceparent; it returns the end time and whether it failed.
func (s *sim) serve(ctx context.Context, carrier propagation.MapCarrier, o *operation, t time.Time) (time.Time, bool) {
	ctx = propagator.Extract(ctx, carrier)
	ctx, span := s.tracers[o.Service].Start(ctx, o.Name, trace.WithTimestamp(t), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", o.Name[:indexSpace(o.Name)]),
			attribute.String("http.route", o.Name[indexSpace(o.Name)+1:])))
	failed := false
	t = t.Add(s.fault.queueWait(s, o))
	for i, st := range o.Steps {
		work := s.jitter(st.Work)
		if s.active && o.Service == s.drift {
			work = time.Duration(float64(work) * s.driftFactor)
		}
		t = t.Add(s.fault.work(s, o.Service, work))
		if i == len(o.Steps)-1 && s.fault.throws(s, o) {
			span.RecordError(errInjected, trace.WithTimestamp(t))
			failed = true
		}
		end := t
		for _, c := range st.Calls {
			e, f := s.call(ctx, o, c, t)
			if e.After(end) {
				end = e
			}
			failed = failed || f
		}
		t = end
		if failed {
			// The error goes up at once: the remaining steps do not run.
			break
		}
	}
	code := 200
	if failed {
		span.SetStatus(codes.Error, "downstream or own failure")
		code = 500
	}
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	span.End(trace.WithTimestamp(t))
	return t, failed
}

func indexSpace(s string) int {
	for i := range s {
		if s[i] == ' ' {
			return i
		}
	}
	return 0
}

// call makes one client call from operation o at time t.
func (s *sim) call(ctx context.Context, o *operation, c call, t time.Time) (time.Time, bool) {
	tr := s.tracers[o.Service]
	if c.DB != nil {
		_, span := tr.Start(ctx, c.DB.Name(), trace.WithTimestamp(t), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("db.system", c.DB.System), attribute.String("db.query.text", c.DB.Statement+" WHERE id = ?")))
		end := t.Add(s.fault.dependency(s, o.Service, c.DB, s.jitter(c.DB.Base)))
		span.End(trace.WithTimestamp(end))
		return end, false
	}
	target := s.ops[c.Service+" "+c.Op]
	ctx, span := tr.Start(ctx, c.Op, trace.WithTimestamp(t), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("peer.service", c.Service), attribute.String("server.address", c.Service)))
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	arrive := t.Add(s.network()).Add(s.fault.inFront(s, o.Service, c.Service))
	end, failed := s.serve(context.Background(), carrier, target, arrive)
	end = end.Add(s.network())
	if failed {
		span.SetStatus(codes.Error, "HTTP 500")
		span.SetAttributes(attribute.Int("http.response.status_code", 500))
	}
	span.End(trace.WithTimestamp(end))
	return end, failed
}
