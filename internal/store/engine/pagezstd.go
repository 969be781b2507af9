package engine

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/compress"
	pzstd "github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/format"
)

// pageWindow is the zstd window of Parquet pages. An encoder's history
// buffer is twice its window once an input spans more than one zstd block
// (128 KiB), which a dictionary page does (up to dictMaxBytes, 256 KiB):
// with parquet-go's codec, whose encoders have zstd's default 8 MiB
// window, every conversion allocated 16 MiB for it, the largest single
// buffer of a conversion at the maximum ingest rate. Pages are bounded by
// pageBufferSize and dictMaxBytes, so a window twice the larger bound
// still sees any page whole and compresses it as well.
const pageWindow = 512 << 10

// pageCodec is the zstd codec of the Parquet pages this engine writes.
// Reading does not go through it: parquet-go picks the decoder by the
// codec recorded in the file.
//
// It keeps one idle encoder. Parquet blocks are written by the maintenance
// loop, one at a time; keeping its encoder across collections, unlike a
// sync.Pool, spares rebuilding the encoder's tables (over 1 MiB) and
// history after every GC, which near the memory limit comes several times
// a second. Only one is kept: an idle encoder is live heap, which
// admission counts against ingest.
type pageCodec struct {
	idle chan *zstd.Encoder
	dec  pzstd.Codec
}

var _ compress.Codec = (*pageCodec)(nil)

func newPageCodec() *pageCodec {
	return &pageCodec{idle: make(chan *zstd.Encoder, 1), dec: pzstd.Codec{Level: pzstd.SpeedDefault}}
}

func (c *pageCodec) String() string { return "ZSTD" }

func (c *pageCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

func (c *pageCodec) Encode(dst, src []byte) ([]byte, error) {
	var e *zstd.Encoder
	select {
	case e = <-c.idle:
	default:
		var err error
		// Options as parquet-go's codec, but for the window.
		e, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(pageWindow), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		if err != nil {
			return dst[:0], fmt.Errorf("zstd encoder: %w", err)
		}
	}
	dst = e.EncodeAll(src, dst[:0])
	select {
	case c.idle <- e:
	default:
	}
	return dst, nil
}

func (c *pageCodec) Decode(dst, src []byte) ([]byte, error) {
	return c.dec.Decode(dst, src)
}
