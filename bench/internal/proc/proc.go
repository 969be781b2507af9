// Package proc reads what the benchmark harnesses measure of a server
// process on Linux, and finds free loopback ports for it.
package proc

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// FreeAddr returns a loopback address with a port nobody listens on.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// PeakRSSKB is the process's peak resident set (VmHWM), in KiB.
func PeakRSSKB(pid int) (int64, error) { return statusKB(pid, "VmHWM:") }

// RSSKB is the process's resident set now (VmRSS), in KiB.
func RSSKB(pid int) (int64, error) { return statusKB(pid, "VmRSS:") }

func statusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading process status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			if f := strings.Fields(line); len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
