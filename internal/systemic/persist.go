package systemic

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// What survives a restart, and why: the decayed baselines and the buckets
// still inside the windows (without them every baseline pattern is blind
// for MinBaseline after a restart), the known exception types with their
// last sighting (without them new_error_type relearns for ErrorTypeWarmup,
// missing a type that is new then and reporting again one seen days ago),
// new exception types seen but not yet evaluated, the open finding keys
// (so a condition that lasts across the restart is not reported twice)
// and the start time (so warmup does not restart). Examples, attribute
// samples and the sub-minute stampede/auth rings are dropped: they refill
// within a minute.
//
// The downtime is cut out of the detector's timeline, on the observation
// clock: at the first Observe or Evaluate after a restore, every time in
// the restored state moves forward by the time nothing was observed, so
// baselines do not decay over hours nobody watched, a known exception type
// is remembered for ErrorTypeMemory of observed time and warmup is not
// restarted. Then:
//   - a gap up to the longest window (a restart, a deploy): the windows
//     hold the minutes before the stop followed by those after the start,
//     so a restart reads as neither a throughput drop nor a missing
//     service, and an ongoing regression stays detected and open;
//   - a longer gap: the windows' buckets land just outside the windows and
//     fold into the baselines at the next Evaluate (they were observed, so
//     they belong there), the windows restart empty, and throughput_drop
//     and missing_service wait one full window of fresh data before
//     judging (an empty window is not a drop, and traces assembled right
//     after a restart may lack the spans received before it).

// SnapshotFile is the file in Config.Dir that holds the detectors' state
// (a node copies it to object storage).
const SnapshotFile = snapshotFile

const (
	snapshotFile    = "systemic.gob.gz"
	snapshotVersion = 1
	// maxSnapshotSeries caps the series written per map: the maps grow
	// with endpoint cardinality, and a runaway span name must not make
	// every snapshot (and restart) slow. The busiest series are kept.
	maxSnapshotSeries = 20000
	// maxSnapshotErrTypes caps the known exception types written; the
	// most recently seen are kept.
	maxSnapshotErrTypes = 50000
)

type snapshot struct {
	Version int
	// Saved is the latest observation-clock time the detector had seen
	// (Observe or Evaluate): the point the restored timeline resumes from.
	Saved    time.Time
	Started  time.Time
	ErrTypes []snapErrType
	NewTypes []snapNewType
	Open     []snapOpen
	Ops      []snapSeries
	Roots    []snapSeries
}

type snapErrType struct {
	Service, Type string
	Last          time.Time
}

type snapNewType struct {
	Service, Type, Msg string
	Trace              model.TraceID
	Span               model.SpanID
	T                  time.Time
}

type snapOpen struct {
	Key   string
	Last  time.Time
	Close time.Duration
	// The stored finding and its last written version (update.go).
	Stored                    bool
	ID                        uint64
	Opened                    time.Time
	Trace, Service, Operation string
	Rev                       int
	Wrote                     time.Time
	Shown                     float64
	Sev                       string
}

type snapSeries struct {
	Service, Op string
	Created     time.Time
	Folded      int64
	BaseSec     float64
	Base        snapBucket
	Buckets     []snapIndexed
}

type snapIndexed struct {
	Idx int64
	B   snapBucket
}

// snapBucket stores the histogram sparsely: a 10 s bucket fills a handful
// of its 112 bins, and the copy is made under the detector's lock.
type snapBucket struct {
	N, Errs, Spans float64
	Bins           []uint8
	Counts         []float64
	Versions       map[string][2]float64 // n, spans
	Services       map[string]float64
}

func toSnapBucket(b *bucket) snapBucket {
	s := snapBucket{N: b.n, Errs: b.errs, Spans: b.spans}
	for i, c := range b.hist {
		if c != 0 {
			s.Bins = append(s.Bins, uint8(i))
			s.Counts = append(s.Counts, c)
		}
	}
	s.Versions, s.Services = bucketMixes(b)
	return s
}

