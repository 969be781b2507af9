// Package tenant keeps tenants apart: it reads a request's tenant (the
// X-Scope-OrgID header, Tempo's and Cortex's convention, reconciled with
// the tenant of its token) into the context, and routes to one instance
// per tenant, opened on first use.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/auth"
)

// Header carries the tenant of a request.
const Header = "X-Scope-OrgID"

// validID keeps tenant ids safe as directory names and label values.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Errors of Resolve.
var (
	ErrMissing  = errors.New("the tenant is missing: send the " + Header + " header (or use a token bound to a tenant)")
	ErrMismatch = errors.New("the " + Header + " header names another tenant than the token's")
)

type ctxKey struct{}

// WithID returns ctx carrying tenant id.
func WithID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the tenant of a request.
func FromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(ctxKey{}).(string)
	return id, ok
}

// Resolve picks the tenant of a request from its header and the token it
// authenticated with (in ctx): a token bound to a tenant decides, and a
// header naming another tenant is refused.
func Resolve(ctx context.Context, header string) (string, error) {
	id := header
	if ident, ok := auth.FromContext(ctx); ok && ident.Tenant != "" {
		if header != "" && header != ident.Tenant {
			return "", ErrMismatch
		}
		id = ident.Tenant
	}
	if id == "" {
		return "", ErrMissing
	}
	if !ValidID(id) {
		return "", fmt.Errorf("tenant %q: want 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	return id, nil
}

// ValidID reports whether id may name a tenant: it is safe as a
// directory name, an object key's part and a label value.
func ValidID(id string) bool { return validID.MatchString(id) }

// HTTP resolves the tenant of each request into its context; without one
// the answer is 401, with a header contradicting the token 403, with a
// malformed id 400. Paths in public pass without a tenant.
func HTTP(next http.Handler, public ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range public {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		id, err := Resolve(r.Context(), r.Header.Get(Header))
		if err != nil {
			code := http.StatusBadRequest
			switch {
			case errors.Is(err, ErrMissing):
				code = http.StatusUnauthorized
			case errors.Is(err, ErrMismatch):
				code = http.StatusForbidden
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"error":` + strconv.Quote(err.Error()) + "}\n"))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithID(r.Context(), id)))
	})
}

func grpcResolve(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var header string
	if v := md.Get("x-scope-orgid"); len(v) > 0 {
		header = v[0]
	}
	id, err := Resolve(ctx, header)
	switch {
	case errors.Is(err, ErrMissing):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrMismatch):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return WithID(ctx, id), nil
}

// UnaryInterceptor resolves the tenant of unary calls (metadata
// x-scope-orgid); chain it after authentication.
func UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := grpcResolve(ctx)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor resolves the tenant of streams.
func StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := grpcResolve(ss.Context())
		if err != nil {
			return err
		}
		return h(srv, &tenantStream{ServerStream: ss, ctx: ctx})
	}
}

type tenantStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tenantStream) Context() context.Context { return s.ctx }

// Instance is what a tenant gets of its own.
type Instance interface{ Close() }

// Router holds one instance per tenant, opened on first use.
type Router[T Instance] struct {
	open func(id string) (T, error)

	mu sync.Mutex
	m  map[string]T
	// opening holds the opens in progress: a tenant's instance is a whole
	// server, and on object storage opening it lists and loads blocks for
	// seconds, during which the other tenants' requests must go on.
	opening map[string]*opening[T]
	openWG  sync.WaitGroup
	closed  bool
}

// opening is one open in progress; done is closed once in and err are set.
type opening[T any] struct {
	done chan struct{}
	in   T
	err  error
}

// NewRouter returns a router opening instances with open.
func NewRouter[T Instance](open func(id string) (T, error)) *Router[T] {
	return &Router[T]{open: open, m: map[string]T{}, opening: map[string]*opening[T]{}}
}

var errShuttingDown = errors.New("shutting down")

// Get returns the tenant's instance, opening it when it is the first
// request of the tenant. Requests for a tenant being opened wait for that
// open; requests for other tenants do not.
func (r *Router[T]) Get(id string) (in T, err error) {
	var zero T
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return zero, errShuttingDown
	}
	if got, ok := r.m[id]; ok {
		r.mu.Unlock()
		return got, nil
	}
	if o, ok := r.opening[id]; ok {
		r.mu.Unlock()
		<-o.done
		return o.in, o.err
	}
	o := &opening[T]{done: make(chan struct{}), err: fmt.Errorf("opening tenant %s: it panicked", id)}
	r.opening[id] = o
	r.openWG.Add(1)
	r.mu.Unlock()
	// Deferred, so that waiters are released even when open panics.
	defer func() {
		r.mu.Lock()
		delete(r.opening, id)
		switch {
		case o.err != nil:
		case r.closed:
			// Close ran meanwhile and closed what it found: this one too.
			o.in.Close()
			o.in, o.err = zero, errShuttingDown
		default:
			r.m[id] = o.in
		}
		r.mu.Unlock()
		close(o.done)
		r.openWG.Done()
		in, err = o.in, o.err
	}()
	if opened, err := r.open(id); err != nil {
		o.err = fmt.Errorf("opening tenant %s: %w", id, err)
	} else {
		o.in, o.err = opened, nil
	}
	return o.in, o.err
}

// IDs lists the tenants opened so far.
func (r *Router[T]) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.m))
	for id := range r.m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Close closes every instance, those being opened once they are; Get
// fails afterwards.
func (r *Router[T]) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, in := range r.m {
		in.Close()
	}
	r.m = nil
	r.mu.Unlock()
	r.openWG.Wait()
	return nil
}
