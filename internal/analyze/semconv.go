package analyze

import (
	"encoding/hex"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// Semantic-convention readers. Every helper reads the current name first and
// the older one second, so traces from old and new SDKs diagnose alike.

// IsServiceEntry: a SERVER or CONSUMER span, or a span without a parent in
// the trace (a root, or an orphan whose parent never arrived).
func IsServiceEntry(n *Node) bool {
	if n == nil {
		return false
	}
	return n.Parent == nil || n.Span.Kind == model.KindServer || n.Span.Kind == model.KindConsumer
}

// IsCall: a CLIENT or PRODUCER span, or an INTERNAL/unspecified span that
// carries the attributes of an outgoing call (some database and HTTP client
// libraries emit INTERNAL spans).
func IsCall(n *Node) bool {
	if n == nil {
		return false
	}
	if n.isCall == 0 {
		n.isCall = 1
		if isCall(n.Span) {
			n.isCall = 2
		}
	}
	return n.isCall == 2
}

func isCall(s *model.Span) bool {
	switch s.Kind {
	case model.KindClient, model.KindProducer:
		return true
	case model.KindInternal, model.KindUnspecified:
		if _, ok := s.Attrs.First(dbKeys...); ok {
			return true
		}
		_, ok := s.Attrs.First("http.request.method", "http.method", "rpc.system", "rpc.system.name", "messaging.system")
		return ok
	}
	return false
}

// dbKeys mark a database call: OTel's db.system.name / db.system, and the
// OpenTracing convention's db.type, which Jaeger clients set and so does
// opentelemetry_ecto 1.0 (the OTel demo's Elixir featureflagservice sends
// its queries with db.type "sql", db.statement and no db.system). Agents
// older than both name the query itself: sql.query (with the JDBC URL in
// sql.url) and redis.command, as a Java agent's recorded "traceshop"
// orderservice and dataservice do.
var dbKeys = []string{"db.system.name", "db.system", "db.type", "sql.query", "redis.command"}

// IsDB: a call to a database (one of dbKeys present). SERVER spans of a
// database proxy are not calls and are excluded.
func IsDB(n *Node) bool {
	if n == nil {
		return false
	}
	// The answer, kind included, is kept on the node: asking it again
	// does not touch the span.
	if n.isDB == 0 {
		n.isDB = 1
		if k := n.Span.Kind; k != model.KindServer && k != model.KindConsumer {
			if _, ok := n.Span.Attrs.First(dbKeys...); ok {
				n.isDB = 2
			}
		}
	}
	return n.isDB == 2
}

// DBSystem returns db.system.name / db.system ("postgresql", "redis", ...),
// or OpenTracing's db.type.
func DBSystem(s *model.Span) string {
	if v := s.Attrs.Str("db.system.name", "db.system", "db.type"); v != "" {
		return v
	}
	if sys := jdbcSystem(s); sys != "" {
		return sys
	}
	switch {
	case s.Attrs.Str("redis.command") != "":
		return "redis"
	case s.Attrs.Str("sql.query") != "":
		return "sql"
	}
	return ""
}

// jdbcSystem names the database of a JDBC URL in sql.url:
// jdbc:mysql://mysql:3306/shop names the system after "jdbc:".
func jdbcSystem(s *model.Span) string {
	if u := s.Attrs.Str("sql.url"); strings.HasPrefix(u, "jdbc:") {
		if sys, _, ok := strings.Cut(u[len("jdbc:"):], ":"); ok && sys != "" {
			return sys
		}
	}
	return ""
}

// nodeDBSystem is DBSystem of n's span, read once: every span is asked
// for it by several detectors. A span without any of dbKeys (IsDB knows,
// for the kinds it judges) can name its database only by a JDBC URL.
func nodeDBSystem(n *Node) string {
	if !n.dbSystemDone {
		if k := n.Span.Kind; k != model.KindServer && k != model.KindConsumer && !IsDB(n) {
			n.dbSystem = jdbcSystem(n.Span)
		} else {
			n.dbSystem = DBSystem(n.Span)
		}
		n.dbSystemDone = true
	}
	return n.dbSystem
}

// DBStatement returns db.query.text / db.statement, falling back to the
// span name (which instrumentations set to "SELECT shop.orders" or "GET").
func DBStatement(s *model.Span) string {
	if v := s.Attrs.Str("db.query.text", "db.statement", "sql.query"); v != "" {
		return v
	}
	if v := s.Attrs.Str("redis.command"); v != "" {
		return strings.TrimSpace(v + " " + s.Attrs.Str("redis.args"))
	}
	if v := s.Attrs.Str("db.query.summary", "db.operation.name", "db.operation"); v != "" {
		if c := s.Attrs.Str("db.collection.name", "db.sql.table", "db.mongodb.collection"); c != "" {
			return v + " " + c
		}
		return v
	}
	return s.Name
}

// DBShape is the normalised statement of a database span.
func DBShape(s *model.Span) string { return NormalizeStatement(DBStatement(s)) }

// HTTPStatus returns http.response.status_code / http.status_code.
func HTTPStatus(s *model.Span) (int, bool) {
	v, ok := s.Attrs.First("http.response.status_code", "http.status_code")
	if !ok {
		return 0, false
	}
	i, ok := v.AsInt()
	return int(i), ok && i > 0
}

// HTTPMethod returns http.request.method / http.method.
func HTTPMethod(s *model.Span) string { return s.Attrs.Str("http.request.method", "http.method") }

// HTTPRoute returns the route template (http.route), or "".
func HTTPRoute(s *model.Span) string { return s.Attrs.Str("http.route") }

// HTTPURL returns the raw URL or path of an HTTP span: url.full / http.url,
// else url.path / http.target.
func HTTPURL(s *model.Span) string {
	return s.Attrs.Str("url.full", "http.url", "url.path", "http.target", "http.path")
}

// HTTPPath returns the route template when known, else the normalised URL
// path, else "".
func HTTPPath(s *model.Span) string {
	if r := HTTPRoute(s); r != "" {
		return r
	}
	if u := HTTPURL(s); u != "" {
		return NormalizeURL(u)
	}
	return ""
}

// PeerService returns peer.service (set by the caller to name the callee).
func PeerService(s *model.Span) string { return s.Attrs.Str("peer.service") }

// ServerAddress returns server.address / net.peer.name, else the host of
// url.full / http.url.
func ServerAddress(s *model.Span) string {
	if v := s.Attrs.Str("server.address", "net.peer.name"); v != "" {
		return v
	}
	if raw := s.Attrs.Str("url.full", "http.url"); raw != "" {
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			return u.Hostname()
		}
	}
	return ""
}

