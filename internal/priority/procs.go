package priority

import (
	"os"
	"runtime"
)

// MinProcs is the number of Go processors (Ps) a server runs with at
// least, even on one CPU. With a single P a query that the network poller
// wakes waits until the goroutine holding the P blocks, is preempted
// (every 10 ms) or, when that goroutine sits in a blocking system call
// (the WAL's fdatasync, a block write), until the runtime's monitor takes
// the P back, which it checks every 20 µs to 10 ms: at 30k spans/s on one
// core that put trace by id at 25–300 ms p99. With spare Ps the query runs
// at once and the kernel's scheduler, which favours a thread that just
// woke, shares the CPU between the threads. Four rather than two because
// a WAL sync and a long CPU-bound stretch (a cut, a block conversion) can
// hold two Ps at the same moment. Spare Ps are idle nearly always; ingest
// CPU per span stayed within the noise (docs/performance.md).
const MinProcs = 4

// cpus is what the runtime chose at start: the CPUs the process may run
// on (affinity, cgroup limit) or the GOMAXPROCS environment variable.
var cpus = runtime.GOMAXPROCS(0)

// CPUs is the number of CPUs the process may use, as the runtime found
// them at start, whatever RaiseProcs did since. Work that sizes itself to
// the hardware (parallel reads, CPU shares) uses it, not GOMAXPROCS.
func CPUs() int { return cpus }

// RaiseProcs sets GOMAXPROCS to at least floor unless the GOMAXPROCS
// environment variable fixes it (an operator's explicit choice, and the
// way to turn the floor off: GOMAXPROCS=1). It reports the value before
// and after. Setting GOMAXPROCS stops the runtime from following later
// changes of the container's CPU limit, so it only ever raises it.
// GOMAXPROCS is process-wide: only the process's owner calls this.
func RaiseProcs(floor int) (before, after int) {
	before = runtime.GOMAXPROCS(0)
	if before >= floor || os.Getenv("GOMAXPROCS") != "" {
		return before, before
	}
	runtime.GOMAXPROCS(floor)
	return before, floor
}
