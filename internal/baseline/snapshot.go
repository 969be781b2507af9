package baseline

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tracedx/tracedx/internal/red/tsdb"
)

const snapshotName = "baseline.json.gz"

type distJSON struct {
	A    string    `json:"a"`
	B    string    `json:"b"`
	T    int64     `json:"t"`
	N    float64   `json:"n"`
	Errs float64   `json:"e,omitempty"`
	Sum  float64   `json:"s"`
	H    []float64 `json:"h"` // bucket, weight, bucket, weight…
}

type kidJSON struct {
	S       string  `json:"s"`
	O       string  `json:"o"`
	Calls   float64 `json:"c"`
	Present float64 `json:"p"`
}

type parentJSON struct {
	A    string    `json:"a"`
	B    string    `json:"b"`
	T    int64     `json:"t"`
	N    float64   `json:"n"`
	Kids []kidJSON `json:"kids"`
}

type snapshot struct {
	Version    int          `json:"version"`
	Ops        []distJSON   `json:"ops"`
	Stmts      []distJSON   `json:"stmts"`
	SpanCounts []distJSON   `json:"span_counts"`
	Children   []parentJSON `json:"children"`
}

func distsJSON(m map[key]*dist) []distJSON {
	out := make([]distJSON, 0, len(m))
	for k, d := range m {
		dj := distJSON{A: k.a, B: k.b, T: d.t, N: d.n, Errs: d.errs, Sum: d.sum}
		for i, w := range d.h {
			if w > 0 {
				dj.H = append(dj.H, float64(i), float64(w))
			}
		}
		out = append(out, dj)
	}
	return out
}

func distsFrom(in []distJSON) map[key]*dist {
	out := make(map[key]*dist, len(in))
	for _, dj := range in {
		d := &dist{t: dj.T, n: dj.N, errs: dj.Errs, sum: dj.Sum}
		for i := 0; i+1 < len(dj.H); i += 2 {
			if b := int(dj.H[i]); b >= 0 && b < tsdb.NumBuckets {
				d.h[b] = float32(dj.H[i+1])
			}
		}
		out[key{dj.A, dj.B}] = d
	}
	return out
}

// Flush writes the snapshot if anything changed since the last one
// (temp file + rename, so a crash never leaves a torn snapshot).
func (b *Baselines) Flush() error {
	if b.opt.Dir == "" {
		return nil
	}
	b.mu.Lock()
	if !b.dirty {
		b.mu.Unlock()
		return nil
	}
	snap := snapshot{Version: 1, Ops: distsJSON(b.ops), Stmts: distsJSON(b.stmts), SpanCounts: distsJSON(b.spanCounts)}
	for k, p := range b.children {
		pj := parentJSON{A: k.a, B: k.b, T: p.t, N: p.n}
		for kk, kd := range p.kids {
			pj.Kids = append(pj.Kids, kidJSON{S: kk.a, O: kk.b, Calls: kd.calls, Present: kd.present})
		}
		snap.Children = append(snap.Children, pj)
	}
	b.dirty = false
	b.mu.Unlock()

	if err := b.write(&snap); err != nil {
		b.mu.Lock()
		b.dirty = true
		b.mu.Unlock()
		return err
	}
	return nil
}

func (b *Baselines) write(snap *snapshot) error {
	if err := os.MkdirAll(b.opt.Dir, 0o755); err != nil {
		return fmt.Errorf("baseline: create dir: %w", err)
	}
	final := filepath.Join(b.opt.Dir, snapshotName)
	f, err := os.CreateTemp(b.opt.Dir, snapshotName+".tmp*")
	if err != nil {
		return fmt.Errorf("baseline: snapshot: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	bw := bufio.NewWriterSize(f, 64<<10)
	zw, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	err = json.NewEncoder(zw).Encode(snap)
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), final)
	}
	if err != nil {
		return fmt.Errorf("baseline: write snapshot: %w", err)
	}
	return nil
}

func (b *Baselines) load() error {
	p := filepath.Join(b.opt.Dir, snapshotName)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open snapshot: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		b.log.Warn("baseline snapshot unreadable; starting empty", "path", p, "err", err)
		return nil
	}
	var snap snapshot
	if err := json.NewDecoder(zr).Decode(&snap); err != nil {
		b.log.Warn("baseline snapshot unreadable; starting empty", "path", p, "err", err)
		return nil
	}
	b.ops, b.stmts, b.spanCounts = distsFrom(snap.Ops), distsFrom(snap.Stmts), distsFrom(snap.SpanCounts)
	for _, pj := range snap.Children {
		p := &parent{t: pj.T, n: pj.N, kids: make(map[key]*kid, len(pj.Kids))}
		for _, kj := range pj.Kids {
			p.kids[key{kj.S, kj.O}] = &kid{calls: kj.Calls, present: kj.Present}
		}
		b.children[key{pj.A, pj.B}] = p
	}
	return nil
}