// CallTarget names what a call talks to (docs/patterns.md, "target of a
// call"): service is the service.name of the callee's SERVER/CONSUMER span
// when it is in the trace (not for producers), else peer.service, else
// server.address / net.peer.name, else db.system or the messaging system,
// else the span's own service when it differs from its caller's (the
// callee reported the call), else "unknown peer"; operation is the route template (from the call or its
// server child), the rpc method, the messaging destination, or the
// normalised statement. Results are memoised in t (nil t: no memo), so
// detectors may call it freely; the Trace is not safe for concurrent use
// anyway (its critical path is memoised the same way).
func CallTarget(t *Trace, n *Node) (service, operation string) {
	if t == nil || n.Index < 0 || n.Index >= len(t.Nodes) || t.Nodes[n.Index] != n {
		return callTarget(n)
	}
	memo := memoOf(t)
	if memo.calls == nil {
		memo.calls = make([]callMemo, len(t.Nodes))
	}
	m := &memo.calls[n.Index]
	if !m.done {
		m.service, m.operation = callTarget(n)
		m.done = true
	}
	return m.service, m.operation
}

type callMemo struct {
	done               bool
	service, operation string
}

func callTarget(n *Node) (service, operation string) {
	s := n.Span
	server := calleeEntry(n)
	// The callee's own service.name is ground truth; peer.service is the
	// caller's guess and server.address is often an IP or a load balancer.
	// A message's consumers are not its target (the broker is), so
	// producers keep the names the caller gave.
	if server != nil && s.Kind != model.KindProducer {
		service = server.Span.Service
		// Nothing instrumented answered behind the proxy: it forwarded
		// to the host it names, which is the callee, not the proxy.
		if proxyHop(server) {
			if a := ServerAddress(server.Span); a != "" && !isIPLiteral(a) && a != "localhost" {
				service = a
			}
			service = nonEmpty(PeerService(s), service)
		}
	}
	if service == "" {
		service = PeerService(s)
	}
	if service == "" {
		service = ServerAddress(s)
		// A database reached by IP is better named by what it is: the
		// address says nothing to a reader and changes with every pod.
		if isIPLiteral(service) && IsDB(n) {
			service = nodeDBSystem(n)
		}
		// 0.0.0.0 or localhost names no service; the port at least tells
		// one apart from another (HotROD's customer on :8081, route on
		// :8083, all called as 0.0.0.0).
		if h := strings.Trim(service, "[]"); h == "localhost" || (isIPLiteral(h) && (net.ParseIP(h).IsUnspecified() || net.ParseIP(h).IsLoopback())) {
			if p := serverPort(s); p != "" {
				service = net.JoinHostPort(h, p)
			}
		}
	}
	if service == "" && server != nil {
		service = server.Span.Service
	}
	if service == "" {
		service = nodeDBSystem(n)
	}
	if service == "" {
		service = s.Attrs.Str("messaging.system", "rpc.service")
	}

	switch {
	case IsDB(n):
		operation = DBShape(s)
	case rpcSystem(s) != "" || s.Attrs.Str("rpc.method") != "":
		m := s.Attrs.Str("rpc.method")
		if svc := s.Attrs.Str("rpc.service"); svc != "" && m != "" && !strings.Contains(m, "/") {
			operation = svc + "/" + m
		} else if m != "" {
			operation = m
		} else {
			operation = s.Name
		}
	case s.Attrs.Str("messaging.system") != "":
		dest := MessageDestination(s)
		op := s.Attrs.Str("messaging.operation.type", "messaging.operation")
		if op == "" {
			op = "publish"
		}
		operation = strings.TrimSpace(op + " " + dest)
	case HTTPMethod(s) != "":
		path := HTTPRoute(s)
		if path == "" && server != nil {
			path = HTTPRoute(server.Span)
		}
		if path == "" {
			path = HTTPPath(s)
		}
		if path == "" {
			path = NormalizeURL(s.Name)
		}
		operation = strings.TrimSpace(HTTPMethod(s) + " " + path)
	default:
		operation = NormalizeURL(s.Name)
	}
	if service == "" {
		// The socket address is all some clients record (Zipkin's
		// remoteEndpoint with only an IP and port); a reader can still look
		// it up, which beats any guess.
		service = peerSocket(s)
	}
	if service == "" {
		service = unknownPeer
		// A client span reported under a service other than its caller's
		// is the callee's own account of the call (HotROD's "redis" and
		// "mysql" services): that service is the target. A call of the
		// caller's own service names nobody, and naming the caller as its
		// own target would send readers to the wrong service.
		if p := n.Parent; p != nil && s.Service != "" && p.Span.Service != "" && p.Span.Service != s.Service {
			service = s.Service
		}
	}
	return service, operation
}

