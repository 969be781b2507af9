package jaeger

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// fetchStore answers Search with fixed summaries and Trace per id, slower
// for earlier ids so concurrent reads finish out of order.
type fetchStore struct {
	store.Store
	sums  []model.TraceSummary
	fail  map[model.TraceID]error
	mu    sync.Mutex
	hints map[model.TraceID]store.TimeRange
}

func (f *fetchStore) Search(context.Context, store.Query) ([]model.TraceSummary, error) {
	return f.sums, nil
}

func (f *fetchStore) Trace(_ context.Context, id model.TraceID, hint store.TimeRange) ([]model.Span, error) {
	f.mu.Lock()
	f.hints[id] = hint
	f.mu.Unlock()
	time.Sleep(time.Duration(len(f.sums)-int(id[15])) * time.Millisecond)
	if err := f.fail[id]; err != nil {
		return nil, err
	}
	return []model.Span{{TraceID: id, Name: "op"}}, nil
}

func TestSearchWholeTracesKeepsOrderAndSkipsVanished(t *testing.T) {
	var ids []model.TraceID
	fs := &fetchStore{Store: memstore.New(), fail: map[model.TraceID]error{}, hints: map[model.TraceID]store.TimeRange{}}
	for i := 0; i < 9; i++ {
		id := model.TraceID{15: byte(i)}
		ids = append(ids, id)
		fs.sums = append(fs.sums, model.TraceSummary{TraceID: id, StartUnixNano: uint64(100 - i), EndUnixNano: uint64(200 - i)})
	}
	fs.fail[ids[4]] = store.ErrNotFound // removed by retention between the two steps
	got, err := searchWholeTraces(context.Background(), fs, store.Query{Service: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var order []model.TraceID
	for _, spans := range got {
		order = append(order, spans[0].TraceID)
	}
	want := append(append([]model.TraceID{}, ids[:4]...), ids[5:]...)
	if len(order) != len(want) {
		t.Fatalf("got %d traces, want %d", len(order), len(want))
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("trace %d is %s, want %s (the search's order)", i, order[i], want[i])
		}
	}
	for i, id := range ids {
		if h := fs.hints[id]; h.Start != uint64(100-i) || h.End != uint64(200-i)+1 {
			t.Errorf("trace %d read with hint %+v, want its own range [start, end]", i, h)
		}
	}

	fs.fail[ids[2]] = errors.New("disk on fire")
	if _, err := searchWholeTraces(context.Background(), fs, store.Query{}); err == nil {
		t.Fatal("a failed read was not reported")
	}
}

// The v1 search encodes its traces in groups on several goroutines; the
// response still lists them in the search's order, without the ones that
// vanished, and counts what it lists.
func TestV1SearchInGroupsKeepsOrder(t *testing.T) {
	defer func(f func() int) { searchCPUs = f }(searchCPUs)
	searchCPUs = func() int { return 4 }
	fs := &fetchStore{Store: memstore.New(), fail: map[model.TraceID]error{}, hints: map[model.TraceID]store.TimeRange{}}
	var want []string
	for i := 0; i < 9; i++ {
		id := model.TraceID{0: 1, 15: byte(i)}
		fs.sums = append(fs.sums, model.TraceSummary{TraceID: id, StartUnixNano: uint64(100 - i), EndUnixNano: uint64(200 - i)})
		if i == 4 || i == 5 {
			fs.fail[id] = store.ErrNotFound // a whole group of two gone, when in groups of 2 or 3
			continue
		}
		want = append(want, jaegerTraceID(id))
	}
	rec := httptest.NewRecorder()
	NewHandler(fs, Options{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/traces?service=x&limit=20", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("search: %d %s", rec.Code, rec.Body)
	}
	var got struct {
		Data []struct {
			TraceID string `json:"traceID"`
		} `json:"data"`
		Total int `json:"total"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, rec.Body)
	}
	var order []string
	for _, d := range got.Data {
		order = append(order, d.TraceID)
	}
	if !slices.Equal(order, want) || got.Total != len(want) {
		t.Fatalf("traces %v, total %d; want %v, total %d", order, got.Total, want, len(want))
	}
}
