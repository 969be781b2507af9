package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"time"
)

// memTrace appends to path, every 20 ms, RSS and the runtime's memory
// figures in MiB (live heap, heap objects, memory mapped and not
// returned, free heap, stacks) and its GC cycle count. VmHWM, which the
// harness reports, keeps only the peak; this shows when it came and
// whether it was live heap, garbage awaiting a collection, or memory the
// runtime had not returned yet.
func memTrace(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memtrace:", err)
		return
	}
	w := bufio.NewWriter(f)
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"}}
	start := time.Now()
	buf := make([]byte, 4096)
	for {
		time.Sleep(20 * time.Millisecond)
		metrics.Read(s)
		mib := func(i int) uint64 { return s[i].Value.Uint64() >> 20 }
		fmt.Fprintf(w, "%.2f rss=%d live=%d objects=%d mapped=%d free=%d stacks=%d gc=%d\n", time.Since(start).Seconds(),
			rssKiB(buf)>>10, mib(0), mib(1), (s[2].Value.Uint64()-s[3].Value.Uint64())>>20, mib(4), mib(5), s[6].Value.Uint64())
		w.Flush()
	}
}

// rssKiB reads VmRSS from /proc/self/status (0 where there is none).
func rssKiB(buf []byte) int {
	b, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	n, _ := b.Read(buf)
	b.Close()
	i := bytes.Index(buf[:n], []byte("VmRSS:"))
	if i < 0 {
		return 0
	}
	fs := bytes.Fields(buf[i+len("VmRSS:") : n])
	if len(fs) == 0 {
		return 0
	}
	v, _ := strconv.Atoi(string(fs[0]))
	return v
}
