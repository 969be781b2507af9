// Package server wires tracedx's parts into the all-in-one `tracedx serve`:
// ingest → durable store → (trace complete) → analysis → findings, with the
// query APIs, the UI and /metrics on top. It owns lifecycles and nothing
// else; every part lives in its own package.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tracedx/tracedx/internal/version"
)

// NewLogger returns the JSON slog logger of the server.
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// httpService is one HTTP listener with its handler.
type httpService struct {
	name    string
	addr    string
	handler http.Handler
	ln      net.Listener
	srv     *http.Server
	wrap    func(net.Listener) net.Listener // nil: plain TCP
}

func (h *httpService) listen() error {
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", h.name, h.addr, err)
	}
	h.ln = ln
	if h.wrap != nil {
		h.ln = h.wrap(ln)
	}
	h.srv = &http.Server{Handler: h.handler, ReadHeaderTimeout: 10 * time.Second}
	// Unencrypted HTTP/2 (h2c) lets gRPC clients share a port with HTTP/1:
	// Grafana's Tempo data source streams over gRPC to its HTTP URL.
	h.srv.Protocols = new(http.Protocols)
	h.srv.Protocols.SetHTTP1(true)
	h.srv.Protocols.SetUnencryptedHTTP2(true)
	h.srv.Protocols.SetHTTP2(true)
	return nil
}

// Addr returns the bound address (useful with port 0).
func (h *httpService) Addr() string {
	if h.ln == nil {
		return ""
	}
	return h.ln.Addr().String()
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tracedx_build_info", Help: "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version.Version, "revision": version.Revision()},
	}, func() float64 { return 1 }))
	reg.MustRegister(memoryLimitGauge())
	return reg
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	// OpenMetrics carries exemplars (trace ids on latency buckets).
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// serveAll runs the HTTP services until ctx ends, then shuts them down.
func serveAll(ctx context.Context, log *slog.Logger, svcs []*httpService) error {
	errc := make(chan error, len(svcs))
	var wg sync.WaitGroup
	for _, s := range svcs {
		wg.Add(1)
		go func(s *httpService) {
			defer wg.Done()
			log.Info("listening", "service", s.name, "addr", s.Addr())
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", s.name, err)
			}
		}(s)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range svcs {
		_ = s.srv.Shutdown(shutCtx)
	}
	wg.Wait()
	return err
}