// serverPort returns server.port / net.peer.port, else the port of
// url.full / http.url, or "".
func serverPort(s *model.Span) string {
	if v, ok := s.Attrs.First("server.port", "net.peer.port"); ok {
		if p, ok := v.AsInt(); ok && p > 0 {
			return strconv.FormatInt(p, 10)
		}
	}
	if raw := s.Attrs.Str("url.full", "http.url"); raw != "" {
		if u, err := url.Parse(raw); err == nil {
			return u.Port()
		}
	}
	return ""
}

// peerSocket returns the peer's IP address (with its port when known) as
// network.peer.* or the older net.sock.peer.* / net.peer.ip name it, or "".
func peerSocket(s *model.Span) string {
	addr := s.Attrs.Str("network.peer.address", "net.sock.peer.addr", "net.peer.ip")
	if addr == "" {
		return ""
	}
	if v, ok := s.Attrs.First("network.peer.port", "net.sock.peer.port", "net.peer.port"); ok {
		if p, ok := v.AsInt(); ok && p > 0 {
			return net.JoinHostPort(addr, strconv.FormatInt(p, 10))
		}
	}
	return addr
}

// unknownPeer is the target of a call that names no peer, address, database
// or messaging system and has no callee span in the trace.
const unknownPeer = "unknown peer"

// calleeEntry returns the SERVER or CONSUMER span a call produced in
// another service, or nil when the callee is not instrumented.
// A call through a sidecar or gateway (Envoy, Istio) reaches the proxy
// first, whose spans carry its own service name ("proxy"): the callee is
// the application's entry below the proxy's spans, when there is one.
func calleeEntry(n *Node) *Node {
	for _, c := range n.Children {
		if entryFrom(c, n.Span.Service) {
			if app := behindProxy(c, n.Span.Service); app != nil {
				return app
			}
			return c
		}
	}
	return nil
}

// entryFrom reports a SERVER or CONSUMER span of a named service other
// than caller.
func entryFrom(c *Node, caller string) bool {
	return (c.Span.Kind == model.KindServer || c.Span.Kind == model.KindConsumer) && c.Span.Service != "" &&
		!strings.HasPrefix(c.Span.Service, model.UnknownService) && c.Span.Service != caller
}

// proxyHops bounds the proxy spans between a call and its callee: a
// sidecar's egress and the callee's sidecar's ingress, a gateway's
// ingress and its router's egress.
const proxyHops = 4

// behindProxy returns the entry span of the application a proxy hop e
// forwarded to, following only proxy spans, or nil when e is no proxy or
// nothing instrumented answered behind it.
func behindProxy(e *Node, caller string) *Node {
	if !proxyHop(e) {
		return nil
	}
	level := []*Node{e}
	for range proxyHops {
		var next []*Node
		for _, p := range level {
			for _, c := range p.Children {
				switch {
				case proxyHop(c):
					next = append(next, c)
				case entryFrom(c, caller):
					return c
				}
			}
		}
		level = next
	}
	return nil
}

// isProxyHop tells a span a proxy recorded: Envoy tags its spans with
// upstream_cluster and component=proxy, and sidecars report under names
// such as "proxy", "envoy" or "istio-proxy".
func isProxyHop(s *model.Span) bool {
	if s.Attrs.Str("upstream_cluster", "upstream_cluster.name") != "" || s.Attrs.Str("component") == "proxy" {
		return true
	}
	switch strings.ToLower(s.Service) {
	case "proxy", "envoy", "istio-proxy", "linkerd-proxy", "sidecar", "istio-ingressgateway", "istio-egressgateway":
		return true
	}
	return false
}

// proxyHop is isProxyHop of n's span, read once: every call's children
// are asked while looking for its callee.
func proxyHop(n *Node) bool {
	if n.proxyHop == 0 {
		n.proxyHop = 1
		if isProxyHop(n.Span) {
			n.proxyHop = 2
		}
	}
	return n.proxyHop == 2
}

// EntryOf returns the nearest service-entry ancestor-or-self of n.
func EntryOf(n *Node) *Node {
	for p := n; p != nil; p = p.Parent {
		if IsServiceEntry(p) {
			return p
		}
	}
	return nil
}

// grpcFailure holds the gRPC codes that mean the callee failed (UNKNOWN,
// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE,
// DATA_LOSS); codes such as NOT_FOUND or INVALID_ARGUMENT are answers.
var grpcFailure = map[int64]bool{2: true, 4: true, 8: true, 10: true, 13: true, 14: true, 15: true}

// Failed reports whether a span failed. Decision: status ERROR; or an HTTP
// status ≥ 500 on any span kind (instrumentations forget to set the status);
// or 408/429, which are not the caller's fault and are what retries react
// to; or a failing gRPC code; or the OpenTracing `error=true` tag. Other 4xx
// and gRPC codes such as NOT_FOUND are answers to the caller (404 on a
// lookup is normal) and are not failures, even with status ERROR: OTel's
// HTTP and gRPC conventions set ERROR on every CLIENT span with such an
// answer, and Brave tags error=404, so that status only repeats the code.
// Such an answer is a failure only when its caller failed too: then it is
// where the caller's failure came from.
func Failed(n *Node) bool {
	if n.failed == 0 {
		n.failed = 1
		if judgeFailed(n) {
			n.failed = 2
		}
	}
	return n.failed == 2
}

