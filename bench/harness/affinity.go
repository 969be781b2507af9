package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pinSelf keeps every thread of the harness (the query probes) on the CPUs
// of list, a taskset list such as "1" or "1-3,5". Left to the kernel, a
// probe's thread woke on the server's CPU and took it from the server
// between the request and the response, counted as the server's latency;
// a real client runs on another machine. Threads started later inherit
// the mask of the thread that starts them.
func pinSelf(list string) error {
	var set unix.CPUSet
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return fmt.Errorf("CPU list %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return fmt.Errorf("CPU list %q: %w", list, err)
			}
		}
		for cpu := a; cpu <= b; cpu++ {
			set.Set(cpu)
		}
	}
	tids, err := readTasks()
	if err != nil {
		return err
	}
	for _, tid := range tids {
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pinning thread %d to CPUs %s: %w", tid, list, err)
		}
	}
	return nil
}

// readTasks lists the ids of the process's threads.
func readTasks() ([]int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("listing the harness's threads: %w", err)
	}
	var tids []int
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
