package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure the shop.
type Options struct {
	// Endpoint is host:port of the OTLP receiver (4318 for http, 4317 for grpc).
	Endpoint string
	// Protocol is "http" (default) or "grpc".
	Protocol string
	// Rate is healthy requests per second (0: no background traffic).
	Rate float64
	// IncidentEvery runs the next incident of the catalogue on this period
	// (0: only on demand).
	IncidentEvery time.Duration
	// ConsumerLag is the queue lag of the consumer_lag incident.
	ConsumerLag time.Duration
	Logger      *slog.Logger
}

// Shop is the running demo.
type Shop struct {
	opts     Options
	client   *http.Client
	services map[string]*service
	// ordersNext is the orders service after the "deploy" incident: a new
	// service.version that brings an N+1.
	ordersNext *service
	deployed   bool
	// staleAuth counts token checks during auth_expiry_race.
	staleAuth atomic.Uint64
	mu        sync.Mutex
	queue     chan message
	wg        sync.WaitGroup
}

// Incidents lists the incidents the shop can produce, in schedule order.
var Incidents = []string{
	"n_plus_one_query", "sequential_calls", "fan_out", "cache_miss", "timeout_cascade", "retry_storm",
	"error_origin", "swallowed_error", "idle_gap", "consumer_lag", "poison_message", "cache_stampede",
	"auth_expiry_race", "deploy",
}

var serviceNames = []string{"gateway", "auth", "cart", "orders", "inventory", "pricing", "payment", "fraud",
	"notification", "product", "review", "recommendation"}

// Start creates the services and their routes.
func Start(ctx context.Context, opts Options) (*Shop, error) {
	if opts.Endpoint == "" {
		return nil, errors.New("demo: an OTLP endpoint is required")
	}
	if opts.ConsumerLag == 0 {
		opts.ConsumerLag = 45 * time.Second
	}
	s := &Shop{
		opts:     opts,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		services: map[string]*service{},
		queue:    make(chan message, 1024),
	}
	for _, name := range serviceNames {
		svc, err := s.newService(ctx, name, "1.4.0")
		if err != nil {
			s.Close(context.Background())
			return nil, err
		}
		s.services[name] = svc
	}
	next, err := s.newService(ctx, "orders", "1.5.0")
	if err != nil {
		s.Close(context.Background())
		return nil, err
	}
	s.ordersNext = next
	s.routes()
	s.wg.Add(1)
	go s.consume(ctx)
	return s, nil
}

// Close stops the services and flushes their spans.
func (s *Shop) Close(ctx context.Context) {
	// Connections the client dialled but never used look "new" to the
	// servers, and http.Server.Shutdown waits 5 s for those; closing them
	// from this side lets the shop stop at once.
	s.client.CloseIdleConnections()
	all := make([]*service, 0, len(s.services)+1)
	for _, svc := range s.services {
		all = append(all, svc)
	}
	if s.ordersNext != nil {
		all = append(all, s.ordersNext)
	}
	for _, svc := range all {
		svc.shutdown(ctx)
	}
}

// The opening schedule of Run: the first incident after
// firstIncidentAfter, the next quickIncidents-1 every quickIncidentEvery.
const (
	firstIncidentAfter = 2 * time.Second
	quickIncidentEvery = 3 * time.Second
	quickIncidents     = 6
)

// Run produces healthy traffic and scheduled incidents until ctx ends.
func (s *Shop) Run(ctx context.Context) {
	var tick <-chan time.Time
	if s.opts.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / s.opts.Rate))
		defer t.Stop()
		tick = t.C
	}
	// The first incidents come quickly so a new user sees diagnoses within
	// half a minute; then the configured period takes over.
	var incTick <-chan time.Time
	var incTimer *time.Timer
	if s.opts.IncidentEvery > 0 {
		incTimer = time.NewTimer(min(firstIncidentAfter, s.opts.IncidentEvery))
		defer incTimer.Stop()
		incTick = incTimer.C
	}
	next := 0
	for {
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return
		case <-tick:
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.healthyRequest(ctx) }()
		case <-incTick:
			name := Incidents[next%len(Incidents)]
			next++
			if next < quickIncidents {
				incTimer.Reset(min(quickIncidentEvery, s.opts.IncidentEvery))
			} else {
				incTimer.Reset(s.opts.IncidentEvery)
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if err := s.Incident(ctx, name); err != nil {
					s.logger().Warn("incident failed", "incident", name, "err", err)
				}
			}()
		}
	}
}