func judgeFailed(n *Node) bool {
	s := n.Span
	// The codes are read once: whether they are an answer and the tests
	// below judge the same ones.
	code, httpOK := HTTPStatus(s)
	var grpc int64
	var grpcOK bool
	if !httpOK {
		grpc, grpcOK = grpcStatus(s)
	}
	if answeredCodes(code, httpOK, grpc, grpcOK) {
		// Unless the caller failed on it: then the answer is where the
		// caller's failure came from (a 404 the checkout turned into a 500).
		return (s.StatusCode == model.StatusError || errorTag(s) || abandoned(n)) && callerFailed(n)
	}
	if s.StatusCode == model.StatusError {
		return true
	}
	if s.StatusCode == model.StatusOK {
		// An explicit OK is the instrumentation's final word.
		return false
	}
	if httpOK && (code >= 500 || code == 408 || code == 429) {
		return true
	}
	if httpOK {
		grpc, grpcOK = grpcStatus(s)
	}
	if grpcOK && grpcFailure[grpc] {
		return true
	}
	return errorTag(s)
}

// abandoned reports a SERVER span that ended because its caller stopped
// waiting (gRPC CANCELLED, HTTP 499), not with an answer of its own. The
// gRPC conventions leave such a server span's status unset, yet its
// handler never finished: under a caller that failed (a deadline that
// expired above it) it is a layer the failure passed through, not a
// success that swallowed its callee's error.
func abandoned(n *Node) bool {
	if n.Span.Kind != model.KindServer {
		return false
	}
	if code, ok := HTTPStatus(n.Span); ok {
		return code == 499
	}
	c, ok := grpcStatus(n.Span)
	return ok && c == 1
}

// callerFailed reports whether the code that waited on n failed: one of
// n's ancestors up to the caller's entry span (SERVER, CONSUMER or the
// root). A server half whose parent is its client (Brave reports both)
// asks the client, which asks its own caller in turn.
func callerFailed(n *Node) bool {
	for p := n.Parent; p != nil; p = p.Parent {
		if Failed(p) {
			return true
		}
		if IsServiceEntry(p) {
			return false
		}
	}
	return false
}

// errorTag reads OpenTracing's error tag: a boolean from most tracers,
// the string "true" from Envoy's OTLP spans. Zipkin's error tag (a
// message) is already the span's status when its spans are read.
func errorTag(s *model.Span) bool {
	v, ok := s.Attrs.Get("error")
	if !ok {
		return false
	}
	if v.Type == model.TypeBool {
		return v.Bool
	}
	return v.Type == model.TypeString && strings.EqualFold(v.Str, "true")
}

// answeredCodes reports codes that are an answer that is the caller's
// business (4xx but 408 and 429; a gRPC code other than OK that is not in
// grpcFailure). The gRPC code counts only without an HTTP status.
func answeredCodes(code int, httpOK bool, grpc int64, grpcOK bool) bool {
	if httpOK {
		return code >= 400 && code < 500 && code != 408 && code != 429
	}
	return grpcOK && grpc != 0 && !grpcFailure[grpc]
}

// grpcStatus returns the gRPC status code a span recorded: the number of
// rpc.grpc.status_code, or the code's name in rpc.response.status_code,
// which the current RPC conventions use instead (otelgrpc from v0.65 on
// writes "DEADLINE_EXCEEDED"; Connect writes "deadline_exceeded"). Without
// the name a gRPC deadline or cancellation read as a plain error.
func grpcStatus(s *model.Span) (int64, bool) {
	if v, ok := s.Attrs.Get("rpc.grpc.status_code"); ok {
		return v.AsInt()
	}
	v, ok := s.Attrs.Get("rpc.response.status_code")
	if !ok {
		return 0, false
	}
	if c, ok := GRPCCodeByName(v.AsString()); ok {
		return c, true
	}
	return v.AsInt()
}

// GRPCCodeByName returns the gRPC status code of a code's name, in any
// case ("DEADLINE_EXCEEDED", Connect's "deadline_exceeded").
func GRPCCodeByName(name string) (int64, bool) {
	c, ok := grpcCodeNames[strings.ToUpper(name)]
	return c, ok
}

