// Package answered records, for one request to a cluster node, which
// other nodes did not answer the queries it fanned out, and which of those
// were answered instead from their copies in the bucket, so that every
// merged answer can say how complete it is: in its JSON (Nodes) where the
// body is tracedx's own, in a response header (Middleware) everywhere.
package answered

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Header names the nodes that did not answer, comma-separated; the header
// is absent when every node answered.
const Header = "X-Tracedx-Unanswered-Nodes"

// HeaderFromBucket names those of them whose share was read from the
// bucket instead.
const HeaderFromBucket = "X-Tracedx-From-Bucket-Nodes"

// Nodes is what a JSON answer says of the nodes that did not answer.
type Nodes struct {
	// Unanswered are the nodes that did not answer (down, restarting):
	// the answer lacks their share, except for those in FromBucket,
	// whose share was read from their copy in the bucket (missing only
	// what they recorded in their last minute or so).
	Unanswered []string `json:"unanswered_nodes,omitempty"`
	FromBucket []string `json:"from_bucket_nodes,omitempty"`
}

// Report collects the nodes of one request.
type Report struct {
	mu         sync.Mutex
	unanswered map[string]bool
	fromBucket map[string]bool
}

type reportKey struct{}

// With returns ctx carrying a new report.
func With(ctx context.Context) (context.Context, *Report) {
	r := &Report{unanswered: map[string]bool{}, fromBucket: map[string]bool{}}
	return context.WithValue(ctx, reportKey{}, r), r
}

// Unanswered notes that node did not answer a query of ctx's request
// (nothing without a report).
func Unanswered(ctx context.Context, node string) {
	if r, _ := ctx.Value(reportKey{}).(*Report); r != nil {
		r.mu.Lock()
		r.unanswered[node] = true
		r.mu.Unlock()
	}
}

// FromBucket notes that node did not answer and its share was read from
// the bucket.
func FromBucket(ctx context.Context, node string) {
	if r, _ := ctx.Value(reportKey{}).(*Report); r != nil {
		r.mu.Lock()
		r.unanswered[node], r.fromBucket[node] = true, true
		r.mu.Unlock()
	}
}

// Of is what the request of ctx noted so far (empty without a report).
func Of(ctx context.Context) Nodes {
	r, _ := ctx.Value(reportKey{}).(*Report)
	if r == nil {
		return Nodes{}
	}
	return r.Nodes()
}

// Nodes is what the report holds, sorted (nil when empty).
func (r *Report) Nodes() Nodes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Nodes{Unanswered: sorted(r.unanswered), FromBucket: sorted(r.fromBucket)}
}

func sorted(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Middleware gives each request a report and sets Header and
// HeaderFromBucket from it when the response's header is written: the
// handlers of merged answers write once they have merged. gRPC requests
// pass untouched (their status goes in trailers).
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		ctx, rep := With(r.Context())
		next.ServeHTTP(&headerWriter{ResponseWriter: w, rep: rep}, r.WithContext(ctx))
	})
}

type headerWriter struct {
	http.ResponseWriter
	rep   *Report
	wrote bool
}

func (w *headerWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		n := w.rep.Nodes()
		if len(n.Unanswered) > 0 {
			w.Header().Set(Header, strings.Join(n.Unanswered, ","))
		}
		if len(n.FromBucket) > 0 {
			w.Header().Set(HeaderFromBucket, strings.Join(n.FromBucket, ","))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes flushes on (streamed answers).
func (w *headerWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// AddTo adds n's fields to a JSON object built as a map.
func (n Nodes) AddTo(m map[string]any) map[string]any {
	if len(n.Unanswered) > 0 {
		m["unanswered_nodes"] = n.Unanswered
	}
	if len(n.FromBucket) > 0 {
		m["from_bucket_nodes"] = n.FromBucket
	}
	return m
}
