package priority

import (
	"runtime"
	"testing"
)

func TestRaiseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(1)
	if before, after := RaiseProcs(3); before != 1 || after != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Fatalf("from 1 with floor 3: before %d, after %d, GOMAXPROCS %d; want 1, 3, 3", before, after, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(5)
	if before, after := RaiseProcs(3); before != 5 || after != 5 || runtime.GOMAXPROCS(0) != 5 {
		t.Fatalf("from 5 with floor 3: before %d, after %d, GOMAXPROCS %d; the floor must never lower it", before, after, runtime.GOMAXPROCS(0))
	}
}

func TestRaiseProcsLeavesAnExplicitGOMAXPROCS(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	if before, after := RaiseProcs(4); before != 1 || after != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("GOMAXPROCS=1 set by the operator: before %d, after %d, GOMAXPROCS %d; want it left at 1", before, after, runtime.GOMAXPROCS(0))
	}
}

func TestCPUsIgnoresTheFloor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "")
	want := CPUs()
	runtime.GOMAXPROCS(1)
	RaiseProcs(want + 3)
	if CPUs() != want {
		t.Fatalf("CPUs() = %d after raising GOMAXPROCS to %d, want %d (what the runtime found at start)", CPUs(), want+3, want)
	}
}
