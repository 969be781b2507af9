package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

const (
	killChildEnv     = "TRACEDX_ENGINE_KILL_CHILD_DIR"
	killChildBaseEnv = "TRACEDX_ENGINE_KILL_CHILD_BASE"
)

// killBatch is the deterministic content of acknowledged batch seq, so the
// parent can rebuild what the child wrote.
func killBatch(seq int) []model.Span {
	return newGen(uint64(seq)+1000).batch(200, 1_700_000_000e9+uint64(seq)*1e9, 3e6)
}

// runKillChild ingests until killed, printing "ack N" only after Write
// returned for batch N.
func runKillChild(dir string, base int) {
	e, err := Open(context.Background(), Options{
		Dir:             dir,
		Storage:         testStorage(dir),       // the parent reopens the same blocks
		IdleTimeout:     100 * time.Millisecond, // blocks are cut while writing
		FlushInterval:   30 * time.Millisecond,
		CompactInterval: 150 * time.Millisecond,
		WALSegmentBytes: 256 << 10, // many segments come and go
	})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := base
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				seq := next
				next++
				mu.Unlock()
				if err := e.Write(context.Background(), killBatch(seq)); err != nil {
					continue // not acknowledged; the parent will not expect it
				}
				mu.Lock()
				fmt.Printf("ack %d\n", seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestKill9KeepsAcknowledgedSpans(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv(killChildEnv); dir != "" {
		base, _ := strconv.Atoi(os.Getenv(killChildBaseEnv))
		runKillChild(dir, base)
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	var acked []int
	for round := 0; round < 2; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsAcknowledgedSpans$")
		// Each round restarts on the same directory (replaying what the
		// previous one left) with batch numbers of its own.
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir, fmt.Sprintf("%s=%d", killChildBaseEnv, round*1_000_000))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		target := 60 + round*37
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "ack ") {
				t.Logf("child: %s", line)
				continue
			}
			seq, _ := strconv.Atoi(strings.TrimPrefix(line, "ack "))
			acked = append(acked, seq)
			n++
			if n == target {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		// Acks printed before the kill landed are acknowledged too.
		for sc.Scan() {
			if seq, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack ")); err == nil {
				acked = append(acked, seq)
			}
		}
		cmd.Wait()
		if n < target {
			t.Fatalf("child acknowledged only %d batches", n)
		}
	}

	e := openT(t, testOpts(dir))
	defer e.Close()
	checked := 0
	for _, seq := range acked {
		want := killBatch(seq)
		for id, spans := range groupByTrace(want) {
			got, err := e.Trace(context.Background(), id, storeRangeAll)
			if err != nil {
				t.Fatalf("acknowledged batch %d: trace %s: %v", seq, id, err)
			}
			// Unacknowledged batches may have been stored too; every
			// acknowledged span must be there with all its fields.
			idx := map[model.SpanID]model.Span{}
			for _, s := range got {
				idx[s.SpanID] = s
			}
			for _, s := range spans {
				g, ok := idx[s.SpanID]
				if !ok {
					t.Fatalf("acknowledged batch %d: span %s lost", seq, s.SpanID)
				}
				sameSpans(t, []model.Span{s}, []model.Span{g})
				checked++
			}
		}
	}
	t.Logf("verified %d acknowledged spans from %d batches after two kill -9", checked, len(acked))
}