// grpcCodeNames are the gRPC status codes by name.
var grpcCodeNames = map[string]int64{"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3,
	"DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13,
	"UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16}

// rpcSystem is the span's RPC system under the old key (rpc.system) or
// the current one (rpc.system.name).
func rpcSystem(s *model.Span) string { return s.Attrs.Str("rpc.system", "rpc.system.name") }

// IsTimeoutLike reports whether a span ended because something timed out:
// its status message, error.type, exception events or attributes mention a
// timeout or deadline, or it carries HTTP 504/408 or gRPC DEADLINE_EXCEEDED.
func IsTimeoutLike(s *model.Span) bool {
	if OwnTimeout(s) {
		return true
	}
	code, ok := HTTPStatus(s)
	return ok && (code == 504 || code == 408)
}

// OwnTimeout reports a span whose error says it timed out (its message,
// exception or error type, or gRPC DEADLINE_EXCEEDED), not one that only
// received an HTTP 504 or 408: a caller answered so passed on a deadline
// that ran out below it or in a proxy it does not see.
func OwnTimeout(s *model.Span) bool {
	if mentionsTimeout(s.StatusMessage) || mentionsTimeout(s.Attrs.Str("error.type")) ||
		mentionsTimeout(s.Attrs.Str("exception.type")) || mentionsTimeout(s.Attrs.Str("exception.message")) {
		return true
	}
	for i := range s.Events {
		e := &s.Events[i]
		if e.Name != "exception" {
			continue
		}
		if mentionsTimeout(e.Attrs.Str("exception.type")) || mentionsTimeout(e.Attrs.Str("exception.message")) {
			return true
		}
	}
	c, ok := grpcStatus(s)
	return ok && c == 4
}

func mentionsTimeout(s string) bool {
	if s == "" {
		return false
	}
	l := strings.ToLower(s)
	return strings.Contains(l, "timeout") || strings.Contains(l, "timed out") ||
		strings.Contains(l, "deadline") || strings.Contains(l, "time-out") || strings.Contains(l, "time out")
}

// ExceptionOf returns the type and message of the span's first exception
// event, else of exception.* / error.type attributes, else the status
// message.
func ExceptionOf(s *model.Span) (typ, msg string) {
	for i := range s.Events {
		e := &s.Events[i]
		if e.Name == "exception" {
			typ, msg = e.Attrs.Str("exception.type"), e.Attrs.Str("exception.message")
			typ = namedType(typ, e.Attrs.Str("exception.stacktrace"))
			// @opentelemetry/instrumentation-pg records a typeless, generic
			// "PostgreSQL error of type 'error' occurred (code: 42P01)" and
			// puts the server's words ("relation \"pricez\" does not exist")
			// in the status: keep both, the status as the innermost cause.
			if st := strings.TrimSpace(s.StatusMessage); typ == "" && st != "" && !strings.Contains(msg, st) {
				if m := strings.TrimSpace(msg); m != "" {
					msg = m + ": " + st
				} else {
					msg = st
				}
			}
			return typ, msg
		}
	}
	typ = s.Attrs.Str("exception.type", "error.type")
	msg = s.Attrs.Str("exception.message")
	if msg == "" {
		if t, m, ok := errorLog(s); ok {
			return nonEmpty(typ, t), m
		}
		msg = s.StatusMessage
	}
	return typ, msg
}

// namedType replaces a numeric exception type with the error's name from
// the first line of its stack trace: @opentelemetry/instrumentation-undici
// records an aborted fetch's DOMException by its legacy code ("23"), while
// the trace starts "TimeoutError: The operation was aborted due to timeout".
func namedType(typ, stack string) string {
	if typ == "" || strings.TrimLeft(typ, "0123456789") != "" {
		return typ
	}
	first, _, _ := strings.Cut(stack, "\n")
	name, _, ok := strings.Cut(first, ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return typ
	}
	return name
}

// errorLog reads the error a span logged the OpenTracing way, which Jaeger
// clients still send: a log with event "error" and error.kind /
// error.object / message fields, or, as jaeger-client-go's HotROD logs its
// Redis timeouts, level "error" with the error in an "error" field; or as
// Rust's tracing-opentelemetry records an error! event: named by its
// message, with level "ERROR".
func errorLog(s *model.Span) (typ, msg string, ok bool) {
	for i := range s.Events {
		e := &s.Events[i]
		if e.Name != "error" && !strings.EqualFold(e.Attrs.Str("level"), "error") && e.Attrs.Str("error.kind", "error.object") == "" {
			continue
		}
		msg = e.Attrs.Str("error.object", "error", "message")
		if msg == "" && e.Name != "error" && e.Name != "log" {
			msg = e.Name
		}
		if typ = e.Attrs.Str("error.kind"); typ != "" || msg != "" {
			return typ, msg, true
		}
	}
	return "", "", false
}

// SpanRef names one span in evidence.
type SpanRef struct {
	SpanID     string  `json:"span_id"`
	Service    string  `json:"service"`
	Operation  string  `json:"operation"`
	DurationMS float64 `json:"duration_ms"`
	// StartMS is the offset from the start of the trace's main root.
	StartMS float64 `json:"start_ms"`
}

// spanIDOf is n's span id as text. The ids of a trace are written once
// into one string and handed out as slices of it: the critical path and
// the findings name most spans of a large trace, often several times.
func spanIDOf(t *Trace, n *Node) string {
	if t == nil || n.Index < 0 || n.Index >= len(t.Nodes) || t.Nodes[n.Index] != n {
		return n.Span.SpanID.String()
	}
	m := memoOf(t)
	if m.ids == "" {
		var b strings.Builder
		b.Grow(spanIDHex * len(t.Nodes))
		var buf [spanIDHex]byte
		for _, x := range t.Nodes {
			b.Write(hex.AppendEncode(buf[:0], x.Span.SpanID[:]))
		}
		m.ids = b.String()
	}
	i := spanIDHex * n.Index
	return m.ids[i : i+spanIDHex]
}

// spanIDHex is the length of a span id in hex.
const spanIDHex = 2 * len(model.SpanID{})

// RefOf describes n for evidence.
func RefOf(t *Trace, n *Node) SpanRef {
	var base uint64
	if r := t.Root(); r != nil {
		base = r.Start()
	}
	var off float64
	if n.Start() > base {
		off = NS(n.Start() - base)
	}
	return SpanRef{SpanID: spanIDOf(t, n), Service: n.Span.Service, Operation: n.Span.Name,
		DurationMS: NS(n.Duration()), StartMS: off}
}

// SeverityForImpact grades a finding by the critical-path time a fix would
// remove: critical when it is at least half of the request and at least
// 500 ms, warning when it is at least a fifth of the request or 200 ms,
// info otherwise (worth knowing, not worth a page).
func SeverityForImpact(impactNS, totalNS uint64) Severity {
	share := 0.0
	if totalNS > 0 {
		share = float64(impactNS) / float64(totalNS)
	}
	switch {
	case share >= 0.5 && impactNS >= 500e6:
		return SeverityCritical
	case share >= 0.2 || impactNS >= 200e6:
		return SeverityWarning
	}
	return SeverityInfo
}

// detectMemo is derived once per trace; see Trace.memo.
type detectMemo struct {
	calls []callMemo
	// Pre-order interval of each node by index: m is in n's subtree iff
	// pre[n] <= pre[m] < post[n].
	pre, post []int32
	cp        *CriticalPath
	total     uint64
	// lockVictims are the database spans that failed waiting for a row
	// lock (lockError), found once: every database span asks for them.
	lockVictims     []*Node
	lockVictimsDone bool
	// txEnds are the database spans that end a transaction (COMMIT,
	// ROLLBACK), found once for lockReleasedBy.
	txEnds     []*Node
	txEndsDone bool
	// entryStatements holds each service entry's database spans in start
	// order, built once the first row-lock wait asks (rowLockQueue).
	entryStatements map[*Node][]*Node
	// waits holds nodeWaits by node index once waitsDone is set; few
	// spans wait, so only theirs are kept.
	waits     map[int][]spanWait
	waitsDone []bool
	// ids holds the span ids of t.Nodes in hex, in order (spanIDOf).
	ids string
}

func memoOf(t *Trace) *detectMemo {
	if t.memo == nil {
		t.memo = &detectMemo{}
	}
	return t.memo
}

// pathIndex prepares the Euler intervals and the critical path.
func pathIndex(t *Trace) *detectMemo {
	m := memoOf(t)
	if m.cp != nil {
		return m
	}
	m.pre = make([]int32, len(t.Nodes))
	m.post = make([]int32, len(t.Nodes))
	for i := range m.pre {
		m.pre[i] = -1
	}
	var clock int32
	type fr struct {
		n    *Node
		next int
	}
	stack := make([]fr, 0, 64)
	for _, r := range t.Roots {
		stack = append(stack, fr{n: r})
		m.pre[r.Index] = clock
		clock++
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.next < len(f.n.Children) {
				c := f.n.Children[f.next]
				f.next++
				m.pre[c.Index] = clock
				clock++
				stack = append(stack, fr{n: c})
				continue
			}
			m.post[f.n.Index] = clock
			stack = stack[:len(stack)-1]
		}
	}
	m.cp = t.CriticalPath()
	m.total = m.cp.Total()
	return m
}

