package summaryarchive

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

var day0 = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

func entry(n byte, start time.Time, dur time.Duration, rootSvc string, errs int, sampled string, svcs ...model.ServiceStats) Entry {
	s := model.TraceSummary{TraceID: model.TraceID{n, 0xab}, RootService: rootSvc, RootName: "GET /" + rootSvc,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(dur).UnixNano()), ErrorCount: errs, Services: svcs}
	for _, sv := range svcs {
		s.SpanCount += sv.SpanCount
	}
	return Entry{Summary: s, Sampled: sampled}
}

func openA(t *testing.T, dir string, clock *atomic.Int64, log *slog.Logger) *Archive {
	t.Helper()
	a, err := Open(Options{Dir: dir, Retention: 30 * 24 * time.Hour, Now: func() time.Time { return time.Unix(0, clock.Load()) }, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ids(es []Entry) []model.TraceID {
	var out []model.TraceID
	for _, e := range es {
		out = append(out, e.Summary.TraceID)
	}
	return out
}

func TestSearchMatchesSummariesAcrossRestartAndExpiry(t *testing.T) {
	dir := t.TempDir()
	var clock atomic.Int64
	clock.Store(day0.Add(time.Hour).UnixNano())
	a := openA(t, dir, &clock, nil)
	ctx := context.Background()
	shop := entry(1, day0, 300*time.Millisecond, "shop", 1, "error",
		model.ServiceStats{Name: "shop", SpanCount: 3}, model.ServiceStats{Name: "db", SpanCount: 2, ErrorCount: 1})
	cart := entry(2, day0.Add(time.Minute), 20*time.Millisecond, "cart", 0, "", model.ServiceStats{Name: "cart", SpanCount: 1})
	next := entry(3, day0.Add(24*time.Hour), 50*time.Millisecond, "shop", 0, "rate", model.ServiceStats{Name: "shop", SpanCount: 4})
	if err := a.Append(ctx, []Entry{shop, cart, next}); err != nil {
		t.Fatal(err)
	}
	// A second fragment of shop's trace expires later, from another block.
	frag := entry(1, day0.Add(100*time.Millisecond), 400*time.Millisecond, "", 0, "", model.ServiceStats{Name: "mail", SpanCount: 2})
	frag.Summary.RootName = ""
	if err := a.Append(ctx, []Entry{frag}); err != nil {
		t.Fatal(err)
	}
	a = openA(t, dir, &clock, nil) // a restart keeps the archive
	errStatus := model.StatusError
	cases := []struct {
		name string
		q    store.Query
		want []model.TraceID
	}{
		{"all, newest first", store.Query{}, []model.TraceID{next.Summary.TraceID, cart.Summary.TraceID, shop.Summary.TraceID}},
		{"limit", store.Query{Limit: 1}, []model.TraceID{next.Summary.TraceID}},
		{"any span's service", store.Query{Service: "db"}, []model.TraceID{shop.Summary.TraceID}},
		{"joined fragment's service", store.Query{Service: "mail"}, []model.TraceID{shop.Summary.TraceID}},
		{"error in service", store.Query{Service: "db", Status: &errStatus}, []model.TraceID{shop.Summary.TraceID}},
		{"no error in service", store.Query{Service: "shop", Status: &errStatus}, nil},
		{"root operation", store.Query{Operation: "GET /cart"}, []model.TraceID{cart.Summary.TraceID}},
		{"trace duration", store.Query{MinTraceDuration: uint64(100 * time.Millisecond)}, []model.TraceID{shop.Summary.TraceID}},
		{"range", store.Query{Range: store.TimeRange{Start: uint64(day0.Add(30 * time.Second).UnixNano()), End: uint64(day0.Add(time.Hour).UnixNano())}},
			[]model.TraceID{cart.Summary.TraceID}},
		{"trace id", store.Query{TraceIDs: []model.TraceID{cart.Summary.TraceID}}, []model.TraceID{cart.Summary.TraceID}},
		{"span attribute: not answerable", store.Query{Attrs: []store.AttrFilter{{Key: "k", Value: model.Str("v")}}}, nil},
	}
	for _, c := range cases {
		got, err := a.Search(ctx, c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(ids(got), c.want) {
			t.Errorf("%s: got %v, want %v", c.name, ids(got), c.want)
		}
	}
	got, _ := a.Search(ctx, store.Query{TraceIDs: []model.TraceID{shop.Summary.TraceID}})
	s := got[0]
	if s.Sampled != "error" || s.Summary.SpanCount != 7 || s.Summary.RootName != "GET /shop" || s.Summary.EndUnixNano != frag.Summary.EndUnixNano || len(s.Summary.Services) != 3 {
		t.Errorf("joined fragments: %+v", s)
	}

	// Past retention by start: day0's file goes, the next day's stays.
	clock.Store(day0.Add(31 * 24 * time.Hour).UnixNano())
	if err := a.Expire(); err != nil {
		t.Fatal(err)
	}
	got, err := a.Search(ctx, store.Query{})
	if err != nil || !reflect.DeepEqual(ids(got), []model.TraceID{next.Summary.TraceID}) {
		t.Errorf("after day0 expired: %v %v", ids(got), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "2026-11-03"+fileExt)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired day file still there: %v", err)
	}
	// Past it, search hides what the next expiry deletes.
	clock.Store(day0.Add(32 * 24 * time.Hour).UnixNano())
	if got, _ := a.Search(ctx, store.Query{}); len(got) != 0 {
		t.Errorf("summaries past retention: %v", ids(got))
	}
}

// A crash mid-append leaves a torn frame: Open cuts it off and keeps the
// rest. A damaged frame sets its file aside with a logged error, the
// frames before it stay searchable, and the archive goes on taking
// appends.
func TestDamagedFilesDoNotStopTheArchive(t *testing.T) {
	dir := t.TempDir()
	var clock atomic.Int64
	clock.Store(day0.Add(time.Hour).UnixNano())
	a := openA(t, dir, &clock, nil)
	ctx := context.Background()
	first := entry(1, day0, time.Millisecond, "a", 0, "", model.ServiceStats{Name: "a", SpanCount: 1})
	second := entry(2, day0.Add(time.Second), time.Millisecond, "b", 0, "", model.ServiceStats{Name: "b", SpanCount: 1})
	for _, e := range []Entry{first, second} {
		if err := a.Append(ctx, []Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	name := filepath.Join(dir, "2026-11-03"+fileExt)
	whole, _ := os.ReadFile(name)

	// Torn tail: half of a third frame.
	torn := append(bytes.Clone(whole), 40, 0, 0, 0, 1, 2, 3, 4, 5)
	if err := os.WriteFile(name, torn, 0o644); err != nil {
		t.Fatal(err)
	}
	openA(t, dir, &clock, nil)
	if p, _ := os.ReadFile(name); !bytes.Equal(p, whole) {
		t.Errorf("torn tail not cut: %d bytes, want %d", len(p), len(whole))
	}

	// A flipped byte in the second frame is found by a search (Open
	// walks only the frame headers): the error is logged naming the file
	// and offset, the file set aside, and the search answers from the
	// frames before the damage.
	bad := bytes.Clone(whole)
	bad[len(bad)-3] ^= 0xff
	if err := os.WriteFile(name, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	a = openA(t, dir, &clock, slog.New(slog.NewTextHandler(&logBuf, nil)))
	got, err := a.Search(ctx, store.Query{})
	if err != nil || !reflect.DeepEqual(ids(got), []model.TraceID{first.Summary.TraceID}) {
		t.Fatalf("search over a damaged file: %v %v", ids(got), err)
	}
	if l := logBuf.String(); !strings.Contains(l, "damaged file set aside") || !strings.Contains(l, "checksum mismatch") || !strings.Contains(l, name) {
		t.Errorf("no clear error logged: %s", l)
	}
	if p, err := os.ReadFile(name + ".corrupt"); err != nil || !bytes.Equal(p, bad) {
		t.Errorf("damaged file not kept aside: %v", err)
	}
	third := entry(3, day0.Add(2*time.Second), time.Millisecond, "c", 0, "", model.ServiceStats{Name: "c", SpanCount: 1})
	if err := a.Append(ctx, []Entry{third}); err != nil {
		t.Fatal(err)
	}
	got, err = a.Search(ctx, store.Query{})
	if err != nil || !reflect.DeepEqual(ids(got), []model.TraceID{third.Summary.TraceID, first.Summary.TraceID}) {
		t.Errorf("after repair: %v %v", ids(got), err)
	}

	// Not an archive file at all: set aside whole.
	other := filepath.Join(dir, "2026-11-04"+fileExt)
	if err := os.WriteFile(other, []byte("hello, this is not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	a = openA(t, dir, &clock, nil)
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("foreign file still searched: %v", err)
	}
	if got, err := a.Search(ctx, store.Query{}); err != nil || len(got) != 2 {
		t.Errorf("search beside a foreign file: %v %v", ids(got), err)
	}
}
