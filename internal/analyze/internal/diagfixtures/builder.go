// Command diagfixtures writes the OTLP JSON fixtures of the diagnosis
// detectors (error_origin, swallowed_error, partial_failure, cache_miss,
// consumer_lag, poison_message, broken_propagation, instrumentation_gap)
// and the Jaeger/Zipkin samples of internal/traceio under testdata/traces.
// The JSON files are committed; this program documents and regenerates
// them:
//
//	go run ./internal/analyze/internal/diagfixtures -out testdata/traces
package main

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// tb builds one trace; times are milliseconds from the trace start.
type tb struct {
	tid   model.TraceID
	t0    uint64
	spans []model.Span
	r     *rand.Rand
	old   bool // pre-1.26 semantic-convention names
}

func newTB(seed uint64, old bool) *tb {
	b := &tb{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), old: old}
	for i := range b.tid {
		b.tid[i] = byte(b.r.UintN(256))
	}
	b.t0 = uint64(time.Date(2026, 11, 21, 14, 0, 0, 0, time.UTC).Add(time.Duration(seed) * 131 * time.Second).UnixNano())
	return b
}

func kv(k string, v any) model.Attr {
	switch x := v.(type) {
	case string:
		return model.Attr{Key: k, Value: model.Str(x)}
	case int:
		return model.Attr{Key: k, Value: model.Int(int64(x))}
	case float64:
		return model.Attr{Key: k, Value: model.Float(x)}
	case bool:
		return model.Attr{Key: k, Value: model.Bool(x)}
	}
	panic(fmt.Sprintf("kv %s: %T", k, v))
}

// sc picks the current or the old semantic-convention name.
func (b *tb) sc(cur, old string) string {
	if b.old {
		return old
	}
	return cur
}

var langs = map[string]string{
	"api-gateway": "go", "product-service": "java", "recommendation-service": "python", "ml-inference": "python",
	"orders-service": "java", "payment-service": "java", "web-bff": "nodejs", "search-api": "go",
	"billing-worker": "java", "fulfillment-service": "java", "notification-service": "nodejs", "checkout-service": "go",
	"inventory-service": "java", "report-service": "go", "catalog-service": "go", "cart-service": "nodejs",
}

func resourceOf(svc string) model.Attrs {
	h := fnv.New32a()
	h.Write([]byte(svc))
	x := h.Sum32()
	lang := langs[svc]
	if lang == "" {
		lang = "go"
	}
	attrs := model.Attrs{}
	if svc != "" {
		attrs = append(attrs, kv("service.name", svc))
	}
	return append(attrs,
		kv("service.namespace", "shop"),
		kv("service.version", fmt.Sprintf("2.%d.%d", x%23, x%7)),
		kv("service.instance.id", fmt.Sprintf("%08x-%04x", x, x%0xffff)),
		kv("deployment.environment.name", "production"),
		kv("host.name", fmt.Sprintf("%s-%x-%s", nonEmpty(svc, "worker"), x%0xfffff, []string{"q8l2v", "z7d3k", "b5n6t"}[x%3])),
		kv("k8s.namespace.name", "shop"),
		kv("telemetry.sdk.language", lang),
		kv("telemetry.sdk.name", "opentelemetry"),
		kv("telemetry.sdk.version", "1.38.0"),
	)
}

