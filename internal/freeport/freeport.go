// Package freeport names free loopback ports for servers whose address a
// test must know before they start: a cluster's static peer list, or a
// database run as another process.
//
// Asking the kernel with port 0 and closing the listener is not enough:
// such ports come from the ephemeral range, where any outgoing connection
// of a test running in parallel may take the port before the server binds
// it ("address already in use"). Ports below that range are never handed
// out to outgoing connections, so a port found free there stays free
// unless another test picks the same one.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the first port considered: below it live well-known and
// registered services a developer's machine may run.
const lowest = 10000

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports this process gave out, never twice
)

// Addr returns "127.0.0.1:<port>" of a port nothing listens on.
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t)))
}

// Port returns a loopback port nothing listens on, below the ephemeral
// range of outgoing connections.
func Port(t testing.TB) int {
	t.Helper()
	top := ephemeralStart()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(top-lowest)
		if handed[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		handed[p] = true
		return p
	}
	t.Fatalf("no free loopback port between %d and %d", lowest, top)
	return 0
}

// ephemeralStart is the first port of the kernel's range for outgoing
// connections (Linux's default when it cannot be read).
func ephemeralStart() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	var lo, hi int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &lo, &hi); err != nil || lo <= lowest+1000 {
		return linuxDefault
	}
	return lo
}
