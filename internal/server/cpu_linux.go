//go:build linux

package server

import (
	"syscall"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD (not in package syscall).
const rusageThread = 1

// threadCPU is the CPU time of the calling OS thread; meaningful for a
// goroutine that has called runtime.LockOSThread.
func threadCPU() (time.Duration, bool) { return rusage(rusageThread) }

// processCPU is the CPU time of the whole process.
func processCPU() (time.Duration, bool) { return rusage(syscall.RUSAGE_SELF) }

func rusage(who int) (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
