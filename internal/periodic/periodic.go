// Package periodic runs a background task every interval until its
// context ends: flushes, snapshots, uploads, expiry and listings that
// log a failure and try again at the next tick.
package periodic

import (
	"context"
	"time"
)

// Run calls task every interval, the first time one interval after it
// is called, until ctx ends, and hands each failure to failed. Calls do
// not overlap: a task that outlasts the interval skips the ticks missed. A failure
// after ctx ended is not handed on: it is the stop's doing, not the
// task's, and the owners of these tasks do a last run of their own at
// shutdown where one is needed.
func Run(ctx context.Context, interval time.Duration, task func(context.Context) error, failed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick and the end can be ready together, and select
			// picks either: no task starts after the end.
			if ctx.Err() != nil {
				return
			}
			if err := task(ctx); err != nil && ctx.Err() == nil {
				failed(err)
			}
		}
	}
}
