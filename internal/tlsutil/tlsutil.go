// Package tlsutil builds the TLS configuration of tracedx's listeners: a
// certificate and key re-read when their files change (so a renewed
// certificate needs no restart) and optional client verification (mTLS).
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of a listener's TLS.
type Files struct {
	Cert, Key string
	// ClientCA, when set, makes every client present a certificate signed
	// by one of its CAs.
	ClientCA string
}

// certReloader serves the certificate, re-reading the files when either's
// modification time changes. A pair that fails to load (say the key was
// written but not yet the certificate) leaves the previous one in use.
type certReloader struct {
	files Files
	log   *slog.Logger

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
	lastCheck       time.Time
}

// recheck bounds how often the files are stat'ed: handshakes can come by
// the thousand per second.
const recheck = time.Second

func (c *certReloader) load() error {
	cs, err1 := os.Stat(c.files.Cert)
	ks, err2 := os.Stat(c.files.Key)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	if c.cert != nil && cs.ModTime().Equal(c.certMod) && ks.ModTime().Equal(c.keyMod) {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return fmt.Errorf("tls certificate %s / key %s: %w", c.files.Cert, c.files.Key, err)
	}
	if c.cert != nil {
		c.log.Info("tls certificate reloaded", "cert", c.files.Cert)
	}
	c.cert, c.certMod, c.keyMod = &cert, cs.ModTime(), ks.ModTime()
	return nil
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.lastCheck) >= recheck {
		c.lastCheck = now
		if err := c.load(); err != nil {
			c.log.Error("reloading the tls certificate; the previous one stays in use", "err", err)
		}
	}
	return c.cert, nil
}

// Config returns a server TLS configuration for files. It fails when the
// certificate, key or client CA cannot be loaded.
func Config(f Files, log *slog.Logger) (*tls.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &certReloader{files: f, log: log, lastCheck: time.Now()}
	if err := r.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		// h2 first: gRPC requires it, and the query port carries Tempo's
		// gRPC streaming API too.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if f.ClientCA != "" {
		pool, err := loadPool(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Listener wraps ln so that every connection speaks TLS with cfg.
func Listener(cfg *tls.Config) func(net.Listener) net.Listener {
	return func(ln net.Listener) net.Listener { return tls.NewListener(ln, cfg) }
}

// ClientConfig returns the TLS configuration a node dials its peers with:
// it trusts the CAs in caFile (empty: the system's) and presents f's
// certificate, re-read like the listeners', when a peer asks for one
// (mTLS).
func ClientConfig(f Files, caFile string, log *slog.Logger) (*tls.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("tls peer CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" {
		r := &certReloader{files: f, log: log, lastCheck: time.Now()}
		if err := r.load(); err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.get(nil) }
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
