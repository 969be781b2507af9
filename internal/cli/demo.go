package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/demo"
	"github.com/tracedx/tracedx/internal/server"
)

func init() { extraCommands["demo"] = demoCmd }

// demoCmd runs `tracedx demo`: a server (unless --endpoint names one) and a
// simulated shop that sends it real OTLP with healthy traffic and incidents.
func demoCmd(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	d, code, ok := parseDemoArgs(args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runDemo(ctx, d, stdout, stderr)
}

// parseDemoArgs reads demo's command line. ok is false when the command is
// done (help printed: code 0; bad flags: code 2, explained on stderr).
func parseDemoArgs(args []string, stdout, stderr io.Writer) (d demoRun, code int, ok bool) {
	fs := flag.NewFlagSet("tracedx demo", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.StringVar(&d.endpoint, "endpoint", "", "OTLP/HTTP endpoint (host:port) of a running tracedx; empty starts one in this process")
	fs.StringVar(&d.dataDir, "data-dir", filepath.Join(os.TempDir(), "tracedx-demo"), "data directory of the in-process server")
	def := config.Default().Listen
	fs.StringVar(&d.listen.HTTP, "http-addr", def.HTTP, "UI/API address of the in-process server")
	fs.StringVar(&d.listen.OTLPGRPC, "otlp-grpc-addr", def.OTLPGRPC, "OTLP/gRPC address of the in-process server (empty disables)")
	fs.StringVar(&d.listen.OTLPHTTP, "otlp-http-addr", def.OTLPHTTP, "OTLP/HTTP address of the in-process server; the shop sends to it")
	fs.StringVar(&d.listen.Zipkin, "zipkin-addr", def.Zipkin, "Zipkin address of the in-process server (empty disables)")
	fs.StringVar(&d.listen.Tempo, "tempo-addr", def.Tempo, "Tempo API address of the in-process server (empty disables)")
	fs.Float64Var(&d.rate, "rate", 4, "healthy requests per second")
	fs.DurationVar(&d.every, "incident-every", 15*time.Second, "play the next incident of the catalogue this often (0: only on demand)")
	incident := fs.String("incident", "", "play these incidents (comma-separated) right away; 'all' plays every one: "+strings.Join(demo.Incidents, ", "))
	fs.DurationVar(&d.lag, "consumer-lag", 45*time.Second, "queue lag of the consumer_lag incident")
	fs.StringVar(&d.control, "control-addr", "127.0.0.1:16680", "address of the demo's control API: POST /incidents/{name} (empty disables)")
	fs.DurationVar(&d.duration, "duration", 0, "stop after this long (0: until interrupted)")
	fail := func(format string, a ...any) (demoRun, int, bool) {
		fmt.Fprintf(stderr, "tracedx demo: "+format+"\n", a...)
		return d, 2, false
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, "Usage: tracedx demo [flags]\n\nRuns a simulated shop instrumented with the OpenTelemetry SDK against tracedx.\n\nFlags:\n", help.String())
			return d, 0, false
		}
		return fail("%v\n%s", err, help.String())
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q (demo takes only flags)", fs.Arg(0))
	}
	if d.endpoint == "" && d.listen.OTLPHTTP == "" {
		return fail("--otlp-http-addr is empty, but the shop sends OTLP/HTTP to the in-process server; give an address (port 0 picks one) or --endpoint")
	}
	if *incident == "all" {
		d.incidents = demo.Incidents
	} else if *incident != "" {
		for _, n := range strings.Split(*incident, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(demo.Incidents, n) {
				return fail("unknown incident %q; known: %s", n, strings.Join(demo.Incidents, ", "))
			}
			d.incidents = append(d.incidents, n)
		}
	}
	return d, 0, true
}

// demoRun is what `tracedx demo` was asked to do.
type demoRun struct {
	endpoint, dataDir, control string
	listen                     config.Listen
	rate                       float64
	every, lag, duration       time.Duration
	incidents                  []string
}

// runDemo runs the demo until ctx ends or the duration passes.
func runDemo(ctx context.Context, d demoRun, stdout, stderr io.Writer) int {
	if d.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.duration)
		defer cancel()
	}
	logger := server.NewLogger(stderr, "info")

	// The in-process server outlives ctx until the shop has flushed its
	// last spans, so stopping the demo loses none and logs no export errors.
	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	uiAddr := ""
	serverDone := make(chan error, 1)
	inProcess := d.endpoint == ""
	if inProcess {
		cfg := config.Default()
		cfg.DataDir = d.dataDir
		cfg.Listen = d.listen
		// Demo traces are short; analyse them soon after they end.
		cfg.Storage.TraceIdleTimeout = 3 * time.Second
		srv, err := server.New(srvCtx, cfg, logger)
		if err != nil {
			fmt.Fprintf(stderr, "tracedx demo: %v\n", err)
			return 1
		}
		defer srv.Close()
		if err := srv.Start(srvCtx); err != nil {
			fmt.Fprintf(stderr, "tracedx demo: %v\n", err)
			return 1
		}
		go func() { serverDone <- srv.Wait(srvCtx) }()
		d.endpoint = srv.Addr("otlp-http")
		uiAddr = srv.Addr("http")
	}

	shop, err := demo.Start(ctx, demo.Options{Endpoint: d.endpoint, Rate: d.rate, IncidentEvery: d.every, ConsumerLag: d.lag, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "tracedx demo: %v\n", err)
		return 1
	}
	closeShop := sync.OnceFunc(func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shop.Close(flush)
	})
	defer closeShop()
	controlAddr := ""
	if d.control != "" {
		ln, err := net.Listen("tcp", d.control)
		if err != nil {
			fmt.Fprintf(stderr, "tracedx demo: control API: %v\n", err)
			return 1
		}
		controlAddr = ln.Addr().String()
		csrv := &http.Server{Handler: shop.ControlHandler(ctx), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = csrv.Serve(ln) }()
		defer csrv.Close()
	}
	if uiAddr != "" {
		fmt.Fprintf(stdout, "tracedx demo: open http://%s — the first diagnoses appear within half a minute\n", uiAddr)
	}
	fmt.Fprintf(stdout, "tracedx demo: sending OTLP to %s\n", d.endpoint)
	if controlAddr != "" {
		fmt.Fprintf(stdout, "tracedx demo: play an incident with: curl -X POST http://%s/incidents/n_plus_one_query\n", controlAddr)
	}
	for _, n := range d.incidents {
		if err := shop.Incident(ctx, n); err != nil {
			fmt.Fprintf(stderr, "tracedx demo: %v\n", err)
		}
	}
	shop.Run(ctx)
	closeShop()
	stopServer()
	if inProcess {
		if err := <-serverDone; err != nil {
			fmt.Fprintf(stderr, "tracedx demo: %v\n", err)
			return 1
		}
	}
	return 0
}
