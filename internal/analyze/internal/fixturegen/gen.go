// Command fixturegen writes the OTLP JSON fixtures under
// testdata/traces/<kind>/ used by the analyze detector tests. The traces
// are built to look like production traces (realistic services, routes,
// statements, timings and noise spans around the problem); the JSON files
// are committed, this program only documents and regenerates them:
//
//	go run ./internal/analyze/internal/fixturegen -out testdata/traces
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// gen builds one trace. Times are in ms from the trace start.
type gen struct {
	tid   model.TraceID
	base  uint64
	spans []model.Span
	rnd   *rand.Rand
	// old selects the pre-1.26 semantic-convention names (http.method,
	// http.status_code, http.url, db.statement, net.peer.name).
	old bool
}

var services = map[string]string{} // service -> language

func newGen(seed uint64, old bool) *gen {
	g := &gen{rnd: rand.New(rand.NewPCG(seed, seed*7919+1)), old: old}
	for i := range g.tid {
		g.tid[i] = byte(g.rnd.UintN(256))
	}
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC).Add(time.Duration(seed) * 97 * time.Second)
	g.base = uint64(start.UnixNano())
	return g
}

func a(k string, v any) model.Attr {
	switch x := v.(type) {
	case string:
		return model.Attr{Key: k, Value: model.Str(x)}
	case int:
		return model.Attr{Key: k, Value: model.Int(int64(x))}
	case int64:
		return model.Attr{Key: k, Value: model.Int(x)}
	case float64:
		return model.Attr{Key: k, Value: model.Float(x)}
	case bool:
		return model.Attr{Key: k, Value: model.Bool(x)}
	}
	panic(fmt.Sprintf("attr %s: unsupported %T", k, v))
}

func lang(svc string) string {
	if l, ok := services[svc]; ok {
		return l
	}
	return "go"
}

func resource(svc string) model.Attrs {
	l := lang(svc)
	h := uint32(0)
	for _, c := range svc {
		h = h*31 + uint32(c)
	}
	return model.Attrs{
		a("service.name", svc),
		a("service.namespace", "shop"),
		a("service.version", fmt.Sprintf("1.%d.%d", h%17, h%5)),
		a("deployment.environment.name", "production"),
		a("host.name", fmt.Sprintf("%s-%x-%s", svc, h%0xfffff, []string{"k2x9p", "7fjqz", "m4w8d"}[h%3])),
		a("k8s.namespace.name", "shop"),
		a("telemetry.sdk.language", l),
		a("telemetry.sdk.name", "opentelemetry"),
	}
}

