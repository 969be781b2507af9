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

var splitColumns = []string{"parent_idx", "start_off", "duration"}

// New blocks store parent_idx, start_off and duration byte-stream-split;
// blocks written before (testdata/preSpillKeys, plain) and new ones give
// back the same spans, by id and by search.
func TestSplitColumnsReadLikePlainOnes(t *testing.T) {
	spans := scanTestSpans(rand.New(rand.NewPCG(21, 22)), 120)

	oldDir := t.TempDir()
	if err := os.CopyFS(oldDir, os.DirFS("testdata/preSpillKeys")); err != nil {
		t.Fatal(err)
	}
	old := openT(t, Options{Dir: oldDir, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	defer old.Close()

	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	convertSpans(t, e, spans)

	for _, c := range []struct {
		name  string
		e     *Engine
		split bool
	}{{"old", old, false}, {"new", e, true}} {
		s := c.e.snap()
		if len(s.blocks) != 1 {
			t.Fatalf("%s: %d blocks, want 1", c.name, len(s.blocks))
		}
		encs := columnEncodings(t, s.blocks[0])
		s.release()
		for _, col := range splitColumns {
			if got := slices.Contains(encs[col], format.ByteStreamSplit); got != c.split {
				t.Fatalf("%s block: %s encodings %v, byte-stream-split %v, want %v", c.name, col, encs[col], got, c.split)
			}
		}
		checkAllTraces(t, c.e, spans)
		checkSearches(t, c.e, spans, rand.New(rand.NewPCG(5, 6)), 100)
	}
}
