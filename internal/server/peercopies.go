package server

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
)

// The copies of down peers' data under data_dir/peers are a cache of the
// bucket: anything deleted is downloaded again when a query needs it. They
// are kept within cluster.peer_copies_max_bytes by deleting the least
// recently used units first, never the one used last (a bound smaller
// than one unit would otherwise download it for every query). A unit is
// one day file, or a peer's findings as a whole: a findings query reads
// every segment of the replica, so dropping some would only have them
// downloaded again at once.

// findingsUnit names a peer's findings among its units.
const findingsUnit = "findings"

// peerCopiesDropAfter is how long a peer must answer the liveness probes
// again before its copies are deleted: a peer that restarts, or flaps,
// finds its copies still there if it stops again.
var peerCopiesDropAfter = 10 * time.Minute

// peerCopiesCheck is how often the copies are measured, trimmed, and
// checked for peers that answer again.
var peerCopiesCheck = 30 * time.Second

// peerCopiesBound is the byte bound of data_dir/peers: the configured one,
// else a quarter of storage.max_disk_bytes (0: none).
func peerCopiesBound(cfg config.Config) int64 {
	if cfg.Cluster.PeerCopiesMaxBytes > 0 {
		return cfg.Cluster.PeerCopiesMaxBytes
	}
	return cfg.Storage.MaxDiskBytes / 4
}

// copyUnit is what is deleted of the copies at once.
type copyUnit struct {
	key   string // <peer>/findings, <peer>/<day file>, or <peer> for a directory no replica has open
	peer  string
	paths []string
	bytes int64
	used  time.Time
}

func (p *peerReplicas) touch(key string) {
	p.mu.Lock()
	p.used[key] = time.Now()
	p.mu.Unlock()
}

// units lists the copies' units and the bytes under data_dir/peers.
func (p *peerReplicas) units() ([]copyUnit, int64) {
	des, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, 0
	}
	var out []copyUnit
	var total int64
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		peer, base := de.Name(), filepath.Join(p.dir, de.Name())
		size := dirBytes(base)
		total += size
		p.mu.Lock()
		rep := p.m[peer]
		p.mu.Unlock()
		if rep == nil {
			// Left by an earlier run: nothing reads it until the peer is
			// down again.
			out = append(out, copyUnit{key: peer, peer: peer, paths: []string{base}, bytes: size})
			continue
		}
		findings := []string{filepath.Join(base, "findings"), filepath.Join(base, "spool")}
		out = append(out, copyUnit{key: peer + "/" + findingsUnit, peer: peer, paths: findings,
			bytes: dirBytes(findings[0]) + dirBytes(findings[1])})
		for _, set := range rep.sets {
			files, _ := os.ReadDir(set.Dir)
			for _, f := range files {
				info, err := f.Info()
				if _, ok := set.Day(f.Name()); !ok || err != nil || f.IsDir() {
					continue
				}
				out = append(out, copyUnit{key: peer + "/" + f.Name(), peer: peer,
					paths: []string{filepath.Join(set.Dir, f.Name())}, bytes: info.Size()})
			}
		}
	}
	p.mu.Lock()
	for i := range out {
		out[i].used = p.used[out[i].key]
	}
	p.mu.Unlock()
	return out, total
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// trim measures the copies and deletes the least recently used units
// while they exceed the bound. A trim already running makes this one
// unnecessary.
func (p *peerReplicas) trim() {
	if !p.trimMu.TryLock() {
		return
	}
	defer p.trimMu.Unlock()
	units, total := p.units()
	if p.max > 0 && total > p.max && len(units) > 1 {
		slices.SortFunc(units, func(a, b copyUnit) int { return a.used.Compare(b.used) })
		for _, u := range units[:len(units)-1] {
			if total <= p.max {
				break
			}
			if p.evict(u) {
				total -= u.bytes
				p.evicted.Inc()
			}
		}
	}
	p.bytes.Store(total)
}

// evict deletes a unit's files, unless a query is reading the peer's
// copies right now (the next trim tries again).
func (p *peerReplicas) evict(u copyUnit) bool {
	p.mu.Lock()
	rep := p.m[u.peer]
	if rep == nil {
		// No replica: the lock keeps one from being opened meanwhile.
		defer p.mu.Unlock()
		return u.key == u.peer && p.remove(u) // else its replica was dropped meanwhile
	}
	p.mu.Unlock()
	if u.key == u.peer || !rep.use.TryLock() {
		return false
	}
	defer rep.use.Unlock()
	if u.key == u.peer+"/"+findingsUnit {
		if err := rep.closeFindings(); err != nil {
			p.log.Warn("closing a peer's findings copy", "peer", u.peer, "err", err)
		}
	} else {
		rep.days.forget()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remove(u)
}

// remove deletes a unit's files; p.mu is held.
func (p *peerReplicas) remove(u copyUnit) bool {
	for _, path := range u.paths {
		if err := os.RemoveAll(path); err != nil {
			p.log.Warn("deleting a peer's copy", "path", path, "err", err)
			return false
		}
	}
	delete(p.used, u.key)
	p.log.Debug("peer copy evicted", "unit", u.key, "bytes", u.bytes)
	return true
}

// watch measures and trims the copies every peerCopiesCheck, and deletes
// those of peers that have answered the liveness probes (up) for
// peerCopiesDropAfter, until ctx ends.
func (p *peerReplicas) watch(ctx context.Context, up func(peer string) bool) {
	t := time.NewTicker(peerCopiesCheck)
	defer t.Stop()
	for {
		p.dropAnswering(up, time.Now())
		p.trim()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dropAnswering deletes the copies of the peers that have answered for
// peerCopiesDropAfter as of now.
func (p *peerReplicas) dropAnswering(up func(peer string) bool, now time.Time) {
	des, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, de := range des {
		peer := de.Name()
		if !de.IsDir() {
			continue
		}
		p.mu.Lock()
		since, seen := p.upSince[peer]
		switch {
		case !up(peer):
			delete(p.upSince, peer)
		case !seen:
			p.upSince[peer] = now
		case now.Sub(since) >= peerCopiesDropAfter:
			p.dropPeer(peer)
		}
		p.mu.Unlock()
	}
}

// dropPeer closes a peer's replica and deletes its copies, unless a query
// reads them right now; p.mu is held.
func (p *peerReplicas) dropPeer(peer string) {
	if rep := p.m[peer]; rep != nil {
		if !rep.use.TryLock() {
			return
		}
		defer rep.use.Unlock()
		if err := rep.closeFindings(); err != nil {
			p.log.Warn("closing a peer's findings copy", "peer", peer, "err", err)
		}
		delete(p.m, peer)
	}
	if err := os.RemoveAll(filepath.Join(p.dir, peer)); err != nil {
		p.log.Warn("deleting the copies of a peer that answers again", "peer", peer, "err", err)
		return
	}
	for key := range p.used {
		if key == peer || strings.HasPrefix(key, peer+"/") {
			delete(p.used, key)
		}
	}
	delete(p.upSince, peer)
	p.log.Info("peer answers again: its copies are deleted", "peer", peer)
}

// watchPeerCopies runs p.watch in the background with members' view of
// which peers answer.
func (s *Server) watchPeerCopies(p *peerReplicas, members *cluster.Members) {
	if p == nil || members == nil {
		return
	}
	s.background = append(s.background, func(ctx context.Context) { p.watch(ctx, members.Up) })
}

// forget closes the history stores, which reopen over the day files left
// (and downloaded again) at the next query.
func (r *dayReplica) forget() {
	r.mu.Lock()
	clear(r.history)
	r.mu.Unlock()
}
