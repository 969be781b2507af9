package main

import (
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPinSelfPinsEveryThread(t *testing.T) {
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Skip("no affinity on this system:", err)
	}
	cpu := -1
	for i := 0; i < 1024 && cpu < 0; i++ {
		if before.IsSet(i) {
			cpu = i
		}
	}
	t.Cleanup(func() {
		for _, tid := range threads(t) {
			_ = unix.SchedSetaffinity(tid, &before)
		}
	})
	if err := pinSelf(strconv.Itoa(cpu)); err != nil {
		t.Fatal(err)
	}
	for _, tid := range threads(t) {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			continue // the thread exited
		}
		if got.Count() != 1 || !got.IsSet(cpu) {
			t.Fatalf("thread %d may run on %d CPUs, want only CPU %d", tid, got.Count(), cpu)
		}
	}
	// A thread the runtime starts now inherits the mask.
	done := make(chan int)
	go func() {
		runtime.LockOSThread()
		var got unix.CPUSet
		_ = unix.SchedGetaffinity(0, &got)
		done <- got.Count()
	}()
	if n := <-done; n != 1 {
		t.Fatalf("a new thread may run on %d CPUs", n)
	}
	if err := pinSelf("x"); err == nil {
		t.Fatal("pinSelf accepted the CPU list \"x\"")
	}
}

func threads(t *testing.T) []int {
	t.Helper()
	tids, err := readTasks()
	if err != nil {
		t.Fatal(err)
	}
	return tids
}
