// Package quickhash places byte strings in small caches: a hash of the
// length and the first and last eight bytes (all of it when shorter),
// cheaper than hashing every byte. Strings that differ only in the middle
// collide, which a cache pays for with the lookup it would have saved;
// it is not for maps or anything where collisions cost more.
package quickhash

import "encoding/binary"

// Bytes hashes b; its high bits are the best spread.
func Bytes(b []byte) uint64 {
	h := uint64(len(b))
	if len(b) >= 8 {
		h ^= binary.LittleEndian.Uint64(b) * 0x9e3779b97f4a7c15
		h ^= binary.LittleEndian.Uint64(b[len(b)-8:]) * 0xc2b2ae3d27d4eb4f
	} else {
		for _, c := range b {
			h = h*0x100000001b3 ^ uint64(c)
		}
		h *= 0x9e3779b97f4a7c15
	}
	h ^= h >> 31
	return h * 0xff51afd7ed558ccd
}