// critTotal is the critical path's length, computed once.
func critTotal(t *Trace) uint64 { return pathIndex(t).total }

// critUnder is CriticalPath.TimeUnder in O(k log S + segments inside the
// nodes' time windows): segments of a subtree lie inside the subtree
// root's [start, end], so a binary search finds them, and pre-order
// intervals test membership without walking ancestors.
func critUnder(t *Trace, nodes ...*Node) uint64 {
	m := pathIndex(t)
	if len(nodes) == 0 {
		return 0
	}
	// Drop nodes inside another node of the set so nothing counts twice.
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *Node) int { return int(m.pre[a.Index]) - int(m.pre[b.Index]) })
	var total uint64
	var keptPost int32 = -1
	for _, n := range sorted {
		p := m.pre[n.Index]
		if p < 0 || p < keptPost {
			continue
		}
		keptPost = m.post[n.Index]
		total += m.within(n, n.Start(), n.End())
	}
	return total
}

// critWithin is the critical-path time inside [lo, hi) spent in under or
// its descendants.
func critWithin(t *Trace, under *Node, lo, hi uint64) uint64 {
	m := pathIndex(t)
	if m.pre[under.Index] < 0 {
		return 0
	}
	return m.within(under, max(lo, under.Start()), min(hi, under.End()))
}

func (m *detectMemo) within(n *Node, lo, hi uint64) uint64 {
	segs := m.cp.Segments
	i := sort.Search(len(segs), func(i int) bool { return segs[i].End > lo })
	pre, post := m.pre[n.Index], m.post[n.Index]
	var total uint64
	for ; i < len(segs) && segs[i].Start < hi; i++ {
		s := segs[i]
		if q := m.pre[s.Node.Index]; q < pre || q >= post {
			continue
		}
		total += min(s.End, hi) - max(s.Start, lo)
	}
	return total
}

// displayOp names a span for titles: its route for entries, else its name.
func displayOp(n *Node) string {
	if n == nil {
		return "?"
	}
	if m, r := HTTPMethod(n.Span), HTTPRoute(n.Span); m != "" && r != "" && n.Span.Kind == model.KindServer {
		return m + " " + r
	}
	// A server span named only by its method (Brave's "get" when no
	// controller matched, OpenTelemetry's "GET" when the route is unknown)
	// says nothing of what was asked: the normalised path does.
	if m := HTTPMethod(n.Span); m != "" && n.Span.Kind == model.KindServer && strings.EqualFold(strings.TrimSpace(n.Span.Name), m) {
		if u := HTTPURL(n.Span); u != "" {
			return strings.ToUpper(m) + " " + NormalizeURL(u)
		}
	}
	return n.Span.Name
}

func roundMS(ns uint64) float64 { return float64(int64(NS(ns)*10+0.5)) / 10 }