func nonEmpty(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func scopeOf(svc string, kind model.SpanKind, attrs model.Attrs) string {
	has := func(k ...string) bool { _, ok := attrs.First(k...); return ok }
	switch langs[svc] {
	case "java":
		switch {
		case has("db.system", "db.system.name"):
			return "io.opentelemetry.jdbc"
		case has("messaging.system"):
			return "io.opentelemetry.kafka-clients-2.6"
		case has("rpc.system"):
			return "io.opentelemetry.grpc-1.6"
		case kind == model.KindServer:
			return "io.opentelemetry.tomcat-10.0"
		case kind == model.KindClient:
			return "io.opentelemetry.okhttp-3.0"
		}
		return "io.opentelemetry.spring-webmvc-6.0"
	case "python":
		switch {
		case has("rpc.system"):
			return "opentelemetry.instrumentation.grpc"
		case kind == model.KindServer:
			return "opentelemetry.instrumentation.fastapi"
		case kind == model.KindClient:
			return "opentelemetry.instrumentation.httpx"
		}
		return "ml_inference.model"
	case "nodejs":
		if kind == model.KindServer || kind == model.KindClient {
			return "@opentelemetry/instrumentation-http"
		}
		return "@opentelemetry/instrumentation-express"
	}
	switch {
	case has("db.system", "db.system.name"):
		return "github.com/XSAM/otelsql"
	case has("messaging.system"):
		return "github.com/IBM/sarama/otelsarama"
	case has("rpc.system"):
		return "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	case kind == model.KindServer || kind == model.KindClient:
		return "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	}
	return "shop/" + svc
}

func (b *tb) newID() model.SpanID {
	var id model.SpanID
	for i := range id {
		id[i] = byte(b.r.UintN(256))
	}
	return id
}

// span adds a span; parent -1 makes a root. It returns the span's index.
func (b *tb) span(parent int, svc, name string, kind model.SpanKind, start, dur float64, attrs ...model.Attr) int {
	s := model.Span{TraceID: b.tid, SpanID: b.newID(), Name: name, Kind: kind, Service: svc, Resource: resourceOf(svc),
		StartUnixNano: b.t0 + uint64(start*1e6), EndUnixNano: b.t0 + uint64((start+dur)*1e6), Attrs: attrs, Flags: 1}
	if svc == "" {
		s.Service = model.UnknownService
	}
	s.ScopeName = scopeOf(svc, kind, s.Attrs)
	if parent >= 0 {
		s.ParentSpanID = b.spans[parent].SpanID
	}
	b.spans = append(b.spans, s)
	return len(b.spans) - 1
}

func (b *tb) set(i int, attrs ...model.Attr) { b.spans[i].Attrs = append(b.spans[i].Attrs, attrs...) }

// fail sets status ERROR and records the exception event as SDKs do.
func (b *tb) fail(i int, typ, msg string) {
	s := &b.spans[i]
	s.StatusCode, s.StatusMessage = model.StatusError, msg
	if typ == "" {
		return
	}
	frame := strings.ReplaceAll(s.Service, "-", ".")
	s.Events = append(s.Events, model.Event{TimeUnixNano: s.EndUnixNano - 150_000, Name: "exception", Attrs: model.Attrs{
		kv("exception.type", typ), kv("exception.message", msg),
		kv("exception.stacktrace", fmt.Sprintf("%s: %s\n\tat %s.Handler.handle(Handler.java:%d)\n\tat %s.Router.dispatch(Router.java:61)",
			typ, msg, frame, 40+b.r.IntN(200), frame)),
	}})
	s.Attrs = append(s.Attrs, kv("error.type", typ))
}

func (b *tb) server(parent int, svc, method, route, path string, status int, start, dur float64) int {
	i := b.span(parent, svc, method+" "+route, model.KindServer, start, dur,
		kv(b.sc("http.request.method", "http.method"), method), kv("http.route", route),
		kv(b.sc("url.path", "http.target"), path), kv(b.sc("url.scheme", "http.scheme"), "http"),
		kv(b.sc("server.address", "net.host.name"), svc), kv(b.sc("server.port", "net.host.port"), 8080),
		kv(b.sc("client.address", "net.sock.peer.addr"), fmt.Sprintf("10.42.%d.%d", b.r.IntN(8), 2+b.r.IntN(250))),
		kv(b.sc("user_agent.original", "http.user_agent"), "okhttp/4.12.0"),
		kv(b.sc("http.response.status_code", "http.status_code"), status))
	if status >= 500 {
		b.spans[i].StatusCode = model.StatusError
	}
	return i
}

// client adds an HTTP CLIENT span; status 0 means no answer arrived.
func (b *tb) client(parent int, svc, host, method, path string, status int, start, dur float64) int {
	attrs := []model.Attr{kv(b.sc("http.request.method", "http.method"), method),
		kv(b.sc("url.full", "http.url"), "http://"+host+":8080"+path),
		kv(b.sc("server.address", "net.peer.name"), host), kv(b.sc("server.port", "net.peer.port"), 8080)}
	if status > 0 {
		attrs = append(attrs, kv(b.sc("http.response.status_code", "http.status_code"), status))
	}
	i := b.span(parent, svc, method, model.KindClient, start, dur, attrs...)
	if status >= 500 {
		b.spans[i].StatusCode = model.StatusError
	}
	return i
}

// call adds a client span and the callee's server span under it.
func (b *tb) call(parent int, from, to, method, path, route string, status int, start, dur float64) (int, int) {
	c := b.client(parent, from, to, method, path, status, start, dur)
	p := path
	if k := strings.IndexByte(p, '?'); k >= 0 {
		p = p[:k]
	}
	return c, b.server(c, to, method, route, p, status, start+0.7, dur-1.4)
}

func (b *tb) db(parent int, svc, system, dbName, stmt string, start, dur float64) int {
	op := strings.ToUpper(strings.Fields(stmt)[0])
	name := op + " " + dbName
	if system == "redis" {
		name = op
	}
	host := map[string]string{"postgresql": "pg-main", "mysql": "mysql-orders", "redis": "redis-cache"}[system]
	port := map[string]int{"postgresql": 5432, "mysql": 3306, "redis": 6379}[system]
	return b.span(parent, svc, name, model.KindClient, start, dur,
		kv(b.sc("db.system.name", "db.system"), system), kv(b.sc("db.namespace", "db.name"), dbName),
		kv(b.sc("db.query.text", "db.statement"), stmt), kv(b.sc("db.operation.name", "db.operation"), op),
		kv(b.sc("server.address", "net.peer.name"), host), kv(b.sc("server.port", "net.peer.port"), port))
}

func (b *tb) rpc(parent int, from, to, rpcSvc, method string, code int, start, dur float64) (int, int) {
	c := b.span(parent, from, rpcSvc+"/"+method, model.KindClient, start, dur,
		kv("rpc.system", "grpc"), kv("rpc.service", rpcSvc), kv("rpc.method", method),
		kv(b.sc("server.address", "net.peer.name"), to), kv(b.sc("server.port", "net.peer.port"), 50051),
		kv("rpc.grpc.status_code", code))
	s := b.span(c, to, rpcSvc+"/"+method, model.KindServer, start+0.5, dur-1,
		kv("rpc.system", "grpc"), kv("rpc.service", rpcSvc), kv("rpc.method", method), kv("rpc.grpc.status_code", code))
	if code != 0 {
		b.spans[c].StatusCode, b.spans[s].StatusCode = model.StatusError, model.StatusError
	}
	return c, s
}

func (b *tb) internal(parent int, svc, name string, start, dur float64, attrs ...model.Attr) int {
	return b.span(parent, svc, name, model.KindInternal, start, dur, attrs...)
}

// produce / consume add messaging spans.
func (b *tb) produce(parent int, svc, system, dest string, start, dur float64, attrs ...model.Attr) int {
	a := append([]model.Attr{kv("messaging.system", system), kv(b.sc("messaging.destination.name", "messaging.destination"), dest),
		kv(b.sc("messaging.operation.type", "messaging.operation"), "publish")}, attrs...)
	return b.span(parent, svc, dest+" publish", model.KindProducer, start, dur, a...)
}

func (b *tb) consume(parent int, svc, system, dest string, start, dur float64, attrs ...model.Attr) int {
	a := append([]model.Attr{kv("messaging.system", system), kv(b.sc("messaging.destination.name", "messaging.destination"), dest),
		kv(b.sc("messaging.operation.type", "messaging.operation"), "process")}, attrs...)
	return b.span(parent, svc, dest+" process", model.KindConsumer, start, dur, a...)
}

// auth adds the session check most requests start with.
func (b *tb) auth(parent int, svc string, at float64) {
	i := b.internal(parent, svc, "auth.verify_session", at, 2.1)
	b.db(i, svc, "redis", "0", "GET session:"+b.hex(24), at+0.3, 1.4)
}

func (b *tb) hex(n int) string {
	const h = "0123456789abcdef"
	out := make([]byte, n)
	for i := range out {
		out[i] = h[b.r.IntN(16)]
	}
	return string(out)
}
