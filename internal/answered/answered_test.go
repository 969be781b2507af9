package answered

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// The header names what the handler noted before writing, sorted; an
// answer from every node has none, and the JSON fields are left out.
func TestMiddlewareSetsHeadersFromNotes(t *testing.T) {
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, n := range r.URL.Query()["down"] {
			Unanswered(r.Context(), n)
		}
		for _, n := range r.URL.Query()["bucket"] {
			FromBucket(r.Context(), n)
		}
		_ = json.NewEncoder(w).Encode(Of(r.Context()).AddTo(map[string]any{"x": 1}))
	}))
	for _, c := range []struct {
		query, header, bucket, body string
	}{
		{"", "", "", `{"x":1}`},
		{"?down=n2&bucket=n1&down=n1", "n1,n2", "n1", `{"from_bucket_nodes":["n1"],"unanswered_nodes":["n1","n2"],"x":1}`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+c.query, nil))
		if got := rec.Header().Get(Header); got != c.header {
			t.Errorf("%q: %s %q, want %q", c.query, Header, got, c.header)
		}
		if got := rec.Header().Get(HeaderFromBucket); got != c.bucket {
			t.Errorf("%q: %s %q, want %q", c.query, HeaderFromBucket, got, c.bucket)
		}
		if got := rec.Body.String(); got != c.body+"\n" {
			t.Errorf("%q: body %s, want %s", c.query, got, c.body)
		}
	}
}

// Without a report (a single node, a background query) notes are
// dropped; a struct embedding Nodes says nothing when empty.
func TestNoReportNoFields(t *testing.T) {
	ctx := context.Background()
	Unanswered(ctx, "n1")
	FromBucket(ctx, "n1")
	b, _ := json.Marshal(struct {
		A int `json:"a"`
		Nodes
	}{1, Of(ctx)})
	if string(b) != `{"a":1}` {
		t.Fatalf("got %s", b)
	}
	ctx, rep := With(ctx)
	FromBucket(ctx, "n3")
	if n := rep.Nodes(); !slices.Equal(n.Unanswered, []string{"n3"}) || !slices.Equal(n.FromBucket, []string{"n3"}) {
		t.Fatalf("a node answered from the bucket is an unanswered one too: %+v", n)
	}
}