func sharePct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(int64(float64(part)/float64(whole)*1000+0.5)) / 10
}

// subSat subtracts without wrapping.
func subSat(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// opName is an operation as titles show it: whole, since the UI wraps
// titles and a name is what the reader searches for. A database call's
// name may be its statement (unbounded user data): clipped, with the whole
// statement in the finding's evidence.
func opName(n *Node, op string) string {
	if IsDB(n) {
		return model.Clip(op, 60)
	}
	return op
}

// spanLabel names a span for titles: "checkout → payment-service
// POST /v1/charges" for calls, "payment-service POST /api/payments" else.
func spanLabel(t *Trace, n *Node) string {
	if IsCall(n) {
		svc, op := CallTarget(t, n)
		return n.Span.Service + " → " + svc + " " + opName(n, op)
	}
	return n.Span.Service + " " + opName(n, displayOp(n))
}

// wrapperErrorTypes are exception types that only wrap another error:
// Go's fmt.Errorf("...: %w") and errors.New/Join, pkg/errors' wrappers,
// url.Error, and the generic exceptions other runtimes wrap causes in.
// Naming one of them as "the thing to fix" says nothing.
var wrapperErrorTypes = map[string]bool{
	"*fmt.wrapError": true, "*fmt.wrapErrors": true, "*errors.errorString": true, "*errors.joinError": true,
	"*errors.withStack": true, "*errors.withMessage": true, "*errors.fundamental": true, "*url.Error": true,
	"*net.OpError": true, "*status.Error": true, "error": true, "Error": true,
	"java.lang.RuntimeException": true, "java.util.concurrent.ExecutionException": true,
	"java.util.concurrent.CompletionException": true, "System.AggregateException": true,
}

// IsWrapperErrorType reports whether an exception type only wraps a cause.
func IsWrapperErrorType(typ string) bool { return wrapperErrorTypes[strings.TrimSpace(typ)] }

// OriginalError unwraps an error as an exception reports it: a wrapper
// type is dropped, and of a message chain "a: b: c" (Go's %w, Java's
// "Outer: Inner: cause") the last part is the original cause.
func OriginalError(typ, msg string) (string, string) {
	if IsWrapperErrorType(typ) {
		typ = ""
	}
	parts := chainParts(msg)
	for i := len(parts) - 1; i >= 0; i-- {
		if p := strings.TrimSpace(parts[i]); p != "" {
			// A chain that ends in a type name ("...: java.io.IOException")
			// names the original type.
			if typ == "" && i > 0 && looksLikeTypeName(p) {
				return p, ""
			}
			if typ == "" && i > 0 && looksLikeTypeName(strings.TrimSpace(parts[i-1])) {
				return strings.TrimSpace(parts[i-1]), p
			}
			return typ, p
		}
	}
	return typ, strings.TrimSpace(msg)
}

// chainParts splits an error chain "a: b: c" at its ": " separators, but
// not inside parentheses: node-postgres' "PostgreSQL error of type 'error'
// occurred (code: 42P01)" is one message, not a cause "42P01)".
func chainParts(msg string) []string {
	var parts []string
	depth, from := 0, 0
	for i := 0; i < len(msg); i++ {
		switch msg[i] {
		case '(':
			depth++
		case ')':
			depth = max(depth-1, 0)
		case ':':
			if depth == 0 && i+1 < len(msg) && msg[i+1] == ' ' {
				parts = append(parts, msg[from:i])
				from = i + 2
			}
		}
	}
	return append(parts, msg[from:])
}

// looksLikeTypeName: a dotted identifier with a capitalised last part
// (java.io.IOException, System.IO.IOException) or a Go *pkg.Type.
func looksLikeTypeName(s string) bool {
	if s == "" || strings.ContainsAny(s, " \"'/()") {
		return false
	}
	s = strings.TrimPrefix(s, "*")
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return false
	}
	last := s[dot+1]
	return last >= 'A' && last <= 'Z' && !IsWrapperErrorType(s) && !IsWrapperErrorType("*"+s)
}

// originalErrorType names the original error for "fix or guard X": its
// type when the reported type is not a wrapper, else the innermost part of
// the message.
func originalErrorType(typ, msg string) string {
	t, m := OriginalError(typ, msg)
	if t != "" {
		return t
	}
	return model.Clip(m, 80)
}

// isIPLiteral reports whether host is an IPv4 or IPv6 address.
func isIPLiteral(host string) bool {
	h := strings.Trim(host, "[]")
	// An IPv6 address has a colon and an IPv4 one only digits and dots:
	// most hosts are names, and ParseIP allocates for each of them.
	if h == "" || !strings.Contains(h, ":") && strings.Trim(h, "0123456789.") != "" {
		return false
	}
	return net.ParseIP(h) != nil
}

// IsLongPoll tells whether a request waits on purpose: a long poll or a
// watch is held open by the server until something changes or the poll's
// own timeout passes, so its length is the protocol, not latency. Nacos
// and Apollo config clients keep one open for 30 s or more from a
// background thread; Consul blocking queries, Kubernetes and etcd watches
// do the same. Either side of the exchange may carry the mark: the
// client's URL or worker thread, the server's target.
func IsLongPoll(n *Node) bool {
	if longPollMarked(n.Span) {
		return true
	}
	if IsCall(n) {
		if c := calleeEntry(n); c != nil {
			return longPollMarked(c.Span)
		}
		return false
	}
	if n.Span.Kind == model.KindServer && n.Parent != nil && IsCall(n.Parent) {
		return longPollMarked(n.Parent.Span)
	}
	return false
}

