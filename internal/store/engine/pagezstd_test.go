package engine

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	pzstd "github.com/parquet-go/parquet-go/compress/zstd"
)

// dictLikePage is a dictionary page's worth of distinct, repetitive
// values, larger than one zstd block, as the encoder's history path takes.
func dictLikePage() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < int(dictMaxBytes); i++ {
		fmt.Fprintf(&b, "https://shop.example/api/v1/products/%d/reviews?page=%d", i*7919%100003, i%17)
	}
	return b.Bytes()
}

func TestPageCodecRoundTripsAndCompressesAsParquetGo(t *testing.T) {
	src := dictLikePage()
	c := newPageCodec()
	z, err := c.Encode(nil, src)
	if err != nil {
		t.Fatal(err)
	}
	var ref pzstd.Codec
	back, err := ref.Decode(nil, z)
	if err != nil {
		t.Fatalf("parquet-go's codec cannot read the page: %v", err)
	}
	if !bytes.Equal(back, src) {
		t.Fatal("page changed in the round trip")
	}
	// The smaller window covers the whole page: the same matches, so the
	// same size but for the frame header.
	zref, _ := ref.Encode(nil, src)
	if d := len(z) - len(zref); d > 8 || d < -8 {
		t.Fatalf("compressed to %d bytes, parquet-go's codec to %d", len(z), len(zref))
	}
}

// TestPageCodecHistoryIsBounded guards the reason for the codec: the
// encoder of a page above one zstd block must not allocate a history
// sized for zstd's default 8 MiB window (16 MiB).
func TestPageCodecHistoryIsBounded(t *testing.T) {
	src := dictLikePage()
	c := newPageCodec()
	dst := make([]byte, 0, len(src))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var err error
	for range 3 {
		if dst, err = c.Encode(dst, src); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Fatalf("three encodes of a %d-byte page allocated %d bytes", len(src), got)
	}
	if len(c.idle) != 1 {
		t.Fatalf("%d idle encoders after sequential encodes, want the one reused", len(c.idle))
	}
}
