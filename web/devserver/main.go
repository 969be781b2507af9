// Command devserver is a development tool for the web UI: it serves the UI
// from disk (edits show on reload) next to /api/v1 backed by an in-memory
// store loaded with the OTLP JSON fixtures, or proxies /api/ to a running
// tracedx. Not part of the product; `tracedx serve` embeds the UI.
//
//	go run ./web/devserver -addr 127.0.0.1:8099 -fixtures testdata/traces -big 5000
//	go run ./web/devserver -proxy http://127.0.0.1:16686
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/tempo"
	v1 "github.com/tracedx/tracedx/internal/api/v1"
	"github.com/tracedx/tracedx/internal/auth"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/servicegraph"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
	"github.com/tracedx/tracedx/internal/web"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8099", "listen address")
	dir := flag.String("ui", "web/ui", "UI directory served from disk (empty: the embedded copy)")
	fixtures := flag.String("fixtures", "testdata/traces", "directory of OTLP JSON trace files, loaded recursively")
	big := flag.Int("big", 0, "also generate one synthetic trace with this many spans")
	proxy := flag.String("proxy", "", "proxy /api/ to this tracedx base URL instead of the in-memory store")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	mux := http.NewServeMux()
	var sink func([]model.Span) // analytics fed by ingest
	if *proxy != "" {
		u, err := url.Parse(*proxy)
		if err != nil {
			log.Error("bad -proxy", "err", err)
			os.Exit(2)
		}
		mux.Handle("/api/", httputil.NewSingleHostReverseProxy(u))
		// The TraceQL box calls /tempo/api/search; a server that mounts
		// the Tempo API there answers it, others 404 and the UI says so.
		mux.Handle(web.TempoPrefix+"/", httputil.NewSingleHostReverseProxy(u))
	} else {
		st := memstore.New()
		n, err := loadFixtures(st, *fixtures)
		if err != nil {
			log.Error("loading fixtures", "err", err)
			os.Exit(1)
		}
		if *big > 0 {
			spans := synthetic(*big)
			if err := st.Write(context.Background(), spans); err != nil {
				log.Error("writing synthetic trace", "err", err)
				os.Exit(1)
			}
			log.Info("synthetic trace", "trace_id", spans[0].TraceID.String(), "spans", len(spans))
		}
		log.Info("fixtures loaded", "traces", n)
		// OTLP/HTTP JSON ingest, so web/e2e can run against this server
		// (E2E_BACKEND=devserver) while tracedx serve is unavailable.
		mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
			if err != nil {
				http.Error(w, "bad OTLP JSON: "+err.Error(), http.StatusBadRequest)
				return
			}
			spans := otlpconv.FromTraces(td)
			if err := st.Write(r.Context(), spans); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if sink != nil {
				sink(spans)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("{}"))
		})
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		// RED metrics and the service map from the real packages (memory
		// only), so the overview shows their actual JSON.
		metrics, err := red.New(red.Options{}, log)
		if err != nil {
			log.Error("red", "err", err)
			os.Exit(1)
		}
		graph, err := servicegraph.New(servicegraph.Options{NodeStats: metrics}, log)
		if err != nil {
			log.Error("servicegraph", "err", err)
			os.Exit(1)
		}
		ctx := context.Background()
		go metrics.Start(ctx)
		go graph.Start(ctx)
		observe := func(spans []model.Span) { metrics.Observe(spans); graph.Observe(spans) }
		_ = st.ScanTraces(ctx, store.Query{}, func(spans []model.Span) error { observe(spans); return nil })
		sink = observe
		mux.Handle("/api/v1/", v1.NewHandler(v1.Deps{Store: st, Analyzer: analyzeAll, Logger: log,
			Routes: []func(*http.ServeMux){metrics.RegisterRoutes, graph.RegisterRoutes}}))
		// The Tempo-compatible API where the UI's TraceQL box expects it
		// (the wiring tracedx serve needs on its UI port as well). No
		// findings lookup here: finding.kind queries get a clear 400.
		mux.Handle(web.TempoPrefix+"/", http.StripPrefix(web.TempoPrefix, tempo.NewHandler(st, tempo.Options{Logger: log})))
		// No tokens here: the session says so and the UI offers no sign-out.
		mux.Handle("GET "+auth.SessionPath, auth.SessionHandler())
	}
	if *dir != "" {
		mux.Handle("/", web.DevHandler(os.DirFS(*dir)))
	} else {
		mux.Handle("/", web.Handler())
	}
	log.Info("devserver", "url", "http://"+*addr)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// analyzeAll is a stand-in for the server's analysis: critical path plus
