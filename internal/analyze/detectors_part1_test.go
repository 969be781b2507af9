package analyze

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/otlpconv"
)

// part1Kinds are the detectors whose fixtures this file checks.
var part1Kinds = []string{"slow_query", "n_plus_one_query", "fan_out", "sequential_calls", "slow_dependency",
	"timeout_cascade", "timeout_mismatch", "retry_storm", "idle_gap"}

func p1LoadFixture(t testing.TB, path string) *Trace {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(b)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return NewTrace(otlpconv.FromTraces(td))
}

func p1RunAll(tr *Trace, env *Env) []Finding {
	var out []Finding
	for _, d := range DefaultDetectors() {
		out = append(out, d.Detect(tr, env)...)
	}
	return out
}

func p1OfKind(fs []Finding, kind string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

func p1Near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// p1Checks assert the key numbers of each positive fixture's finding(s).
var p1Checks = map[string]func(t *testing.T, fs []Finding){
	"slow_query/positive-sales-report-postgres": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SlowQueryEvidence)
		if len(fs) != 1 || ev.DBSystem != "postgresql" || ev.SharePct < 80 || ev.Rule != "share" ||
			!strings.Contains(ev.Shape, "o.created_at >= ?") || !p1Near(ev.DurationMS, 1208.4, 0.2) {
			t.Errorf("evidence %+v (findings %d)", ev, len(fs))
		}
		if fs[0].ImpactMS < 1100 || fs[0].Severity != SeverityCritical {
			t.Errorf("impact %.1f severity %s", fs[0].ImpactMS, fs[0].Severity)
		}
	},
	"slow_query/positive-reserve-stock-mysql": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SlowQueryEvidence)
		if len(fs) != 1 || ev.DBSystem != "mysql" || ev.SharePct < 60 || ev.SharePct > 70 ||
			ev.Shape != "UPDATE inventory_reservations SET qty = qty + ?, updated_at = NOW() WHERE sku = ? AND warehouse_id = ?" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"n_plus_one_query/positive-orders-then-50-customers": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(NPlusOneEvidence)
		if len(fs) != 1 || ev.Count != 50 || ev.DistinctStatements != 50 || ev.ListQuery == nil ||
			!strings.Contains(ev.ListQuery.Shape, "FROM orders o") || ev.Shape != "SELECT c.id, c.name, c.email, c.tier FROM customers c WHERE c.id = ?" {
			t.Fatalf("evidence %+v", ev)
		}
		if ev.TotalMS < 200 || ev.TotalMS > 290 || !p1Near(ev.CriticalMS, ev.TotalMS, 1) {
			t.Errorf("total %.1f critical %.1f", ev.TotalMS, ev.CriticalMS)
		}
		// Batched, the loop costs about one query: impact is the rest.
		if fs[0].ImpactMS < ev.CriticalMS-10 || fs[0].ImpactMS >= ev.CriticalMS {
			t.Errorf("impact %.1f vs critical %.1f", fs[0].ImpactMS, ev.CriticalMS)
		}
		if !strings.Contains(fs[0].Title, "50 postgresql queries") || !strings.Contains(fs[0].Title, "GET /api/orders") {
			t.Errorf("title %q", fs[0].Title)
		}
	},
	// Sub-millisecond queries on a whole-millisecond clock: the sum is a
	// lower bound, the loop's span the upper one, and the finding says so.
	"n_plus_one_query/positive-whole-ms-mysql2-loop": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(NPlusOneEvidence)
		if len(fs) != 1 || ev.Count != 150 || !p1Near(ev.TotalMS, 30, 0.1) || !p1Near(ev.TotalMaxMS, 104, 0.1) ||
			!strings.Contains(fs[0].Title, "30-104 ms in total (whole-millisecond timestamps)") {
			t.Errorf("evidence %+v title %q", ev, fs[0].Title)
		}
	},
	"n_plus_one_query/positive-redis-product-per-item": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(NPlusOneEvidence)
		if len(fs) != 1 || ev.Count != 16 || ev.DBSystem != "redis" || ev.Shape != "HGETALL product:?" || ev.ListQuery == nil ||
			!strings.HasPrefix(ev.ListQuery.Shape, "SMEMBERS") {
			t.Errorf("evidence %+v", ev)
		}
	},
	// A live Express app (ioredis, mysql2) reads 30 products from Redis one
	// GET at a time, then loads each missing one with its own SELECT. The
	// GET before the SELECTs is the last item of the first loop, not a
	// list to JOIN with.
	"n_plus_one_query/positive-redis-miss-then-mysql-per-item": func(t *testing.T, fs []Finding) {
		if len(fs) != 2 {
			t.Fatalf("%d findings, want the Redis loop and the SQL loop", len(fs))
		}
		for _, f := range fs {
			ev := f.Evidence.(NPlusOneEvidence)
			if ev.Count != 30 || ev.ListQuery != nil || strings.Contains(f.Fix, "JOIN with") || strings.Contains(f.Title, "list query") {
				t.Errorf("%s: evidence %+v title %q fix %q", ev.DBSystem, ev, f.Title, f.Fix)
			}
		}
	},
	"n_plus_one_query/positive-spring-data-repository-wrappers": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(NPlusOneEvidence)
		if len(fs) != 1 || ev.Count != 24 || ev.DistinctStatements != 1 || ev.ListQuery == nil ||
			!strings.Contains(ev.ListQuery.Shape, "from invoices") || ev.Parent.Operation != "GET /api/invoices" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"fan_out/positive-price-per-sku-sequential": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(FanOutEvidence)
		if len(fs) != 1 || ev.Count != 8 || ev.Mode != "sequential" || ev.Target != "pricing-service" ||
			ev.Operation != "GET /v2/prices/{sku}" || ev.BatchSavingMS < 200 {
			t.Errorf("evidence %+v", ev)
		}
	},
	"fan_out/positive-catalog-grpc-pool-of-4": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(FanOutEvidence)
		if len(fs) != 1 || ev.Count != 20 || ev.MaxConcurrency != 4 || ev.Mode != "partly_concurrent" ||
			ev.Operation != "catalog.v1.CatalogService/GetProduct" {
			t.Errorf("evidence %+v", ev)
		}
		// Concurrency already hides most of the cost: the saving is far
		// below the plain sum.
		if ev.BatchSavingMS >= ev.TotalMS/3 {
			t.Errorf("saving %.1f vs total %.1f", ev.BatchSavingMS, ev.TotalMS)
		}
	},
	// Forty calls all slowed by the burst: the saving is bounded by what
	// one call costs alone, and the finding says the callee's capacity,
	// not the call count, is the limit.
	"fan_out/positive-burst-queues-at-pricing": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(FanOutEvidence)
		if len(fs) != 1 || ev.Count != 40 || ev.Mode != "concurrent" || !ev.CapacityBound || ev.FastestCallMS > 9 || ev.TypicalCallMS < 30 {
			t.Fatalf("evidence %+v", ev)
		}
		if want := ev.CriticalMS - ev.FastestCallMS; !p1Near(ev.BatchSavingMS, want, 1) || !p1Near(fs[0].ImpactMS, want, 1) {
			t.Errorf("saving %.1f, impact %.1f; want about the critical time less one call alone, %.1f", ev.BatchSavingMS, fs[0].ImpactMS, want)
		}
		if !strings.Contains(fs[0].Title, "capacity") || !strings.Contains(fs[0].Fix, "less work") {
			t.Errorf("title %q, fix %q", fs[0].Title, fs[0].Fix)
		}
	},
	"sequential_calls/positive-dashboard-four-calls": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SequentialCallsEvidence)
		if len(fs) != 1 || len(ev.Calls) != 4 || !p1Near(ev.SumMS, 1800, 0.5) || !p1Near(ev.MaxMS, 590, 0.5) ||
			!p1Near(ev.SavingMS, 1210, 0.5) || !p1Near(fs[0].ImpactMS, 1210, 1) {
			t.Errorf("evidence %+v impact %.1f", ev, fs[0].ImpactMS)
		}
	},
	"sequential_calls/positive-quote-grpc-chain": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SequentialCallsEvidence)
		if len(fs) != 1 || len(ev.Calls) != 3 || !p1Near(ev.SumMS, 360, 0.5) || ev.Calls[1].Target != "shipping-service" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"slow_dependency/positive-geocoding-api": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SlowDependencyEvidence)
		if len(fs) != 1 || ev.Peer != "maps.example-geo.com" || ev.SharePct < 85 || ev.LooksLikeTimeout ||
			ev.Operation != "GET /maps/api/geocode/json" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"slow_dependency/positive-acquirer-timeout": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SlowDependencyEvidence)
		if len(fs) != 1 || ev.Peer != "acquirer-gateway" || !ev.LooksLikeTimeout || ev.TimeoutMS != 5000 || !ev.Failed {
			t.Errorf("evidence %+v", ev)
		}
	},
	"timeout_cascade/positive-checkout-bank-5s": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(TimeoutCascadeEvidence)
		if len(fs) != 1 || len(ev.Layers) != 6 || ev.Origin.Service != "payment-service" || ev.Origin.Operation != "POST" ||
			ev.TimeoutMS != 5000 || fs[0].Severity != SeverityCritical {
			t.Errorf("evidence %+v severity %s", ev, fs[0].Severity)
		}
	},
	"timeout_cascade/positive-worker-shipping-10s": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(TimeoutCascadeEvidence)
		if len(fs) != 1 || len(ev.Layers) != 2 || ev.TimeoutMS != 10000 || !ev.RoundTimeout {
			t.Errorf("evidence %+v", ev)
		}
		// shipping-service spent its time calling carrier-api.
		if !strings.HasPrefix(fs[0].Fix, "Start at shipping-service → carrier-api") {
			t.Errorf("fix %q", fs[0].Fix)
		}
	},
	// The lock wait timeout is the origin, below the Express handler span
	// that did not fail; its fix is the lock holder, not a circuit breaker.
	"timeout_cascade/positive-express-mysql-lock-wait-timeout": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(TimeoutCascadeEvidence)
		if len(fs) != 1 || len(ev.Layers) != 3 || ev.Origin.Service != "orders" ||
			ev.Origin.Operation != "SELECT" || !strings.Contains(ev.Origin.Message, "Lock wait timeout") || ev.TimeoutMS != 1000 ||
			ev.Occurrences != 2 || ev.Budget != nil || !strings.Contains(fs[0].Fix, "lock_contention") ||
			strings.Contains(fs[0].Fix, "circuit breaker") {
			t.Errorf("evidence %+v fix %q", ev, fs[0].Fix)
		}
	},
	// One cascade from the gateway down to inventory's aborted fetch; the
	// gateway's 504 is what it received, not a deadline of its own. The
	// fix starts where orders spent the time inventory gave up waiting
	// for: its query, not a circuit breaker on orders.
	"timeout_cascade/positive-express-fetch-abort-signal": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(TimeoutCascadeEvidence)
		if len(fs) != 1 || len(ev.Layers) != 4 || ev.Origin.Service != "inventory" || ev.Origin.Operation != "GET" ||
			!p1Near(ev.TimeoutMS, 200, 0.1) || ev.Budget != nil || fs[0].Severity != SeverityCritical {
			t.Errorf("evidence %+v budget %+v severity %s", ev, ev.Budget, fs[0].Severity)
		}
		if fix := fs[0].Fix; !strings.HasPrefix(fix, "Start at orders → mysql SELECT SLEEP") || strings.Contains(fix, "circuit breaker") {
			t.Errorf("fix %q", fix)
		}
	},
	"timeout_mismatch/positive-search-kept-running": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(TimeoutMismatchEvidence)
		if len(fs) != 1 || !p1Near(ev.InvertedByMS, 1404, 1) || ev.Child.Service != "search-service" || ev.InnerTimeout != nil {
			t.Errorf("evidence %+v", ev)
		}
	},
	"timeout_mismatch/positive-inner-timeout-longer": func(t *testing.T, fs []Finding) {
		var inner *TimeoutMismatchEvidence
		for _, f := range fs {
			if ev := f.Evidence.(TimeoutMismatchEvidence); ev.InnerTimeout != nil {
				inner = &ev
			}
		}
		if inner == nil || !p1Near(inner.InnerWaitedMS, 5001, 1) || !p1Near(inner.ParentWaitedMS, 1002, 1) ||
			inner.Parent.Service != "api-gateway" {
			t.Errorf("inner timeout evidence %+v", inner)
		}
	},
	"retry_storm/positive-inventory-pool-exhaustion": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(RetryStormEvidence)
		if len(fs) != 1 || len(ev.Attempts) != 3 || ev.FailedCount != 3 || ev.Amplification != 3 ||
			!strings.Contains(ev.FinalOutcome, "HikariPool-1") || ev.Target != "inventory-service" {
			t.Errorf("evidence %+v", ev)
		}
		// All attempts failed: retries 2 and 3 plus back-off were wasted.
		if !p1Near(fs[0].ImpactMS, 2*1007+300, 2) {
			t.Errorf("impact %.1f", fs[0].ImpactMS)
		}
	},
	// Restarting a deadlock victim's transaction is what MySQL asks for:
	// the advice is the lock order, not fewer retries.
	"retry_storm/positive-mysql-deadlock-retry": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(RetryStormEvidence)
		if len(fs) != 1 || len(ev.Attempts) != 2 || ev.FailedCount != 1 || ev.Caller.Service != "inventory" ||
			!strings.Contains(fs[0].Fix, "lock rows in one order") || strings.Contains(fs[0].Fix, "idempotent") {
			t.Errorf("evidence %+v fix %q", ev, fs[0].Fix)
		}
	},
	"retry_storm/positive-nested-3x3": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(RetryStormEvidence)
		if len(fs) != 1 || ev.Amplification != 9 || len(ev.Layers) != 2 || ev.Layers[1].Calls != 9 ||
			ev.Layers[1].Service != "payments-service" || fs[0].Severity != SeverityCritical {
			t.Errorf("findings %d evidence %+v", len(fs), ev)
		}
	},
	"idle_gap/positive-pool-wait-between-queries": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || !p1Near(ev.GapMS, 1800, 0.5) || ev.LikelyCause != "pool_wait" || ev.Position != "between_children" ||
			ev.Before == nil || ev.After == nil || !p1Near(fs[0].ImpactMS, 1800, 0.5) {
			t.Errorf("evidence %+v impact %.1f", ev, fs[0].ImpactMS)
		}
	},
	// A single-flight waiter: the gap follows its read of the key, and
	// nothing in the trace fetched or wrote it. The read took 0 ms, so
	// the title names it rather than "the last child" of a gap that fills
	// 100 % of the span.
	"idle_gap/positive-single-flight-waiter": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || ev.Position != "after_last_child" || ev.LikelyCause != "shared_fetch_wait" ||
			!strings.Contains(fs[0].Title, "catalog:all, which another request was fetching") || ev.Before == nil ||
			!strings.Contains(fs[0].Title, "after shop → redis-cache GET catalog:all;") {
			t.Errorf("evidence %+v title %q", ev, fs[0].Title)
		}
	},
	"idle_gap/positive-work-inside-transaction": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || !p1Near(ev.GapMS, 100.5, 0.5) || ev.Position != "between_children" ||
			ev.LikelyCause != "uninstrumented_work" || !strings.Contains(ev.CauseText, "open transaction") {
			t.Errorf("evidence %+v", ev)
		}
	},
	// No checkout span, but the queries run around a remote call: the gap
	// before the first one is read as a pool wait, naming that call.
	"idle_gap/positive-mysql2-untraced-checkout": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || !p1Near(ev.GapMS, 310, 0.5) || ev.Position != "before_first_child" || ev.LikelyCause != "pool_wait" ||
			!strings.Contains(ev.CauseText, "pricing GET /slow, 307 ms") {
			t.Errorf("evidence %+v", ev)
		}
	},
	// A live Express app on ioredis and a mysql2 pool of 8, 15 requests
	// missing at once: this request's SELECT waited for a connection and
	// then ran under the context of the request that released it, so its
	// trace shows only the GET, 499 ms of nothing and the SET.
	"idle_gap/positive-mysql2-fetch-span-elsewhere": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || !p1Near(ev.GapMS, 499, 1) || ev.Position != "between_children" || ev.LikelyCause != "untraced_fetch" ||
			!strings.Contains(ev.CauseText, "catalog:page:1") || !strings.Contains(fs[0].Fix, "mysql2") {
			t.Errorf("evidence %+v", ev)
		}
	},
	"idle_gap/positive-wait-before-first-call": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(IdleGapEvidence)
		if len(fs) != 1 || !p1Near(ev.GapMS, 522, 0.5) || ev.Position != "before_first_child" || ev.LikelyCause != "uninstrumented_work" {
			t.Errorf("evidence %+v", ev)
		}
	},
}

