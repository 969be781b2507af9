package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// tenantHeader carries a request's tenant (the tenant package's header,
// Tempo's and Cortex's convention); gRPC metadata keys are lower case.
const (
	tenantHeader   = "X-Scope-OrgID"
	tenantMetadata = "x-scope-orgid"
)

// Security is how the nodes of a cluster reach and recognise each other.
// Every peer call goes through it: the HTTP ones through
// (*peerHTTP).newRequest, the forwarded spans through outgoing.
type Security struct {
	// Token is the cluster's shared peer token (cluster.token_file). Peer
	// calls send it as a bearer token; the peer API and the forwarded-span
	// marker are honoured only with it. Empty: the nodes trust their
	// network (no auth.token_file).
	Token string
	// TLS, when set, is the client configuration peers are dialled with
	// (https, gRPC over TLS): the CA their certificates are checked
	// against and this node's certificate for mTLS.
	TLS *tls.Config
	// Tenant is the tenant this instance serves under multitenancy; peer
	// calls carry it so the peer reads from and writes to that tenant's
	// storage only.
	Tenant string
}

// isPeer reports whether a request's Authorization value is the peer
// token. Without a token every caller counts as a peer (trusted network).
func (s Security) isPeer(authorization string) bool {
	if s.Token == "" {
		return true
	}
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Digests compare in constant time whatever the lengths.
	a, b := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256([]byte(s.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// requirePeer refuses callers of the peer API that do not hold the peer
// token, whatever else they hold: a tenant's read token must not read
// around the merged answers nor see another node's raw data.
func (s Security) requirePeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.isPeer(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tracedx-cluster"`)
			http.Error(w, `{"error":"the peer API needs the cluster's peer token (cluster.token_file)"}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// FromPeer reports whether a gRPC call was forwarded by a peer: it
// carries the forwarded marker and the peer token. A client setting the
// marker without the token is treated as any other sender.
//
// Ingest asks several times per request, on every cluster node and for
// every request, most of them a client's: the keys are looked up alone,
// as metadata.FromIncomingContext copies the whole metadata each time.
func (s Security) FromPeer(ctx context.Context) bool {
	if len(metadata.ValueFromIncomingContext(ctx, forwardedKey)) == 0 {
		return false
	}
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		if s.isPeer(v) {
			return true
		}
	}
	return s.Token == ""
}

// outgoing adds to a forwarded call what the owner needs to accept it:
// the marker, the peer token and the tenant.
func (s Security) outgoing(ctx context.Context, self string) context.Context {
	kv := []string{forwardedKey, self}
	if s.Token != "" {
		kv = append(kv, "authorization", "Bearer "+s.Token)
	}
	if s.Tenant != "" {
		kv = append(kv, tenantMetadata, s.Tenant)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// grpcCredentials are the transport credentials peers are dialled with.
func (s Security) grpcCredentials() credentials.TransportCredentials {
	if s.TLS == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(s.TLS)
}

// peerHTTP makes every HTTP call to a peer.
type peerHTTP struct {
	sec    Security
	client *http.Client
}

func newPeerHTTP(sec Security, timeout time.Duration) *peerHTTP {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if sec.TLS != nil {
		tr.TLSClientConfig = sec.TLS.Clone()
	}
	return &peerHTTP{sec: sec, client: &http.Client{Timeout: timeout, Transport: tr}}
}

// newRequest is the one way to build a request to a peer: https when the
// cluster speaks TLS, the peer token, the tenant and the peer marker (the
// peer answers from its own data without asking its peers again). uri is
// the path and query.
func (p *peerHTTP) newRequest(ctx context.Context, method string, peer Peer, uri string, body io.Reader) (*http.Request, error) {
	scheme := "http"
	if p.sec.TLS != nil {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+peer.HTTP+uri, body)
	if err != nil {
		return nil, fmt.Errorf("request to peer %s: %w", peer.ID, err)
	}
	req.Header.Set(PeerHeader, "1")
	if p.sec.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.sec.Token)
	}
	if p.sec.Tenant != "" {
		req.Header.Set(tenantHeader, p.sec.Tenant)
	}
	return req, nil
}

// do sends a request built by newRequest.
func (p *peerHTTP) do(req *http.Request) (*http.Response, error) { return p.client.Do(req) }