// IsSession tells whether an entry span is the lifetime of a connection
// or session (an SSH or WebSocket connection, a client session) rather
// than one request: the time between the exchanges inside it is the peer
// thinking or idle, and nobody is waiting for it to answer. A Go SFTP
// server recorded its ssh.connection for 51 s; the password attempt came
// after 49 s. Its name says so: a word "connection", "session" or
// "websocket". An HTTP or RPC request is one request whatever its route
// is called (POST /session signs a user in), unless it is a WebSocket.
func IsSession(n *Node) bool {
	if n.Parent != nil && n.Span.Kind != model.KindServer {
		return false
	}
	request := HTTPMethod(n.Span) != "" || rpcSystem(n.Span) != ""
	for _, w := range strings.FieldsFunc(strings.ToLower(n.Span.Name), func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9')
	}) {
		if w == "websocket" || !request && (w == "connection" || w == "session") {
			return true
		}
	}
	return false
}

// longPollMarkers are path and query fragments of the long-poll and watch
// APIs in common use, lower case.
var longPollMarkers = []string{
	"longpoll", "long-poll", "long_poll", "longpull", "long-pull", // generic; Nacos spells its header Long-Pulling-Timeout
	"/configs/listener",                  // Nacos config listener (v1 API)
	"watch=true", "watch=1", "wait=true", // Kubernetes watches, etcd v2 waits
}

func longPollMarked(s *model.Span) bool {
	if isStream(s) {
		return true
	}
	for _, v := range []string{HTTPURL(s), HTTPRoute(s), s.Attrs.Str("thread.name")} {
		v = strings.ToLower(v)
		if v == "" {
			continue
		}
		for _, m := range longPollMarkers {
			if strings.Contains(v, m) {
				return true
			}
		}
		// Consul blocking query: ?index=N&wait=D on any endpoint. Apollo's
		// config client: /notifications/v2?...&notifications=[...] (an
		// API's own /notifications/v2 resource is no long poll).
		if strings.Contains(v, "index=") && strings.Contains(v, "wait=") ||
			strings.Contains(v, "/notifications/v2") && strings.Contains(v, "notifications=") {
			return true
		}
	}
	return false
}

// envoyFlags names Envoy's response flags (Istio records them in the
// response_flags tag of its sidecar and gateway spans): why the proxy
// answered the request itself instead of passing on an upstream's answer.
var envoyFlags = map[string]string{
	"UF":    "upstream connection failure",
	"UH":    "no healthy upstream",
	"UO":    "upstream overflow, circuit breaker open",
	"UT":    "upstream request timeout",
	"URX":   "upstream retry limit exceeded",
	"UC":    "upstream connection terminated",
	"UR":    "upstream remote reset",
	"UMSDR": "upstream max stream duration reached",
	"UPE":   "upstream protocol error",
	"LR":    "connection local reset",
	"NR":    "no route configured",
	"NC":    "no upstream cluster",
	"DC":    "downstream connection terminated",
	"DT":    "downstream request timeout",
	"DPE":   "downstream protocol error",
	"RL":    "rate limited",
	"FI":    "fault injected",
	"UAEX":  "denied by external authorization",
	"OM":    "overload manager",
}

// EnvoyResponse reads what Envoy's response flags say about a span
// ("upstream connection failure (UF)"), the upstream cluster it was routing to,
// and whether every flag says that upstream could not be reached or did
// not answer. what is "" when the span carries no known flag ("-" is none).
func EnvoyResponse(s *model.Span) (what, cluster string, upstream bool) {
	flags := s.Attrs.Str("response_flags")
	if flags == "" || flags == "-" {
		return "", "", false
	}
	var parts []string
	upstream = true
	for _, f := range strings.Split(flags, ",") {
		f = strings.TrimSpace(f)
		m, ok := envoyFlags[f]
		if !ok {
			continue
		}
		parts = append(parts, m+" ("+f+")")
		if f[0] != 'U' || f == "UAEX" {
			upstream = false
		}
	}
	if len(parts) == 0 {
		return "", "", false
	}
	return strings.Join(parts, "; "), s.Attrs.Str("upstream_cluster", "upstream_cluster.name"), upstream
}

// isStream tells a streaming RPC by its message events: OpenTelemetry's
// gRPC instrumentation records one "message" event per message sent or
// received, so a unary call has at most one each way and a stream more. A
// stream stays open for as long as its peers keep talking (a watch, a
// subscription, a chat), like a long poll: its length is not latency.
func isStream(s *model.Span) bool {
	if rpcSystem(s) == "" {
		return false
	}
	n := 0
	for i := range s.Events {
		if s.Events[i].Name == "message" {
			if n++; n > 2 {
				return true
			}
		}
	}
	return false
}

// MessageDestination names where a message went: the destination (topic,
// queue or exchange), else the routing key. RabbitMQ's default exchange
// has the empty name and routes by the routing key, which is then the
// queue's name: OpenTelemetry JS's amqplib records messaging.destination
// "" and messaging.rabbitmq.routing_key "payments" for a message sent
// straight to the queue "payments".
func MessageDestination(s *model.Span) string {
	for _, k := range []string{"messaging.destination.name", "messaging.destination", "messaging.destination.template",
		"messaging.rabbitmq.destination.routing_key", "messaging.rabbitmq.routing_key"} {
		if v := s.Attrs.Str(k); v != "" {
			return v
		}
	}
	return ""
}