func TestDetectorsPart1Fixtures(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "traces")
	seen := 0
	for _, kind := range part1Kinds {
		files, _ := filepath.Glob(filepath.Join(root, kind, "*.json"))
		var pos, healthy int
		for _, f := range files {
			base := strings.TrimSuffix(filepath.Base(f), ".json")
			name := kind + "/" + base
			positive := strings.HasPrefix(base, "positive-")
			if positive {
				pos++
			} else if strings.HasPrefix(base, "healthy-") {
				healthy++
			} else {
				continue
			}
			seen++
			t.Run(name, func(t *testing.T) {
				tr := p1LoadFixture(t, f)
				all := p1RunAll(tr, &Env{History: NoHistory{}})
				got := p1OfKind(all, kind)
				if positive && len(got) == 0 {
					t.Fatalf("no %s finding; got kinds %v", kind, p1Kinds(all))
				}
				if !positive && len(got) > 0 {
					t.Fatalf("healthy look-alike produced %s: %q", kind, got[0].Title)
				}
				for _, f := range got {
					p1CheckCommon(t, tr, f)
				}
				if positive {
					check, ok := p1Checks[name]
					if !ok {
						t.Fatalf("no evidence check for %s", name)
					}
					check(t, got)
				}
			})
		}
		if pos < 2 || healthy < 2 {
			t.Errorf("%s: %d positive and %d healthy fixtures, want at least 2 of each", kind, pos, healthy)
		}
	}
	if seen == 0 {
		t.Fatal("no fixtures found")
	}
}

// p1CheckCommon checks what every finding must carry.
func p1CheckCommon(t *testing.T, tr *Trace, f Finding) {
	t.Helper()
	if f.Severity.Rank() == 0 || f.Title == "" || f.Fix == "" || len(f.SpanIDs) == 0 || f.Evidence == nil {
		t.Errorf("incomplete finding %+v", f)
	}
	if f.ImpactMS < 0 || f.ImpactMS > NS(tr.CriticalPath().Total())+0.1 {
		t.Errorf("impact %.1f outside [0, trace %.1f]", f.ImpactMS, NS(tr.CriticalPath().Total()))
	}
	for _, id := range f.SpanIDs {
		found := false
		for i := range tr.Spans {
			if tr.Spans[i].SpanID.String() == id {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("span id %s not in trace", id)
		}
	}
}

func p1Kinds(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	sort.Strings(out)
	return out
}
