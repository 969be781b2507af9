package ingest

import (
	"math/bits"
	"sync"
)

// requestPool holds the buffers gRPC requests are read into
// (pooledRequest). gRPC's default pool clears a buffer before handing it
// out and has no tier between 32 KiB and 1 MiB, so every request over 32
// KiB (a 500-span batch, a peer's joined forward) cleared a whole MiB
// only for the request's bytes to be copied over it: 4 % of a cluster
// node's CPU when forwarding. MaterializeToBuffer overwrites all it
// asks for, so these buffers are not cleared, and the tiers are every
// power of two up to the largest request.
var requestPool = &dirtyPool{}

const (
	minPoolExp = 12 // 4 KiB
	maxPoolExp = 25 // 32 MiB, above ingest's largest max_request_bytes default
)

// dirtyPool is a mem.BufferPool of power-of-two buffers whose old
// contents are left in place.
type dirtyPool struct {
	tiers [maxPoolExp - minPoolExp + 1]sync.Pool
}

func (p *dirtyPool) Get(length int) *[]byte {
	exp := max(bits.Len(uint(max(length, 1)-1)), minPoolExp)
	if exp > maxPoolExp {
		b := make([]byte, length)
		return &b
	}
	if b, ok := p.tiers[exp-minPoolExp].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<exp)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	exp := bits.Len(uint(c)) - 1
	if c == 0 || c != 1<<exp || exp < minPoolExp || exp > maxPoolExp {
		return
	}
	p.tiers[exp-minPoolExp].Put(b)
}