func fromSnapBucket(s *snapBucket) (bucket, error) {
	b := bucket{n: s.N, errs: s.Errs, spans: s.Spans}
	if len(s.Bins) != len(s.Counts) {
		return b, fmt.Errorf("histogram with %d bins and %d counts", len(s.Bins), len(s.Counts))
	}
	for i, x := range s.Bins {
		if int(x) >= nBins {
			return b, fmt.Errorf("histogram bin %d out of range", x)
		}
		b.hist[x] = s.Counts[i]
	}
	if len(s.Versions) > 0 {
		b.versions = make(map[string]*vstat, len(s.Versions))
		for k, v := range s.Versions {
			b.versions[k] = &vstat{n: v[0], spans: v[1]}
		}
	}
	if len(s.Services) > 0 {
		b.services = s.Services
	}
	return b, nil
}

func toSnapSeries(s *series) snapSeries {
	out := snapSeries{Service: s.key.service, Op: s.key.op, Created: s.created, Folded: s.folded,
		BaseSec: s.baseSec, Base: toSnapBucket(&s.base), Buckets: make([]snapIndexed, 0, len(s.buckets))}
	for i, b := range s.buckets {
		out.Buckets = append(out.Buckets, snapIndexed{Idx: i, B: toSnapBucket(b)})
	}
	return out
}

// weight orders series for the cap: baseline plus window requests.
func (s *series) weight() float64 {
	w := s.base.n
	for _, b := range s.buckets {
		w += b.n
	}
	return w
}

// capture copies the state; encoding happens outside the lock. Series
// are copied a few dozen at a time so that Observe, which waits for the
// same lock in the analysis worker, never waits long even with thousands
// of endpoints; a snapshot is then not one instant, which does not matter
// for baselines. Saved is the observation clock (lastSeen), never the
// wall clock: resume measures the downtime on the clock the windows use.
func (d *Detector) capture() *snapshot {
	for {
		snap, resumes := d.captureOnce()
		d.mu.Lock()
		same := d.resumes == resumes
		d.mu.Unlock()
		if same {
			return snap
		}
		// The downtime was cut out while copying, so part of the copy is
		// on the old timeline. Rare (a snapshot racing the first trace
		// after a restore); copy everything again.
	}
}

// captureOnce copies the state, and returns the resume count it started at.
func (d *Detector) captureOnce() (*snapshot, int) {
	d.mu.Lock()
	snap := &snapshot{Version: snapshotVersion, Saved: d.lastSeen, Started: d.started}
	for k, t := range d.errTypes {
		snap.ErrTypes = append(snap.ErrTypes, snapErrType{Service: k[0], Type: k[1], Last: t})
	}
	if len(snap.ErrTypes) > maxSnapshotErrTypes {
		slices.SortFunc(snap.ErrTypes, func(a, b snapErrType) int { return b.Last.Compare(a.Last) })
		snap.ErrTypes = snap.ErrTypes[:maxSnapshotErrTypes]
	}
	for _, nt := range d.newTypes {
		snap.NewTypes = append(snap.NewTypes, snapNewType{Service: nt.service, Type: nt.typ, Msg: nt.msg,
			Trace: nt.r.trace, Span: nt.r.span, T: nt.r.t})
	}
	for k, o := range d.open {
		snap.Open = append(snap.Open, snapOpen{Key: k, Last: o.last, Close: o.close, Stored: o.stored, ID: o.id, Opened: o.opened,
			Trace: o.trace, Service: o.service, Operation: o.operation, Rev: o.rev, Wrote: o.wrote, Shown: o.shown, Sev: string(o.sev)})
	}
	ops, roots := snapSeriesOf(d.ops), snapSeriesOf(d.roots)
	resumes := d.resumes
	d.mu.Unlock()
	copyAll := func(list []*series) []snapSeries {
		out := make([]snapSeries, 0, len(list))
		for len(list) > 0 {
			n := min(len(list), 64) // ~4 ms under the lock at 2000 endpoints
			d.mu.Lock()
			for _, s := range list[:n] {
				out = append(out, toSnapSeries(s))
			}
			d.mu.Unlock()
			list = list[n:]
		}
		return out
	}
	snap.Ops, snap.Roots = copyAll(ops), copyAll(roots)
	return snap, resumes
}

