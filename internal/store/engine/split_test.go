package engine

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go/format"
)

// columnEncodings lists, per column of a Parquet block, the encodings its
// chunks use.
func columnEncodings(t *testing.T, b *block) map[string][]format.Encoding {
	t.Helper()
	if b.pf == nil {
		t.Fatal("not a Parquet block")
	}
	out := map[string][]format.Encoding{}
	for _, rg := range b.pf.Metadata().RowGroups {
		for _, c := range rg.Columns {
			k := c.MetaData.PathInSchema[0]
			for _, enc := range c.MetaData.Encoding {
				if !slices.Contains(out[k], enc) {
					out[k] = append(out[k], enc)
				}
			}
		}
	}
	return out
}

// columnCodecs lists, per column of a Parquet block, the compression
// codecs of its chunks.
func columnCodecs(t *testing.T, b *block) map[string][]format.CompressionCodec {
	t.Helper()
	out := map[string][]format.CompressionCodec{}
	for _, rg := range b.pf.Metadata().RowGroups {
		for _, c := range rg.Columns {
			k := c.MetaData.PathInSchema[0]
			if !slices.Contains(out[k], c.MetaData.Codec) {
				out[k] = append(out[k], c.MetaData.Codec)
			}
		}
	}
	return out
}

// Encodings of the integer columns per generation of blocks:
// testdata/preSpillKeys is plain, testdata/splitDuration (written by the
// engine as of commit 37c9e07, 120 traces of scanTestSpans with seed
// 21/22) byte-stream-splits all three, and new blocks delta-pack duration
// without compression.
var (
	splitColumns = []string{"parent_idx", "start_off"}
	deltaColumns = []string{"duration"}
)

// Blocks of every generation give back the same spans, by id and by
// search: the encoding is per page, and the readers take it from there.
func TestIntColumnEncodingsReadAlike(t *testing.T) {
	spans := scanTestSpans(rand.New(rand.NewPCG(21, 22)), 120)
	oldEngine := func(testdata string) *Engine {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(testdata)); err != nil {
			t.Fatal(err)
		}
		return openT(t, Options{Dir: dir, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	}
	plain := oldEngine("testdata/preSpillKeys")
	defer plain.Close()
	split := oldEngine("testdata/splitDuration")
	defer split.Close()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	convertSpans(t, e, spans)

	for _, c := range []struct {
		name         string
		e            *Engine
		split, delta []string // columns byte-stream-split, delta-packed
	}{
		{"plain", plain, nil, nil},
		{"split", split, append(slices.Clone(splitColumns), deltaColumns...), nil},
		{"new", e, splitColumns, deltaColumns},
	} {
		s := c.e.snap()
		if len(s.blocks) != 1 {
			t.Fatalf("%s: %d blocks, want 1", c.name, len(s.blocks))
		}
		encs := columnEncodings(t, s.blocks[0])
		codecs := columnCodecs(t, s.blocks[0])
		s.release()
		for _, col := range append(slices.Clone(splitColumns), deltaColumns...) {
			if got, want := slices.Contains(encs[col], format.ByteStreamSplit), slices.Contains(c.split, col); got != want {
				t.Fatalf("%s block: %s encodings %v, byte-stream-split %v, want %v", c.name, col, encs[col], got, want)
			}
			delta := slices.Contains(c.delta, col)
			if got := slices.Contains(encs[col], format.DeltaBinaryPacked); got != delta {
				t.Fatalf("%s block: %s encodings %v, delta-binary-packed %v, want %v", c.name, col, encs[col], got, delta)
			}
			if got := slices.Equal(codecs[col], []format.CompressionCodec{format.Uncompressed}); got != delta {
				t.Fatalf("%s block: %s codecs %v, uncompressed %v, want %v", c.name, col, codecs[col], got, delta)
			}
		}
		checkAllTraces(t, c.e, spans)
		checkSearches(t, c.e, spans, rand.New(rand.NewPCG(5, 6)), 100)
	}
}
