package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store"
)

// Server is a running all-in-one tracedx.
type Server struct {
	cfg    config.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	store  store.Store
	ingest *ingest.Server
	http   []*httpService
	// listenWrap wraps the HTTP listeners (TLS); nil: plain TCP.
	listenWrap func(net.Listener) net.Listener
	// sink and logSink take ingested spans and logs (a tenant's instance
	// is fed through them by the outer server).
	sink    ingest.Sink
	logSink ingest.LogSink

	// background jobs run from Start until shutdown.
	background []func(ctx context.Context)
	// closers run in reverse order on Close (store last).
	closers []func() error

	bgWG   sync.WaitGroup
	cancel context.CancelFunc
}

// Run starts the server and blocks until ctx ends.
func Run(ctx context.Context, cfg config.Config, logOut io.Writer) error {
	s, err := New(ctx, cfg, NewLogger(logOut, cfg.LogLevel))
	if err != nil {
		return err
	}
	defer s.Close()
	applyMemoryLimit(cfg, s.log)
	if procs := priority.NewProcs(priority.MinProcs, priority.ProcsHold); procs != nil {
		priority.Install(procs)
		defer priority.Install(nil)
		s.background = append(s.background, procs.Run)
		s.log.Info("processors", "cpus", priority.CPUs(), "while_queries_run", priority.MinProcs, "hold", priority.ProcsHold)
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	scheme := "http://"
	if cfg.TLS.Enabled() {
		scheme = "https://"
	}
	s.log.Info("tracedx ready", "ui", scheme+s.Addr("http"), "otlp_grpc", s.Addr("otlp-grpc"),
		"otlp_http", s.Addr("otlp-http"), "zipkin", s.Addr("zipkin"), "tempo", s.Addr("tempo"), "data_dir", cfg.DataDir)
	return s.Wait(ctx)
}

// Addr returns the bound address of a listener: "http", "tempo",
// "otlp-grpc", "otlp-http" or "zipkin" ("" when disabled).
func (s *Server) Addr(name string) string {
	for _, h := range s.http {
		if h.name == name {
			return h.Addr()
		}
	}
	if s.ingest != nil {
		switch name {
		case "otlp-grpc":
			return s.ingest.GRPCAddr()
		case "otlp-http":
			return s.ingest.HTTPAddr()
		case "zipkin":
			return s.ingest.ZipkinAddr()
		}
	}
	return ""
}

// Store returns the span store (tests read through it).
func (s *Server) Store() store.Store { return s.store }

// Start binds every listener and starts the background jobs.
func (s *Server) Start(ctx context.Context) error {
	for _, h := range s.http {
		if err := h.listen(); err != nil {
			return err
		}
	}
	if err := s.ingest.Start(ctx); err != nil {
		return err
	}
	s.startBackground(ctx)
	return nil
}

// startBackground starts the background jobs; they run until Close.
func (s *Server) startBackground(ctx context.Context) {
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for _, job := range s.background {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			job(bgCtx)
		}()
	}
}

// Wait serves the HTTP listeners until ctx ends, then stops ingest first so
// nothing new is acknowledged while the store closes.
func (s *Server) Wait(ctx context.Context) error {
	err := serveAll(ctx, s.log, s.http)
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if e := s.ingest.Shutdown(shut); e != nil && !errors.Is(e, context.Canceled) {
		s.log.Warn("ingest shutdown", "err", e)
	}
	return err
}

// Close stops background jobs and closes everything New opened.
func (s *Server) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.bgWG.Wait()
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			s.log.Warn("close", "err", err)
		}
	}
}

func (s *Server) addHTTP(name, addr string, h http.Handler) {
	if addr == "" {
		return
	}
	s.http = append(s.http, &httpService{name: name, addr: addr, handler: h, wrap: s.listenWrap})
}