// snapSeriesOf lists the series worth writing, the busiest first when
// over the cap.
func snapSeriesOf(m map[opKey]*series) []*series {
	list := make([]*series, 0, len(m))
	for _, s := range m {
		// A series with nothing left (its traffic stopped ~20 half-lives
		// ago) teaches a restored detector nothing.
		if len(s.buckets) == 0 && s.base.n < 1e-3 {
			continue
		}
		list = append(list, s)
	}
	if len(list) > maxSnapshotSeries {
		slices.SortFunc(list, func(a, b *series) int { return cmp.Compare(b.weight(), a.weight()) })
		list = list[:maxSnapshotSeries]
	}
	return list
}

// Snapshot writes the state to Config.Dir now (a no-op without a Dir).
// Run calls it every SnapshotInterval and when it ends. The file is
// replaced atomically: a crash while writing leaves the previous one.
func (d *Detector) Snapshot() error {
	if d.cfg.Dir == "" {
		return nil
	}
	// One writer at a time, so an older capture never replaces a newer one.
	d.snapMu.Lock()
	defer d.snapMu.Unlock()
	snap := d.capture()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level cannot fail
	if err := gob.NewEncoder(zw).Encode(snap); err != nil {
		return fmt.Errorf("systemic snapshot: encoding: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("systemic snapshot: compressing: %w", err)
	}
	return writeAtomic(d.cfg.Dir, snapshotFile, buf.Bytes())
}

func writeAtomic(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("systemic snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("systemic snapshot: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	// CreateTemp makes 0600 files; the rest of the data directory is 0644.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("systemic snapshot: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("systemic snapshot: writing %s: %w", tmp.Name(), err)
	}
	// The data must be on disk before the rename makes it the snapshot,
	// or a crash could leave a complete name over incomplete content.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("systemic snapshot: syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("systemic snapshot: closing %s: %w", tmp.Name(), err)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("systemic snapshot: replacing %s: %w", final, err)
	}
	// The rename is durable only once the directory is.
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("systemic snapshot: syncing %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("systemic snapshot: syncing %s: %w", dir, err)
	}
	return nil
}

// restore loads the snapshot in Config.Dir, if any. A snapshot that cannot
// be read is moved aside (kept for inspection) and the detector starts
// empty: losing history must not stop the server.
func (d *Detector) restore() {
	if d.cfg.Dir == "" {
		return
	}
	path := filepath.Join(d.cfg.Dir, snapshotFile)
	snap, err := readSnapshot(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err == nil {
		err = d.load(snap)
	}
	if err == nil {
		return
	}
	aside := path + ".corrupt"
	if rerr := os.Rename(path, aside); rerr != nil {
		d.log.Warn("unreadable systemic snapshot, starting without history", "path", path, "err", err, "rename_err", rerr)
		return
	}
	d.log.Warn("unreadable systemic snapshot moved aside, starting without history", "path", path, "moved_to", aside, "err", err)
}

func readSnapshot(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("systemic snapshot %s: %w", path, err)
	}
	var snap snapshot
	if err := gob.NewDecoder(zr).Decode(&snap); err != nil {
		return nil, fmt.Errorf("systemic snapshot %s: %w", path, err)
	}
	// Reading to the end checks the gzip checksum: a flipped bit inside
	// the stream must not be restored as history.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, fmt.Errorf("systemic snapshot %s: %w", path, err)
	}
	if snap.Version != snapshotVersion {
		return nil, fmt.Errorf("systemic snapshot %s: format version %d, this build reads %d", path, snap.Version, snapshotVersion)
	}
	return &snap, nil
}

