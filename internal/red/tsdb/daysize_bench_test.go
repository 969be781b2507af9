package tsdb

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDayFile writes one day of 1,000 series (10 services × 20
// operations × 5 kinds) with spans in every minute, flushed every
// minute, and reports the day file's size: what a node's history
// uploads to the bucket for a day (docs/deployment.md).
func BenchmarkDayFile(b *testing.B) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	m0 := UnixMinute(day)
	var keys []Key
	for svc := 0; svc < 10; svc++ {
		for op := 0; op < 20; op++ {
			for kind := 0; kind < 5; kind++ {
				keys = append(keys, Key{A: fmt.Sprintf("service-%d", svc), B: fmt.Sprintf("GET /api/v1/op-%d", op), K: uint8(kind)})
			}
		}
	}
	for b.Loop() {
		dir := b.TempDir()
		s, err := New[ext](Options{Dir: dir, Name: "red", NHist: 1, MemDays: 1})
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		for m := int64(0); m < 1440; m++ {
			for _, k := range keys {
				s.Update(k, m0+m, func(a *Acc, _ *ext) {
					for range 20 { // spans per series and minute, exponential latencies around 20 ms
						us := uint64(r.ExpFloat64() * 20000)
						a.Count++
						a.Sum[0] += us
						a.H[0][BucketOf(us)]++
					}
				})
			}
			if err := s.Flush(time.Unix((m0+m+1)*60, 1), false); err != nil {
				b.Fatal(err)
			}
		}
		fi, err := os.Stat(filepath.Join(dir, "red-20261201"+fileSuffix))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/1e6, "MB/day")
	}
}
