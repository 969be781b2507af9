package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/internal/auth"
	"github.com/tracedx/tracedx/internal/cluster"
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
	// peer is how this node reaches its cluster peers and knows them.
	peer cluster.Security
	// forwarded tells requests forwarded by a peer (nil: no cluster).
	forwarded func(context.Context) bool
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
	if len(cfg.Cluster.Peers) > 0 {
		p, err := peerSecurity(cfg, s.log)
		if err != nil {
			return nil, err
		}
		sec.peer, sec.forwarded = p, p.FromPeer
		if sec.tokens != nil && p.Token != "" {
			sec.tokens.SetPeer(p.Token)
		}
	}
	return sec, nil
}

// peerSecurity is how a cluster node reaches its peers: with the peer
// token of cluster.token_file and, when the listeners speak TLS, over TLS
// checked against cluster.tls_ca_file (else the client CA, else the
// system's) presenting this node's certificate.
func peerSecurity(cfg config.Config, log *slog.Logger) (cluster.Security, error) {
	var p cluster.Security
	if f := cfg.Cluster.TokenFile; f != "" {
		tok, err := readPeerToken(f)
		if err != nil {
			return p, err
		}
		p.Token = tok
	}
	if cfg.TLS.Enabled() {
		ca := cfg.Cluster.TLSCAFile
		if ca == "" {
			ca = cfg.TLS.ClientCAFile
		}
		tc, err := tlsutil.ClientConfig(tlsutil.Files{Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile}, ca, log.With("component", "tls"))
		if err != nil {
			return p, fmt.Errorf("cluster: %w", err)
		}
		p.TLS = tc
	}
	return p, nil
}

// readPeerToken reads the peer token: the file's first line that is
// neither blank nor a '#' comment.
func readPeerToken(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cluster.token_file: %w", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(l) < 16 || strings.ContainsAny(l, " \t") {
			return "", fmt.Errorf("cluster.token_file %s: the peer token must be at least 16 characters without blanks", file)
		}
		return l, nil
	}
	return "", errors.New("cluster.token_file " + file + ": no token in it")
}

// ingestConfig makes ingest require tokens with the write scope.
func (sec *security) ingestConfig(c *ingest.Config) {
	c.WrapListener = sec.wrap
	c.Forwarded = sec.forwarded
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
