package server

import (
	"context"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/internal/auth"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/tlsutil"
)

// tokenReloadInterval is how often the token file's modification time is
// checked.
const tokenReloadInterval = 2 * time.Second

// security is what stands in front of every listener: TLS and bearer
// tokens, each optional.
type security struct {
	tokens *auth.Tokens                    // nil: no authentication
	wrap   func(net.Listener) net.Listener // nil: plain TCP
}

// newSecurity loads the token file and the TLS files of cfg; reloading
// them runs as a background job of s.
func newSecurity(s *Server, cfg config.Config) (*security, error) {
	sec := &security{}
	if cfg.Auth.TokenFile != "" {
		t, err := auth.Load(cfg.Auth.TokenFile, s.log.With("component", "auth"))
		if err != nil {
			return nil, err
		}
		sec.tokens = t
		s.background = append(s.background, func(ctx context.Context) { t.Watch(ctx, tokenReloadInterval) })
	}
	if cfg.TLS.Enabled() {
		tc, err := tlsutil.Config(tlsutil.Files{Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile, ClientCA: cfg.TLS.ClientCAFile},
			s.log.With("component", "tls"))
		if err != nil {
			return nil, err
		}
		sec.wrap = tlsutil.Listener(tc)
	}
	return sec, nil
}

// ingestConfig makes ingest require tokens with the write scope.
func (sec *security) ingestConfig(c *ingest.Config) {
	c.WrapListener = sec.wrap
	if sec.tokens == nil {
		return
	}
	c.HTTPMiddleware = func(h http.Handler) http.Handler { return sec.tokens.Require(auth.Write, h) }
	c.GRPCOptions = append(c.GRPCOptions,
		grpc.ChainUnaryInterceptor(sec.tokens.UnaryInterceptor(auth.Write)),
		grpc.ChainStreamInterceptor(sec.tokens.StreamInterceptor(auth.Write)))
}

// query makes a query handler (APIs, UI, /metrics) require tokens with the
// read scope; /healthz stays open for load balancers.
func (sec *security) query(h http.Handler) http.Handler {
	if sec.tokens == nil {
		return h
	}
	return sec.tokens.Require(auth.Read, h, "/healthz", auth.LoginPath, auth.LogoutPath)
}

// routes adds the UI's login, logout and session endpoints.
func (sec *security) routes(mux *http.ServeMux) {
	mux.Handle("GET "+auth.SessionPath, auth.SessionHandler())
	if sec.tokens == nil {
		return
	}
	mux.Handle(auth.LoginPath, sec.tokens.LoginHandler())
	mux.Handle(auth.LogoutPath, sec.tokens.LoginHandler())
}
