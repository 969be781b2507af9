package periodic

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// Run calls the task on every tick, hands its failures on, and returns
// once ctx ends; a failure caused by the end is not reported.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	failures := make(chan error, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, time.Millisecond, func(ctx context.Context) error {
			switch calls.Add(1) {
			case 2:
				return errors.New("disk full")
			case 3:
				// The stop arrives while the task runs.
				cancel()
				return ctx.Err()
			}
			return nil
		}, func(err error) { failures <- err })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("task ran %d times, want 3 (no run after the context ended)", n)
	}
	close(failures)
	var got []string
	for err := range failures {
		got = append(got, err.Error())
	}
	if len(got) != 1 || got[0] != "disk full" {
		t.Errorf("failures %q, want [disk full]", got)
	}
}

// Run waits a whole interval before the first call: the owners run their
// task at start themselves when they need it then.
func TestRunWaitsAnIntervalFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var calls atomic.Int32
	Run(ctx, time.Hour, func(context.Context) error { calls.Add(1); return nil }, func(error) {})
	if n := calls.Load(); n != 0 {
		t.Errorf("task ran %d times before its first interval", n)
	}
}