// load installs a snapshot as it was written; the downtime is cut out at
// the first observation (resume), when the observation clock is known.
// On error the detector is left empty.
func (d *Detector) load(snap *snapshot) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	install := func(m map[opKey]*series, list []snapSeries) error {
		for i := range list {
			ss := &list[i]
			base, err := fromSnapBucket(&ss.Base)
			if err != nil {
				return fmt.Errorf("series %s %s: %w", ss.Service, ss.Op, err)
			}
			s := &series{key: opKey{ss.Service, ss.Op}, created: ss.Created, folded: ss.Folded,
				baseSec: ss.BaseSec, base: base, buckets: make(map[int64]*bucket, len(ss.Buckets))}
			for j := range ss.Buckets {
				b, err := fromSnapBucket(&ss.Buckets[j].B)
				if err != nil {
					return fmt.Errorf("series %s %s: %w", ss.Service, ss.Op, err)
				}
				s.buckets[ss.Buckets[j].Idx] = &b
			}
			if s.base.n >= float64(d.cfg.MinSamples) {
				s.baseP95MS = quantileMS(&s.base.hist, 0.95)
			}
			m[s.key] = s
		}
		return nil
	}
	err := install(d.ops, snap.Ops)
	if err == nil {
		err = install(d.roots, snap.Roots)
	}
	if err != nil {
		clear(d.ops)
		clear(d.roots)
		return err
	}
	d.started = snap.Started
	d.lastSeen = snap.Saved
	for _, e := range snap.ErrTypes {
		d.errTypes[[2]string{e.Service, e.Type}] = e.Last
	}
	for _, nt := range snap.NewTypes {
		d.newTypes = append(d.newTypes, newType{service: nt.Service, typ: nt.Type, msg: nt.Msg,
			r: ref{trace: nt.Trace, span: nt.Span, t: nt.T}})
	}
	for _, o := range snap.Open {
		d.open[o.Key] = &openKey{last: o.Last, close: o.Close, stored: o.Stored, id: o.ID, opened: o.Opened, trace: o.Trace,
			service: o.Service, operation: o.Operation, rev: o.Rev, wrote: o.Wrote, shown: o.Shown, sev: analyze.Severity(o.Sev)}
	}
	d.resumePending = !snap.Saved.IsZero()
	d.log.Info("systemic history restored", "operations", len(snap.Ops), "flows", len(snap.Roots),
		"error_types", len(snap.ErrTypes), "open_findings", len(snap.Open), "saved_at", snap.Saved)
	return nil
}

// resume cuts the downtime out of the restored timeline (see the comment
// at the top of this file). now is the first observation-clock time after
// the restore. Called with d.mu held.
func (d *Detector) resume(now time.Time) {
	d.resumePending = false
	d.resumes++
	gapBuckets := d.idx(now) - d.idx(d.lastSeen)
	if gapBuckets <= 0 {
		return
	}
	// Whole buckets, so bucket boundaries stay where idx puts them.
	gap := time.Duration(gapBuckets) * d.cfg.Bucket
	windowBuckets := int64(d.cfg.maxWindow() / d.cfg.Bucket)
	seriesShift := gapBuckets
	if gapBuckets > windowBuckets {
		// The newest restored bucket lands at the edge of the longest
		// window: out of every window, folded at the next Evaluate.
		seriesShift = gapBuckets - windowBuckets
		d.windowsFrom = now
	}
	shift := func(t time.Time, by time.Duration) time.Time {
		if t.IsZero() {
			return t
		}
		return t.Add(by)
	}
	d.started = shift(d.started, gap)
	for k, t := range d.errTypes {
		d.errTypes[k] = shift(t, gap)
	}
	for i := range d.newTypes {
		d.newTypes[i].r.t = shift(d.newTypes[i].r.t, gap)
	}
	// Open keys move by the whole gap even when the windows restart
	// empty: a condition still true once they refill is the same finding.
	for _, o := range d.open {
		o.last, o.wrote = shift(o.last, gap), shift(o.wrote, gap)
	}
	seriesGap := time.Duration(seriesShift) * d.cfg.Bucket
	for _, m := range []map[opKey]*series{d.ops, d.roots} {
		for _, s := range m {
			s.created = shift(s.created, seriesGap)
			s.folded += seriesShift
			moved := make(map[int64]*bucket, len(s.buckets))
			for i, b := range s.buckets {
				moved[i+seriesShift] = b
			}
			s.buckets = moved
		}
	}
	d.log.Info("systemic timeline resumed after downtime", "downtime", gap, "windows_kept", d.windowsFrom.IsZero())
}

// seen advances the observation clock; the first call after a restore
// cuts out the downtime. Called with d.mu held.
func (d *Detector) seen(now time.Time) {
	if d.resumePending {
		d.resume(now)
	}
	if now.After(d.lastSeen) {
		d.lastSeen = now
	}
}
