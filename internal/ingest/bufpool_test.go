package ingest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"google.golang.org/grpc/mem"

	"github.com/tracedx/tracedx/internal/model"
)

func TestDirtyPoolSizes(t *testing.T) {
	p := &dirtyPool{}
	for _, n := range []int{0, 1, 4095, 4096, 4097, 40 << 10, 1<<20 + 1, 40 << 20} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		if n <= 1<<maxPoolExp && n > 1<<minPoolExp && cap(*b) >= 2*n {
			t.Fatalf("Get(%d): cap %d, more than the next power of two", n, cap(*b))
		}
		p.Put(b)
	}
}

// TestRequestPoolCopiesWholeMessage: a request read into a reused buffer
// holds exactly its own bytes, whatever the buffer held before.
func TestRequestPoolCopiesWholeMessage(t *testing.T) {
	old := mem.BufferSlice{mem.SliceBuffer(bytes.Repeat([]byte{0xee}, 50<<10)), mem.SliceBuffer(bytes.Repeat([]byte{0xee}, 10<<10))}
	first := old.MaterializeToBuffer(requestPool)
	first.Free()
	want := append(bytes.Repeat([]byte{1}, 30<<10), bytes.Repeat([]byte{2}, 20<<10)...)
	msg := mem.BufferSlice{mem.SliceBuffer(want[:30<<10]), mem.SliceBuffer(want[30<<10:])}
	got := msg.MaterializeToBuffer(requestPool)
	defer got.Free()
	if !bytes.Equal(got.ReadOnlyData(), want) {
		t.Fatal("the request's bytes differ from what was sent")
	}
}

// A body of known length is read without growing the buffer past it (a
// buffer of exactly the body's size made ReadFrom double it to find the
// end).
func TestReadBodyOfKnownLengthDoesNotGrowTheBuffer(t *testing.T) {
	s, err := New(poolTestConfig(), funcSink(func(context.Context, []model.Span) error { return nil }), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const size = 3 << 20 // above other tests' bodies, below putBuf's 4 MiB
	r := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(make([]byte, size)))
	buf, err := s.readBody(httptest.NewRecorder(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer putBuf(buf)
	if buf.Len() != size || buf.Cap() >= 2*size {
		t.Fatalf("read %d bytes into a buffer of %d, want %d in less than %d", buf.Len(), buf.Cap(), size, 2*size)
	}
}

// Body buffers handed back go to the freelist (the usual sizes) and come
// out empty; two requests in flight never share one, and bodies read
// concurrently into reused buffers hold exactly their own bytes.
func TestBodyBuffersAreReusedNotShared(t *testing.T) {
	s, err := New(poolTestConfig(), funcSink(func(context.Context, []model.Span) error { return nil }), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for idleBufs.Len() > 0 { // other tests' buffers
		idleBufs.Get()
	}
	a, b := getBuf(), getBuf()
	if a == b {
		t.Fatal("two buffers in use at once are the same")
	}
	a.WriteString("left over")
	putBuf(a)
	if got := getBuf(); got != a || got.Len() != 0 {
		t.Fatalf("reused buffer: same %v, %d bytes left in it", got == a, got.Len())
	}
	big := bytes.NewBuffer(make([]byte, 0, 2*maxIdleBufBytes))
	putBuf(big)
	if idleBufs.Len() != 0 {
		t.Fatal("a buffer over maxIdleBufBytes went to the freelist")
	}
	putBuf(a)
	putBuf(b)

	const workers, rounds = 8, 50
	errs := make(chan string, workers)
	for w := range workers {
		go func() {
			var msg string
			for r := range rounds {
				body := bytes.Repeat([]byte{byte(w*rounds + r)}, 200<<10+w*1000+r)
				req := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(body))
				buf, err := s.readBody(httptest.NewRecorder(), req)
				if err != nil {
					msg = err.Error()
					break
				}
				held := buf.Bytes()
				for i := 0; i < 3; i++ {
					runtime.Gosched() // let others take and fill buffers
				}
				if !bytes.Equal(held, body) {
					msg = "a body changed while its request held it"
					putBuf(buf)
					break
				}
				putBuf(buf)
			}
			errs <- msg
		}()
	}
	for range workers {
		if msg := <-errs; msg != "" {
			t.Fatal(msg)
		}
	}
}
