package freeport

import (
	"net"
	"testing"
)

// The ports handed out are distinct, below the ephemeral range, and free:
// a server can bind each of them.
func TestPortsAreFreeDistinctAndBelowTheEphemeralRange(t *testing.T) {
	top := ephemeralStart()
	seen := map[int]bool{}
	for range 50 {
		p := Port(t)
		if p < lowest || p >= top {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, top)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	ln, err := net.Listen("tcp", Addr(t))
	if err != nil {
		t.Fatalf("binding a handed-out address: %v", err)
	}
	ln.Close()
}
