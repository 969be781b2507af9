package analyze

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// hotrodDispatch is one /dispatch request as Jaeger's HotROD demo (the
// OpenTelemetry build) reports it, from what its source shows: peers named
// 0.0.0.0, the MySQL call in a service "mysql" with peer.service and
// sql.query but no db.system, lock events written by its tracing mutex,
// Redis calls as CLIENT spans of a service "redis-manual" with one failed
// attempt in five retried, and ten route calls through a worker pool of 3
// shared with other requests (so the first call already waits). fixed
// turns on the demo's fix switches: no connection mutex, a pool as large
// as the fan-out. The Redis N+1 and its failures have no switch.
func hotrodDispatch(fixed bool) []model.Span {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	i64 := func(k string, v int64) model.Attr { return model.Attr{Key: k, Value: model.Int(v)} }
	var spans []model.Span
	id := byte(1)
	add := func(parent byte, svc, name string, kind model.SpanKind, st, en float64, attrs ...model.Attr) byte {
		spans = append(spans, p1Span(id, parent, svc, name, kind, st, en, attrs...))
		id++
		return id - 1
	}
	httpGet := func(parent byte, st, en float64, url string) byte {
		return add(parent, "frontend", "HTTP GET", model.KindClient, st, en, str("http.method", "GET"), str("http.url", url),
			str("net.peer.name", "0.0.0.0"), i64("http.status_code", 200))
	}
	server := func(parent byte, svc, route string, st, en float64) byte {
		return add(parent, svc, route, model.KindServer, st, en, str("http.method", "GET"), str("http.target", route), i64("http.status_code", 200))
	}
	sqlMS, routeWait, poolSize := 695.0, 150.0, 3
	if fixed {
		sqlMS, routeWait, poolSize = 295, 0, 10
	}
	end := 3 + sqlMS + 2
	routeStart := end + 400 + routeWait
	routeEnd := routeStart + float64((10+poolSize-1)/poolSize)*60.5
	root := server(0, "frontend", "/dispatch", 0, routeEnd+1)
	c := httpGet(root, 1, end+1, "http://0.0.0.0:8081/customer?customer=123")
	cs := server(c, "customer", "/customer", 2, end)
	sq := add(cs, "mysql", "SQL SELECT", model.KindClient, 3, 3+sqlMS, str("peer.service", "mysql"),
		str("sql.query", "SELECT * FROM customer WHERE customer_id=123"), str("request", "4711-3"))
	if !fixed {
		at := func(ms float64) uint64 { return spans[sq-1].StartUnixNano + uint64(ms*1e6) }
		spans[sq-1].Events = []model.Event{
			{TimeUnixNano: at(0.1), Name: "Waiting for lock behind 3 transactions", Attrs: model.Attrs{str("blockers", "[4711-1 4711-2 4711-4]")}},
			{TimeUnixNano: at(400), Name: "Acquired lock with 1 transactions waiting behind"},
		}
	}
	d := add(root, "frontend", "/driver.DriverService/FindNearest", model.KindClient, end+1.5, end+399, str("rpc.system", "grpc"),
		str("rpc.service", "driver.DriverService"), str("rpc.method", "FindNearest"), str("net.peer.name", "0.0.0.0"))
	ds := add(d, "driver", "/driver.DriverService/FindNearest", model.KindServer, end+2, end+398, str("rpc.system", "grpc"),
		str("rpc.service", "driver.DriverService"), str("rpc.method", "FindNearest"))
	add(ds, "redis-manual", "FindDriverIDs", model.KindClient, end+3, end+23, str("param.location", "115,277"))
	t := end + 23.3
	for i := 0; i < 10; i++ {
		for try := 0; ; try++ {
			fail := (i == 4 || i == 8) && try == 0
			dur := 25.0
			if fail {
				dur = 50
			}
			g := add(ds, "redis-manual", "GetDriver", model.KindClient, t, t+dur, str("param.driverID", fmt.Sprintf("T7%05dC", 31337+i*7)))
			if fail {
				spans[g-1].StatusCode, spans[g-1].StatusMessage = model.StatusError, "redis timeout"
				spans[g-1].Events = []model.Event{{TimeUnixNano: spans[g-1].EndUnixNano, Name: "exception",
					Attrs: model.Attrs{str("exception.type", "*errors.errorString"), str("exception.message", "redis timeout")}}}
			}
			t += dur + 0.2
			if !fail {
				break
			}
		}
	}
	for i := 0; i < 10; i++ {
		st := routeStart + float64(i/poolSize)*60.5
		rc := httpGet(root, st, st+60, "http://0.0.0.0:8083/route?dropoff=115%2C277&pickup=577%2C322")
		server(rc, "route", "/route", st+0.5, st+59.5)
	}
	return spans
}

