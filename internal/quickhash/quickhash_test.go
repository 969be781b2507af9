package quickhash

import (
	"fmt"
	"testing"
)

// Typical cache keys (attribute keys, short values, paths with ids) spread
// over the top bits: 1000 distinct paths in 64 slots leave no slot empty
// and none with more than three times its share.
func TestBytesSpreads(t *testing.T) {
	var slots [64]int
	for i := 0; i < 1000; i++ {
		slots[Bytes([]byte(fmt.Sprintf("/api/orders/%d", 10000+i*7)))>>58]++
	}
	for i, n := range slots {
		if n == 0 || n > 3*1000/64 {
			t.Fatalf("slot %d holds %d of 1000 keys: %v", i, n, slots)
		}
	}
	if Bytes([]byte("GET")) == Bytes([]byte("PUT")) || Bytes(nil) == Bytes([]byte{0}) {
		t.Fatal("short strings collide")
	}
}