// healthyRequest sends one request of the normal mix.
func (s *Shop) healthyRequest(ctx context.Context) {
	switch r := rand.IntN(10); {
	case r < 4:
		s.get(ctx, "", fmt.Sprintf("/api/products/%d", 100+rand.IntN(400)))
	case r < 6:
		s.get(ctx, "", "/api/orders")
	case r < 8:
		s.get(ctx, "", "/api/dashboard")
	default:
		s.post(ctx, "", "/api/checkout")
	}
}

// Incident produces one incident by name (see Incidents).
func (s *Shop) Incident(ctx context.Context, name string) error {
	s.logger().Info("demo incident", "incident", name)
	switch name {
	case "n_plus_one_query", "sequential_calls", "fan_out", "cache_miss", "error_origin", "swallowed_error":
		path := map[string]string{
			"n_plus_one_query": "/api/orders",
			"sequential_calls": "/api/dashboard",
			"fan_out":          "/api/products/77",
			"cache_miss":       fmt.Sprintf("/api/products/%d", 500+rand.IntN(100)),
			"error_origin":     "/api/products/31",
			"swallowed_error":  "/api/products/12",
		}[name]
		s.get(ctx, name, path)
	case "timeout_cascade", "retry_storm", "idle_gap", "consumer_lag", "poison_message":
		s.post(ctx, name, "/api/checkout")
	case "cache_stampede":
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); s.get(ctx, name, "/api/products/42") }()
		}
		wg.Wait()
	case "auth_expiry_race":
		for i := 0; i < 8; i++ {
			s.post(ctx, name, "/api/checkout")
			sleep(ctx, 150*time.Millisecond)
		}
	case "deploy":
		s.mu.Lock()
		s.deployed = true
		s.mu.Unlock()
		for i := 0; i < 5; i++ {
			s.get(ctx, name, "/api/orders")
		}
	default:
		return fmt.Errorf("unknown incident %q (known: %s)", name, strings.Join(Incidents, ", "))
	}
	return nil
}

func (s *Shop) get(ctx context.Context, incident, path string) {
	s.send(ctx, http.MethodGet, incident, path)
}
func (s *Shop) post(ctx context.Context, incident, path string) {
	s.send(ctx, http.MethodPost, incident, path)
}

// send is the shop's client (a browser): it has no tracing, so each request
// starts a new trace at the gateway.
func (s *Shop) send(ctx context.Context, method, incident, path string) {
	req, err := http.NewRequestWithContext(ctx, method, s.services["gateway"].url()+path, nil)
	if err != nil {
		return
	}
	if incident != "" {
		req.Header.Set(incidentHeader, incident)
	}
	resp, err := s.client.Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
}

// ControlHandler serves POST /incidents/{name} (run an incident now) and
// GET /incidents (list them).
func (s *Shop) ControlHandler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /incidents", func(w http.ResponseWriter, _ *http.Request) {
		names := slices.Clone(Incidents)
		sort.Strings(names)
		fmt.Fprintln(w, strings.Join(names, "\n"))
	})
	mux.HandleFunc("POST /incidents/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !slices.Contains(Incidents, name) {
			http.Error(w, fmt.Sprintf("unknown incident %q; GET /incidents lists them", name), http.StatusNotFound)
			return
		}
		go func() { _ = s.Incident(ctx, name) }()
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "incident %s started\n", name)
	})
	return mux
}
