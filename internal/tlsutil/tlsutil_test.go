package tlsutil

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/tlsutil/tlstest"
)

// serve accepts TLS connections and completes their handshakes.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	tl := Listener(cfg)(ln)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func serverSerial(t *testing.T, addr string, cfg *tls.Config) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestCertificateIsReloadedWhenItsFilesChange(t *testing.T) {
	ca := tlstest.NewCA(t)
	_, certFile, keyFile := ca.Issue(t, "server")
	cfg, err := Config(Files{Cert: certFile, Key: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
	first := serverSerial(t, addr, client)

	// A renewed certificate, written over the same files.
	_, newCert, newKey := ca.Issue(t, "renewed")
	for from, to := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(2 * time.Second)
		_ = os.Chtimes(to, later, later)
	}
	deadline := time.Now().Add(5 * time.Second)
	for serverSerial(t, addr, client) == first {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not served")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClientCertificateRequiredWithClientCA(t *testing.T) {
	ca := tlstest.NewCA(t)
	_, certFile, keyFile := ca.Issue(t, "server")
	clientCert, _, _ := ca.Issue(t, "client")
	cfg, err := Config(Files{Cert: certFile, Key: keyFile, ClientCA: ca.File}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	// TLS 1.3 reports a refused client certificate on the first read.
	readErr := func(cc *tls.Config) error {
		c, err := tls.Dial("tcp", addr, cc)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	}
	err = readErr(&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err == nil || !isTLSAlert(err) {
		t.Errorf("no client certificate: want a TLS alert, got %v", err)
	}
	err = readErr(&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{clientCert}})
	if isTLSAlert(err) {
		t.Errorf("a client certificate from the CA was refused: %v", err)
	}
}

func isTLSAlert(err error) bool {
	var a tls.AlertError
	return err != nil && (errors.As(err, &a) || strings.Contains(err.Error(), "certificate"))
}

func TestBadFilesAreRefused(t *testing.T) {
	ca := tlstest.NewCA(t)
	_, certFile, keyFile := ca.Issue(t, "server")
	if _, err := Config(Files{Cert: certFile, Key: certFile}, nil); err == nil {
		t.Error("a certificate as key was accepted")
	}
	if _, err := Config(Files{Cert: certFile, Key: keyFile, ClientCA: keyFile}, nil); err == nil {
		t.Error("a key as client CA was accepted")
	}
}

// A node dials its peers trusting the peer CA and presenting its own
// certificate: an mTLS listener accepts it; without the CA the peer's
// certificate is refused.
func TestClientConfigDialsAnMTLSPeer(t *testing.T) {
	ca := tlstest.NewCA(t)
	_, certFile, keyFile := ca.Issue(t, "node")
	srv, err := Config(Files{Cert: certFile, Key: keyFile, ClientCA: ca.File}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	dial := func(cc *tls.Config) error {
		cc.ServerName = "127.0.0.1"
		c, err := tls.Dial("tcp", addr, cc)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	}
	cc, err := ClientConfig(Files{Cert: certFile, Key: keyFile}, ca.File, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(cc); isTLSAlert(err) {
		t.Errorf("a peer with the CA's certificate was refused: %v", err)
	}
	noCert, err := ClientConfig(Files{}, ca.File, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(noCert); !isTLSAlert(err) {
		t.Errorf("a peer without a certificate: want a TLS alert, got %v", err)
	}
	systemRoots, err := ClientConfig(Files{Cert: certFile, Key: keyFile}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(systemRoots); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("the peer's certificate of a private CA checked against the system's roots: %v", err)
	}
	if _, err := ClientConfig(Files{}, keyFile, nil); err == nil {
		t.Error("a key as peer CA was accepted")
	}
}