func scope(svc string, kind model.SpanKind, attrs model.Attrs) string {
	_, isDB := attrs.Get("db.system")
	if !isDB {
		_, isDB = attrs.Get("db.system.name")
	}
	_, isRPC := attrs.Get("rpc.system")
	_, isMsg := attrs.Get("messaging.system")
	switch lang(svc) {
	case "java":
		switch {
		case isDB:
			return "io.opentelemetry.jdbc"
		case isRPC:
			return "io.opentelemetry.grpc-1.6"
		case isMsg:
			return "io.opentelemetry.kafka-clients-2.6"
		case kind == model.KindServer:
			return "io.opentelemetry.tomcat-10.0"
		case kind == model.KindClient:
			return "io.opentelemetry.java-http-client"
		}
		return "io.opentelemetry.spring-webmvc-6.0"
	case "nodejs":
		switch {
		case isDB:
			if v, _ := attrs.First("db.system", "db.system.name"); v.Str == "redis" {
				return "@opentelemetry/instrumentation-ioredis"
			}
			return "@opentelemetry/instrumentation-pg"
		case kind == model.KindServer || kind == model.KindClient:
			return "@opentelemetry/instrumentation-http"
		}
		return "@opentelemetry/instrumentation-express"
	case "python":
		switch {
		case isDB:
			return "opentelemetry.instrumentation.psycopg2"
		case kind == model.KindServer:
			return "opentelemetry.instrumentation.flask"
		case kind == model.KindClient:
			return "opentelemetry.instrumentation.requests"
		}
		return "opentelemetry.instrumentation.celery"
	}
	switch {
	case isDB:
		return "github.com/XSAM/otelsql"
	case isRPC:
		return "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	case isMsg:
		return "github.com/IBM/sarama/otelsarama"
	case kind == model.KindServer || kind == model.KindClient:
		return "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	}
	return "shop/internal/" + svc
}

// span adds a span; parent -1 makes a root. Returns its index.
func (g *gen) span(parent int, svc, name string, kind model.SpanKind, startMS, durMS float64, attrs ...model.Attr) int {
	var id model.SpanID
	for i := range id {
		id[i] = byte(g.rnd.UintN(256))
	}
	s := model.Span{
		TraceID: g.tid, SpanID: id, Name: name, Kind: kind, Service: svc, Resource: resource(svc),
		StartUnixNano: g.base + uint64(startMS*1e6), EndUnixNano: g.base + uint64((startMS+durMS)*1e6),
		Attrs: attrs, Flags: 1,
	}
	s.ScopeName = scope(svc, kind, s.Attrs)
	if parent >= 0 {
		s.ParentSpanID = g.spans[parent].SpanID
	}
	g.spans = append(g.spans, s)
	return len(g.spans) - 1
}

// fail marks a span ERROR with an exception event.
func (g *gen) fail(i int, excType, msg string) {
	s := &g.spans[i]
	s.StatusCode, s.StatusMessage = model.StatusError, msg
	if excType != "" {
		s.Events = append(s.Events, model.Event{TimeUnixNano: s.EndUnixNano - 200_000, Name: "exception", Attrs: model.Attrs{
			a("exception.type", excType), a("exception.message", msg),
			a("exception.stacktrace", excType+": "+msg+"\n\tat "+strings.ReplaceAll(s.Service, "-", ".")+".Handler.handle(Handler.java:88)"),
		}})
		s.Attrs = append(s.Attrs, a("error.type", excType))
	}
}

func (g *gen) set(i int, attrs ...model.Attr) { g.spans[i].Attrs = append(g.spans[i].Attrs, attrs...) }

func (g *gen) key(newK, oldK string) string {
	if g.old {
		return oldK
	}
	return newK
}

// server adds an HTTP SERVER span.
func (g *gen) server(parent int, svc, method, route, path string, status int, startMS, durMS float64) int {
	attrs := []model.Attr{
		a(g.key("http.request.method", "http.method"), method), a("http.route", route),
		a(g.key("url.path", "http.target"), path), a(g.key("url.scheme", "http.scheme"), "http"),
		a(g.key("server.address", "net.host.name"), svc), a(g.key("server.port", "net.host.port"), 8080),
		a(g.key("user_agent.original", "http.user_agent"), "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15"),
		a(g.key("http.response.status_code", "http.status_code"), status),
		a(g.key("network.protocol.version", "http.flavor"), "1.1"),
	}
	i := g.span(parent, svc, method+" "+route, model.KindServer, startMS, durMS, attrs...)
	if status >= 500 {
		g.spans[i].StatusCode = model.StatusError
	}
	return i
}

// client adds an HTTP CLIENT span to a URL.
func (g *gen) client(parent int, svc, peer, method, url string, status int, startMS, durMS float64) int {
	host := strings.SplitN(strings.TrimPrefix(strings.TrimPrefix(url, "https://"), "http://"), "/", 2)[0]
	port := 80
	if strings.HasPrefix(url, "https") {
		port = 443
	}
	if k := strings.IndexByte(host, ':'); k > 0 {
		fmt.Sscanf(host[k+1:], "%d", &port)
		host = host[:k]
	}
	attrs := []model.Attr{
		a(g.key("http.request.method", "http.method"), method), a(g.key("url.full", "http.url"), url),
		a(g.key("server.address", "net.peer.name"), host), a(g.key("server.port", "net.peer.port"), port),
	}
	if peer != "" {
		attrs = append(attrs, a("peer.service", peer))
	}
	if status > 0 {
		attrs = append(attrs, a(g.key("http.response.status_code", "http.status_code"), status))
	}
	// HTTP client span names are the bare method (semantic conventions:
	// the URL is too high-cardinality for a name).
	i := g.span(parent, svc, method, model.KindClient, startMS, durMS, attrs...)
	if status >= 500 {
		g.spans[i].StatusCode = model.StatusError
	}
	return i
}

// db adds a database CLIENT span.
func (g *gen) db(parent int, svc, system, dbName, host, stmt string, startMS, durMS float64) int {
	op := strings.ToUpper(strings.Fields(stmt)[0])
	name := op + " " + dbName
	if system == "redis" {
		name = op
	}
	attrs := []model.Attr{
		a(g.key("db.system.name", "db.system"), system), a(g.key("db.namespace", "db.name"), dbName),
		a(g.key("db.query.text", "db.statement"), stmt), a(g.key("db.operation.name", "db.operation"), op),
		a(g.key("server.address", "net.peer.name"), host), a(g.key("server.port", "net.peer.port"), map[string]int{"postgresql": 5432, "mysql": 3306, "redis": 6379, "mongodb": 27017}[system]),
	}
	if system != "redis" && !g.old {
		attrs = append(attrs, a("db.collection.name", tableOf(stmt)))
	}
	return g.span(parent, svc, name, model.KindClient, startMS, durMS, attrs...)
}

func tableOf(stmt string) string {
	f := strings.Fields(stmt)
	for i, w := range f {
		u := strings.ToUpper(w)
		if (u == "FROM" || u == "INTO" || u == "UPDATE") && i+1 < len(f) {
			return strings.Trim(f[i+1], "(),;")
		}
	}
	return ""
}

// rpcClient / rpcServer add gRPC spans.
func (g *gen) rpcClient(parent int, svc, host, rpcSvc, method string, code int, startMS, durMS float64) int {
	i := g.span(parent, svc, rpcSvc+"/"+method, model.KindClient, startMS, durMS,
		a("rpc.system", "grpc"), a("rpc.service", rpcSvc), a("rpc.method", method),
		a(g.key("server.address", "net.peer.name"), host), a(g.key("server.port", "net.peer.port"), 50051),
		a("rpc.grpc.status_code", code))
	if code != 0 {
		g.spans[i].StatusCode = model.StatusError
	}
	return i
}

func (g *gen) rpcServer(parent int, svc, rpcSvc, method string, code int, startMS, durMS float64) int {
	i := g.span(parent, svc, rpcSvc+"/"+method, model.KindServer, startMS, durMS,
		a("rpc.system", "grpc"), a("rpc.service", rpcSvc), a("rpc.method", method), a("rpc.grpc.status_code", code))
	if code != 0 {
		g.spans[i].StatusCode = model.StatusError
	}
	return i
}

func (g *gen) internal(parent int, svc, name string, startMS, durMS float64, attrs ...model.Attr) int {
	return g.span(parent, svc, name, model.KindInternal, startMS, durMS, attrs...)
}

// authNoise adds the session lookup most requests start with.
func (g *gen) authNoise(parent int, svc string, at float64) float64 {
	i := g.internal(parent, svc, "auth.verify_session", at, 2.4)
	g.db(i, svc, "redis", "0", "redis-sessions", "GET session:"+g.hex(16), at+0.3, 1.6)
	return at + 2.4
}

func (g *gen) hex(n int) string {
	const h = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = h[g.rnd.IntN(16)]
	}
	return string(b)
}

func (g *gen) jitter(ms, pct float64) float64 { return ms * (1 + pct*(g.rnd.Float64()*2-1)) }

type fixture struct {
	kind, name string
	build      func() *gen
}

var fixtures []fixture

func add(kind, name string, build func() *gen) {
	fixtures = append(fixtures, fixture{kind, name, build})
}

func main() {
	out := flag.String("out", "testdata/traces", "output directory")
	flag.Parse()
	var m ptrace.JSONMarshaler
	for _, f := range fixtures {
		g := f.build()
		b, err := m.MarshalTraces(otlpconv.ToTraces(g.spans))
		if err != nil {
			fmt.Fprintln(os.Stderr, "marshal:", err)
			os.Exit(1)
		}
		pretty := b // one request per line, as the collector file exporter writes
		dir := filepath.Join(*out, f.kind)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name+".json"), append(pretty, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("wrote %d fixtures\n", len(fixtures))
}
