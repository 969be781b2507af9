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

// SnapshotFile is the file in Options.Dir that holds the baselines (a
// node copies it to object storage).
const SnapshotFile = snapshotName

// distJSON is one key: its baseline (the version 1 fields) and, since
// version 2, its open window and quarantine, so a restart neither lets an
// ongoing incident into the baseline nor forgets how long it has lasted.
type distJSON struct {
	A    string    `json:"a"`
	B    string    `json:"b"`
	T    int64     `json:"t"`
	N    float64   `json:"n"`
	Errs float64   `json:"e,omitempty"`
	Sum  float64   `json:"s"`
	H    []float64 `json:"h"` // bucket, weight, bucket, weight…

	Win  *partJSON       `json:"win,omitempty"`
	Quar *quarantineJSON `json:"quar,omitempty"`
}

type partJSON struct {
	Start int64     `json:"start"`
	T     int64     `json:"t,omitempty"`
	N     float64   `json:"n"`
	Errs  float64   `json:"e,omitempty"`
	Sum   float64   `json:"s"`
	H     []float64 `json:"h"`
}

type quarantineJSON struct {
	Part      partJSON `json:"d"`
	Last      int64    `json:"last"`
	Anomalous int      `json:"anomalous"`
	Normal    int      `json:"normal"`
	Reason    string   `json:"reason"`
}

func histJSON(h *[tsdb.NumBuckets]float32) []float64 {
	var out []float64
	for i, w := range h {
		if w > 0 {
			out = append(out, float64(i), float64(w))
		}
	}
	return out
}

func histFrom(h *[tsdb.NumBuckets]float32, in []float64) {
	for i := 0; i+1 < len(in); i += 2 {
		if b := int(in[i]); b >= 0 && b < tsdb.NumBuckets {
			h[b] = float32(in[i+1])
		}
	}
}

func partOf(d *dist, start int64) partJSON {
	return partJSON{Start: start, T: d.t, N: d.n, Errs: d.errs, Sum: d.sum, H: histJSON(&d.h)}
}

func (p *partJSON) dist() dist {
	d := dist{t: p.T, n: p.N, errs: p.Errs, sum: p.Sum}
	histFrom(&d.h, p.H)
	return d
}

type kidJSON struct {
	S       string  `json:"s"`
	O       string  `json:"o"`
	Calls   float64 `json:"c"`
	Present float64 `json:"p"`
}

type parentJSON struct {
	A     string     `json:"a"`
	B     string     `json:"b"`
	T     int64      `json:"t"`
	N     float64    `json:"n"`
	Kids  []kidJSON  `json:"kids"`
	Pairs []pairJSON `json:"pairs,omitempty"`
}

// pairJSON is a pairSeen of targets (AS, AO) < (BS, BO).
type pairJSON struct {
	AS       string  `json:"as"`
	AO       string  `json:"ao"`
	BS       string  `json:"bs"`
	BO       string  `json:"bo"`
	Both     float64 `json:"n"`
	Together float64 `json:"tg"`
	AFirst   float64 `json:"af"`
	BFirst   float64 `json:"bf"`
}

type snapshot struct {
	Version    int          `json:"version"`
	Ops        []distJSON   `json:"ops"`
	Stmts      []distJSON   `json:"stmts"`
	SpanCounts []distJSON   `json:"span_counts"`
	Children   []parentJSON `json:"children"`
}

func distsJSON(m map[key]*series) []distJSON {
	out := make([]distJSON, 0, len(m))
	for k, sr := range m {
		d := &sr.base
		dj := distJSON{A: k.a, B: k.b, T: d.t, N: d.n, Errs: d.errs, Sum: d.sum, H: histJSON(&d.h)}
		if sr.win.n > 0 {
			w := partOf(&sr.win, sr.winStart)
			dj.Win = &w
		}
		if q := sr.q; q != nil {
			dj.Quar = &quarantineJSON{Part: partOf(&q.d, q.since), Last: q.last, Anomalous: q.anomalous, Normal: q.normal, Reason: q.reason}
		}
		out = append(out, dj)
	}
	return out
}

func distsFrom(in []distJSON) map[key]*series {
	out := make(map[key]*series, len(in))
	for _, dj := range in {
		sr := &series{base: dist{t: dj.T, n: dj.N, errs: dj.Errs, sum: dj.Sum}}
		histFrom(&sr.base.h, dj.H)
		if dj.Win != nil {
			sr.win, sr.winStart = dj.Win.dist(), dj.Win.Start
		}
		if qj := dj.Quar; qj != nil {
			sr.q = &quarantine{d: qj.Part.dist(), since: qj.Part.Start, last: qj.Last,
				anomalous: qj.Anomalous, normal: qj.Normal, reason: qj.Reason}
		}
		out[key{dj.A, dj.B}] = sr
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
	snap := snapshot{Version: 2, Ops: distsJSON(b.ops), Stmts: distsJSON(b.stmts), SpanCounts: distsJSON(b.spanCounts)}
	for k, p := range b.children {
		pj := parentJSON{A: k.a, B: k.b, T: p.t, N: p.n}
		for kk, kd := range p.kids {
			pj.Kids = append(pj.Kids, kidJSON{S: kk.a, O: kk.b, Calls: kd.calls, Present: kd.present})
		}
		for pk, ps := range p.pairs {
			pj.Pairs = append(pj.Pairs, pairJSON{AS: pk[0].a, AO: pk[0].b, BS: pk[1].a, BO: pk[1].b,
				Both: ps.both, Together: ps.together, AFirst: ps.aFirst, BFirst: ps.bFirst})
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
		if len(pj.Pairs) > 0 {
			p.pairs = make(map[[2]key]*pairSeen, len(pj.Pairs))
		}
		for _, q := range pj.Pairs {
			p.pairs[[2]key{{q.AS, q.AO}, {q.BS, q.BO}}] = &pairSeen{both: q.Both, together: q.Together, aFirst: q.AFirst, bFirst: q.BFirst}
		}
		b.children[key{pj.A, pj.B}] = p
	}
	return nil
}