// every registered detector, without history.
func analyzeAll(spans []model.Span) analyze.Result {
	res := v1.CriticalPathOnly(spans)
	t := analyze.NewTrace(spans)
	env := &analyze.Env{History: analyze.NoHistory{}}
	for _, d := range analyze.DefaultDetectors() {
		for _, f := range d.Detect(t, env) {
			if f.TraceID == "" {
				f.TraceID = res.TraceID
			}
			res.Findings = append(res.Findings, f)
		}
	}
	if len(res.CriticalPath) > 0 {
		res.Why = append(res.Why, fmt.Sprintf("%s took %.0f ms (dev server: no why chain)", res.RootOperation, res.DurationMS))
	}
	return res
}

// loadFixtures writes every trace file, shifted so that the files end at
// staggered moments in the last half hour (search defaults to the last hour).
func loadFixtures(st *memstore.Store, root string) (int, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("walking %s: %w", root, err)
	}
	now := uint64(time.Now().UnixNano())
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", f, err)
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
		if err != nil {
			return 0, fmt.Errorf("parsing %s: %w", f, err)
		}
		spans := otlpconv.FromTraces(td)
		var maxEnd uint64
		for _, s := range spans {
			maxEnd = max(maxEnd, s.EndUnixNano)
		}
		target := now - uint64(i)*uint64(20*time.Second)
		for j := range spans {
			spans[j].StartUnixNano = spans[j].StartUnixNano - maxEnd + target
			spans[j].EndUnixNano = spans[j].EndUnixNano - maxEnd + target
		}
		if err := st.Write(context.Background(), spans); err != nil {
			return 0, fmt.Errorf("writing %s: %w", f, err)
		}
	}
	return len(files), nil
}

// synthetic builds a wide and deep trace of n spans ending now.
func synthetic(n int) []model.Span {
	var tid model.TraceID
	copy(tid[:], []byte("bigtrace-5000-sp"))
	end := uint64(time.Now().UnixNano())
	start := end - uint64(3*time.Second)
	spans := make([]model.Span, 0, n)
	services := []string{"gateway", "orders", "inventory", "pricing", "postgres"}
	mk := func(i int, parent model.SpanID, depth int, s, e uint64) model.SpanID {
		var id model.SpanID
		id[0], id[1], id[2], id[7] = byte(i>>16), byte(i>>8), byte(i), 1
		sp := model.Span{TraceID: tid, SpanID: id, ParentSpanID: parent, Name: fmt.Sprintf("op-%d", i%37), Service: services[depth%len(services)],
			Kind: model.KindInternal, StartUnixNano: s, EndUnixNano: e}
		if i%97 == 5 {
			sp.StatusCode, sp.StatusMessage = model.StatusError, "boom"
		}
		spans = append(spans, sp)
		return id
	}
	rootID := mk(0, model.SpanID{}, 0, start, end)
	spans[0].Kind = model.KindServer
	// 100 children of the root, each with a chain of children.
	per := (n - 1) / 100
	i := 1
	for c := 0; c < 100 && i < n; c++ {
		cs := start + uint64(c)*(end-start)/100
		ce := cs + (end-start)/100
		parent := mk(i, rootID, 1, cs, ce)
		i++
		for k := 1; k < per && i < n; k++ {
			ks := cs + uint64(k)*(ce-cs)/uint64(per+1)
			mk(i, parent, 2+k%3, ks, ks+(ce-cs)/uint64(per+2))
			i++
		}
	}
	for i < n {
		mk(i, rootID, 1, start, start+1000)
		i++
	}
	return spans
}
