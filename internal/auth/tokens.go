// Package auth checks bearer tokens: a token file maps each token to a
// tenant and its scopes (write: ingest, read: query APIs and UI). It offers
// the checks as HTTP middleware, gRPC interceptors and a login form for the
// UI, and keeps the identity of a request in its context.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Scope is what a token may do.
type Scope string

const (
	// Write sends spans and logs (OTLP, Zipkin).
	Write Scope = "write"
	// Read queries: every API, the UI and /metrics.
	Read Scope = "read"
	// Peer is held only by the cluster's peer token (SetPeer), never by a
	// token of the file: it opens the nodes' internal API and lets a
	// request name any tenant.
	Peer Scope = "peer"
)

// Identity is who a request authenticated as.
type Identity struct {
	// Tenant the token belongs to ("" when the file names none).
	Tenant string
	Scopes []Scope
}

// Has reports whether the identity holds scope s.
func (i Identity) Has(s Scope) bool {
	for _, x := range i.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity a request authenticated as, if any.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// entry holds a token's digest, not the token: every comparison then
// takes the same time whatever the tokens' lengths.
type entry struct {
	digest [sha256.Size]byte
	id     Identity
}

// Tokens is the set of valid tokens, read from a file and re-read when it
// changes (by its modification time and size) or on SIGHUP. A file that
// no longer parses leaves the previous set in force, logged.
type Tokens struct {
	path    string
	log     *slog.Logger
	entries atomic.Pointer[[]entry]
	peer    atomic.Pointer[entry]

	mu      sync.Mutex // serialises reloads
	modTime time.Time
	size    int64
}

// Load reads the token file. It fails when the file cannot be read, does
// not parse, or holds no token.
func Load(path string, log *slog.Logger) (*Tokens, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{path: path, log: log}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload re-reads the file; on error the previous tokens stay in force.
func (t *Tokens) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	es, err := parse(data)
	if err != nil {
		return fmt.Errorf("token file %s: %w", t.path, err)
	}
	t.entries.Store(&es)
	t.modTime, t.size = st.ModTime(), st.Size()
	return nil
}

// changed reports whether the file differs from the one last loaded.
func (t *Tokens) changed() bool {
	st, err := os.Stat(t.path)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !st.ModTime().Equal(t.modTime) || st.Size() != t.size
}

// Watch reloads the file when it changes (checked every interval) or the
// process gets SIGHUP, until ctx ends.
func (t *Tokens) Watch(ctx context.Context, interval time.Duration) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick.C:
			if !t.changed() {
				continue
			}
		}
		if err := t.Reload(); err != nil {
			t.log.Error("reloading tokens; the previous tokens stay in force", "err", err)
			continue
		}
		t.log.Info("tokens reloaded", "file", t.path, "tokens", len(*t.entries.Load()))
	}
}

// Check returns the identity of token. It compares against every token
// in constant time, so timing tells nothing about how close a guess was.
func (t *Tokens) Check(token string) (Identity, bool) {
	if token == "" {
		return Identity{}, false
	}
	d := sha256.Sum256([]byte(token))
	var found Identity
	match := 0
	for _, e := range *t.entries.Load() {
		if subtle.ConstantTimeCompare(d[:], e.digest[:]) == 1 {
			found, match = e.id, 1
		}
	}
	if p := t.peer.Load(); p != nil && subtle.ConstantTimeCompare(d[:], p.digest[:]) == 1 {
		found, match = p.id, 1
	}
	return found, match == 1
}

// SetPeer adds the cluster's peer token: it reads and writes as any
// tenant (a node forwards spans and queries on behalf of every tenant)
// and alone holds the Peer scope. It survives reloads of the file.
func (t *Tokens) SetPeer(token string) {
	t.peer.Store(&entry{digest: sha256.Sum256([]byte(token)), id: Identity{Scopes: []Scope{Read, Write, Peer}}})
}

// fileEntry is one token of the YAML form.
type fileEntry struct {
	Token  string   `yaml:"token"`
	Tenant string   `yaml:"tenant"`
	Scopes []string `yaml:"scopes"`
}

// parse reads either YAML (a document with a top-level "tokens:" list) or
// one token per line: "token [tenant [scope,scope]]", '#' starting a
// comment. A line without scopes grants read and write.
func parse(data []byte) ([]entry, error) {
	var raw []fileEntry
	if looksYAML(data) {
		var doc struct {
			Tokens []fileEntry `yaml:"tokens"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("yaml: %w", err)
		}
		raw = doc.Tokens
	} else {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line, _, _ := strings.Cut(sc.Text(), "#")
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if len(f) > 3 {
				return nil, fmt.Errorf("line %d: want \"token [tenant [scopes]]\", got %d fields", n, len(f))
			}
			e := fileEntry{Token: f[0]}
			if len(f) > 1 {
				e.Tenant = f[1]
			}
			if len(f) > 2 {
				e.Scopes = strings.Split(f[2], ",")
			}
			raw = append(raw, e)
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return nil, errors.New("no tokens")
	}
	seen := map[string]bool{}
	out := make([]entry, 0, len(raw))
	for i, r := range raw {
		if len(r.Token) < 16 {
			return nil, fmt.Errorf("token %d: shorter than 16 characters, too easy to guess", i+1)
		}
		if seen[r.Token] {
			return nil, fmt.Errorf("token %d: listed twice", i+1)
		}
		seen[r.Token] = true
		id := Identity{Tenant: r.Tenant}
		if len(r.Scopes) == 0 {
			id.Scopes = []Scope{Read, Write}
		}
		for _, s := range r.Scopes {
			switch sc := Scope(strings.TrimSpace(s)); sc {
			case Read, Write:
				id.Scopes = append(id.Scopes, sc)
			case Peer:
				return nil, fmt.Errorf("token %d: the peer scope belongs to the cluster's token (cluster.token_file) alone", i+1)
			default:
				return nil, fmt.Errorf("token %d: unknown scope %q (want read or write)", i+1, s)
			}
		}
		out = append(out, entry{digest: sha256.Sum256([]byte(r.Token)), id: id})
	}
	return out, nil
}

func looksYAML(data []byte) bool {
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		return strings.HasPrefix(l, "tokens:")
	}
	return false
}
