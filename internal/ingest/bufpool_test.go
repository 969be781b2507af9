package ingest

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
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