func TestHotRODDispatchNamesCauses(t *testing.T) {
	variants := realClocks(hotrodDispatch(false), "route", 3*time.Millisecond)
	// A converted export that lost every span kind.
	noKinds := hotrodDispatch(false)
	for i := range noKinds {
		noKinds[i].Kind = model.KindUnspecified
	}
	variants["no-kinds"] = noKinds
	for name, spans := range variants {
		t.Run(name, func(t *testing.T) {
			res := Analyze(spans, Options{})
			var lock, pool, n1, redisErr bool
			for _, f := range res.Findings {
				c := f.Culprit
				if c == nil {
					t.Fatalf("%s without culprit", f.Kind)
				}
				switch {
				case f.Kind == "lock_contention" && c.Service == "mysql":
					lock = f.Severity.Rank() >= SeverityWarning.Rank() && !strings.Contains(f.Fix, "index")
				case f.Kind == "lock_contention" && c.Service == "frontend":
					pool = strings.Contains(f.Title, "worker pool of 3 for 10 calls")
				case f.Kind == "fan_out" && strings.Contains(f.Title, "GetDriver"):
					n1 = c.Service == "driver" && f.Severity.Rank() >= SeverityWarning.Rank()
				case f.Kind == "error_origin":
					redisErr = c.Service == "redis-manual" && strings.Contains(f.Fix, "redis timeout")
				case f.Kind == "slow_dependency" || f.Kind == "slow_query":
					t.Errorf("the lock wait is blamed on the query: %s", f.Title)
				case f.Kind == "sequential_calls" && f.Severity != SeverityInfo:
					t.Errorf("data-dependent chain at %s: %s", f.Severity, f.Title)
				case f.Kind == "fan_out" && strings.Contains(f.Title, "route"):
					t.Errorf("the pool is reported twice: %s", f.Title)
				case strings.Contains(f.Title, "0.0.0.0"):
					t.Errorf("peer named by address: %s", f.Title)
				}
			}
			if name == "no-kinds" {
				// Without kinds HotROD's Redis calls (spans of a service of
				// their own, no client span in between) read as that
				// service's entries, not as the driver's calls: the lock
				// and the pool must still be named.
				if !lock || !pool {
					t.Errorf("lock %v, pool %v in %s", lock, pool, kindsOf(res.Findings))
				}
				return
			}
			if !lock || !pool || !n1 || !redisErr {
				t.Errorf("lock %v, pool %v, N+1 %v, failing redis %v in %s", lock, pool, n1, redisErr, kindsOf(res.Findings))
			}
			if !slices.ContainsFunc(res.Why, func(s string) bool { return strings.HasPrefix(s, "Cause: ") && strings.Contains(s, "lock") }) {
				t.Errorf("why chain does not name the lock: %q", res.Why)
			}
		})
	}
}

// With the demo's fix switches on, nothing remains about the lock or the
// pool; the Redis N+1 and its failures, which have no switch, remain, and
// so does the customer query: without the lock it still takes 295 ms, 99 %
// of /customer, a slow query by the contract (>= 100 ms and >= 50 %).
func TestHotRODDispatchFixedIsQuiet(t *testing.T) {
	for name, spans := range realClocks(hotrodDispatch(true), "route", 3*time.Millisecond) {
		t.Run(name, func(t *testing.T) {
			res := Analyze(spans, Options{})
			for _, f := range res.Findings {
				if f.Severity == SeverityInfo || strings.Contains(f.Title, "GetDriver") || f.Kind == "error_origin" ||
					f.Kind == "slow_query" && strings.Contains(f.Title, "of /customer") {
					continue
				}
				t.Errorf("fixed, yet %s %s: %s", f.Severity, f.Kind, f.Title)
			}
		})
	}
}

// Calls that carry no http/db/rpc attribute are known as calls only by
// their kind; an export without kinds still shows a loop of them as a
// fan-out, because the callee's span under each names another service.
func TestFanOutWithoutSpanKinds(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "web", "render page", model.KindUnspecified, 0, 400)}
	for i := 0; i < 10; i++ {
		st := 5 + float64(i)*38
		spans = append(spans,
			p1Span(byte(10+i), 1, "web", "getPrice", model.KindUnspecified, st, st+36),
			p1Span(byte(40+i), byte(10+i), "pricing", "getPrice", model.KindUnspecified, st+1, st+35))
	}
	if fs := ofKind(Analyze(spans, Options{}).Findings, "fan_out"); len(fs) != 1 || fs[0].Culprit == nil || fs[0].Culprit.Service != "web" {
		t.Fatalf("fan_out of kind-less calls: %+v", fs)
	}
}
