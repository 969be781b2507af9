// Command soak repeats the attacks of the overload issue against a built
// server on loopback, bounded in time, and says whether the server held:
//
//   - overload: many senders post OTLP/HTTP as fast as they can; they must
//     see retryable refusals (503/429 with Retry-After) and back off, while
//     the server's RSS stays within its memory limit + 20 %;
//   - disk full: the data directory lives on a small tmpfs that is filled
//     up and emptied again; writes must be refused retryably while it is
//     full and succeed again afterwards, without a restart;
//   - huge trace: one trace of -huge-spans spans is fetched by id and
//     analysed; the answers must be bounded;
//   - no acknowledged span lost: every acknowledged trace is read back by
//     id, after a restart, and must hold all its spans.
//
// It needs Linux, and root for the tmpfs mount (without it the disk-full
// cycle is skipped). Not part of CI.
//
//	go run ./bench/soak -duration 4m
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/bench/internal/proc"
)

type options struct {
	bin           string
	duration      time.Duration
	senders       int
	memLimitBytes int64
	tmpfsBytes    int64
	hugeSpans     int
	config        string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "server binary (default: built from ./cmd/tracedx)")
	flag.DurationVar(&o.duration, "duration", 4*time.Minute, "upper bound of the whole run")
	flag.IntVar(&o.senders, "senders", 32, "concurrent senders in the overload phase")
	flag.Int64Var(&o.memLimitBytes, "memory-limit", 256<<20, "the server's --memory-limit")
	flag.Int64Var(&o.tmpfsBytes, "tmpfs-bytes", 1<<30, "size of the tmpfs holding the data directory")
	flag.IntVar(&o.hugeSpans, "huge-spans", 200_000, "spans of the huge trace")
	flag.StringVar(&o.config, "config", "", "a YAML configuration file for the server (flags set by soak override it)")
	flag.Parse()
	if o.bin == "" {
		o.bin = filepath.Join(os.TempDir(), "soak-tracedx")
		run("go", "build", "-o", o.bin, "./cmd/tracedx")
	}
	r := newRun(o)
	atExit = r.cleanup
	ok := r.all()
	r.cleanup()
	if !ok {
		os.Exit(1)
	}
}

// atExit undoes the run (server, tmpfs) when it stops early.
var atExit = func() {}

type runState struct {
	o        options
	dir      string
	mounted  bool
	srv      *exec.Cmd
	http     string // query API base URL
	otlp     string // OTLP/HTTP base URL
	deadline time.Time

	peakRSSKB atomic.Int64
	stopRSS   chan struct{}
	rssDone   chan struct{}

	mu             sync.Mutex
	acked          map[[16]byte]int // trace id → spans acknowledged
	codes          map[int]int      // HTTP status → responses, overload phase
	hugeID         [16]byte
	retryAfterSeen atomic.Bool
	nextTrace      atomic.Uint64
}

func newRun(o options) *runState {
	r := &runState{o: o, acked: map[[16]byte]int{}, codes: map[int]int{}, deadline: time.Now().Add(o.duration)}
	d, err := os.MkdirTemp("", "soak-")
	check(err)
	r.dir = d
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(o.tmpfsBytes, 10), "tmpfs", d).Run(); err == nil {
		r.mounted = true
	} else {
		fmt.Fprintln(os.Stderr, "soak: no tmpfs (needs root); the disk-full cycle is skipped:", err)
	}
	return r
}

func (r *runState) cleanup() {
	atExit = func() {}
	r.stopServer()
	if r.mounted {
		_ = exec.Command("umount", r.dir).Run()
	}
	os.RemoveAll(r.dir)
}

func (r *runState) startServer() {
	httpAddr, err := proc.FreeAddr()
	check(err)
	otlpAddr, err := proc.FreeAddr()
	check(err)
	r.http, r.otlp = "http://"+httpAddr, "http://"+otlpAddr
	r.srv = exec.Command(r.o.bin, "serve", "--data-dir", filepath.Join(r.dir, "data"), "--http-addr", httpAddr, "--otlp-http-addr", otlpAddr,
		"--otlp-grpc-addr", "", "--zipkin-addr", "", "--tempo-addr", "", "--trace-idle-timeout", "2s",
		"--memory-limit", strconv.FormatInt(r.o.memLimitBytes, 10), "--log-level", "warn")
	if r.o.config != "" {
		r.srv.Args = append(r.srv.Args, "--config", r.o.config)
	}
	log, err := os.Create(filepath.Join(os.TempDir(), "soak-server.log"))
	check(err)
	r.srv.Stdout, r.srv.Stderr = log, log
	check(r.srv.Start())
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(r.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.stopRSS, r.rssDone = make(chan struct{}), make(chan struct{})
				go r.watchRSS(r.srv.Process.Pid)
				return
			}
		}
	}
	check(fmt.Errorf("server not ready within a minute (log: %s)", log.Name()))
}

func (r *runState) stopServer() {
	if r.srv == nil {
		return
	}
	close(r.stopRSS)
	<-r.rssDone
	_ = r.srv.Process.Signal(syscall.SIGTERM)
	_ = r.srv.Wait()
	r.srv = nil
}

func (r *runState) watchRSS(pid int) {
	defer close(r.rssDone)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stopRSS:
			return
		case <-t.C:
			if kb, err := proc.RSSKB(pid); err == nil && kb > r.peakRSSKB.Load() {
				r.peakRSSKB.Store(kb)
			}
		}
	}
}

func (r *runState) all() bool {
	r.startServer()
	budget := time.Until(r.deadline)
	overload := budget * 35 / 100
	fmt.Printf("soak: %d senders for %s, memory limit %d MiB\n", r.o.senders, overload.Round(time.Second), r.o.memLimitBytes>>20)
	r.send(r.o.senders, overload, nil)
	r.mu.Lock()
	codes := fmt.Sprint(r.codes)
	r.mu.Unlock()
	limitKB := r.o.memLimitBytes * 12 / 10 / 1024
	rssOK := r.peakRSSKB.Load() <= limitKB
	retryOK := r.retryableSeen() && r.retryAfterSeen.Load()
	fmt.Printf("  responses by status (0: no answer): %s\n", codes)
	if n := transportErrs.Load(); n > 0 {
		fmt.Printf("  %d requests got no answer, the last: %v\n", n, lastTransportErr.Load())
	}
	fmt.Printf("  peak RSS %d MB, limit + 20 %% = %d MB: %s\n", r.peakRSSKB.Load()/1024, limitKB/1024, verdict(rssOK))
	fmt.Printf("  retryable refusals with Retry-After: %s\n", verdict(retryOK))

	diskOK := true
	if r.mounted {
		r.peakRSSKB.Store(0)
		diskOK = r.diskFullCycle(budget * 30 / 100)
		fmt.Printf("  peak RSS in this phase %d MB\n", r.peakRSSKB.Load()/1024)
		r.peakRSSKB.Store(0)
	}
	hugeOK := r.hugeTrace()

	fmt.Println("soak: restarting the server and reading every acknowledged trace back")
	r.stopServer()
	r.startServer()
	lostOK := r.verify()
	r.stopServer()
	all := rssOK && retryOK && diskOK && hugeOK && lostOK
	fmt.Printf("soak: %s\n", verdict(all))
	return all
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func (r *runState) retryableSeen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.codes[http.StatusServiceUnavailable]+r.codes[http.StatusTooManyRequests] > 0
}

// send runs n senders for d. Each posts requests of fresh traces; a
// retryable refusal is retried after Retry-After, as exporters do. codes,
// when set, receives every status.
func (r *runState) send(n int, d time.Duration, codes func(int)) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for ctx.Err() == nil {
				ids, spans, body := r.request(50, 10)
				for ctx.Err() == nil {
					status, retryAfter := post(ctx, client, r.otlp+"/v1/traces", body)
					r.mu.Lock()
					r.codes[status]++
					if status == http.StatusOK {
						for _, id := range ids {
							r.acked[id] += spans
						}
					}
					r.mu.Unlock()
					if codes != nil {
						codes(status)
					}
					if status == http.StatusOK || status/100 == 4 && status != http.StatusTooManyRequests {
						break
					}
					if retryAfter > 0 {
						r.retryAfterSeen.Store(true)
					}
					sleep(ctx, max(retryAfter, 100*time.Millisecond))
				}
			}
		}()
	}
	wg.Wait()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// transportErrs counts requests that got no HTTP answer (status 0),
// besides those cut by the end of a phase.
var (
	transportErrs    atomic.Int64
	lastTransportErr atomic.Value
)

// post returns the status (0 on a transport error) and the Retry-After.
func post(ctx context.Context, c *http.Client, url string, body []byte) (int, time.Duration) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	check(err)
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			transportErrs.Add(1)
			lastTransportErr.Store(err.Error())
		}
		return 0, 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, time.Duration(secs) * time.Second
}

// request builds traces×spans spans of fresh traces.
func (r *runState) request(traces, spans int) ([][16]byte, int, []byte) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	ids := make([][16]byte, traces)
	for t := range traces {
		var id [16]byte
		binary.BigEndian.PutUint64(id[:8], r.nextTrace.Add(1))
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
		ids[t] = id
		for s := range spans {
			sp := appendSpan(ss, id, s, now.Add(time.Duration(s)*time.Millisecond), 800*time.Microsecond)
			if s > 0 {
				sp.SetKind(ptrace.SpanKindClient)
				sp.SetName("SELECT orders")
				sp.Attributes().PutStr("db.system", "postgresql")
				sp.Attributes().PutStr("db.query.text", "SELECT * FROM orders WHERE id = $1")
			} else {
				sp.SetKind(ptrace.SpanKindServer)
				sp.SetName("GET /checkout")
				sp.Attributes().PutStr("http.route", "/checkout")
				sp.Attributes().PutInt("http.response.status_code", 200)
			}
		}
	}
	body, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	check(err)
	return ids, spans, body
}

// diskFullCycle fills the tmpfs while 8 senders keep posting, holds it
// full, frees it and checks that writes succeed again.
func (r *runState) diskFullCycle(d time.Duration) bool {
	phase := atomic.Int32{} // 0 before full, 1 full, 2 freed
	var mu sync.Mutex
	byPhase := [3]map[int]int{{}, {}, {}}
	filler := filepath.Join(r.dir, "filler")
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d / 5)
		f, err := os.Create(filler)
		check(err)
		chunk := make([]byte, 1<<20)
		for {
			if _, err := f.Write(chunk); err != nil {
				break
			}
		}
		phase.Store(1)
		// Keep it full: whatever the server frees (WAL segments after a
		// flush) is taken again.
		small := chunk[:64<<10]
		for until := time.Now().Add(d * 2 / 5); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			for {
				if _, err := f.Write(small); err != nil {
					break
				}
			}
		}
		f.Close()
		check(os.Remove(filler))
		phase.Store(2)
	}()
	fmt.Printf("soak: disk-full cycle on a %d MiB tmpfs over %s\n", r.o.tmpfsBytes>>20, d.Round(time.Second))
	r.send(8, d, func(status int) {
		mu.Lock()
		byPhase[phase.Load()][status]++
		mu.Unlock()
	})
	<-done
	full, after := byPhase[1], byPhase[2]
	fullOK := full[http.StatusServiceUnavailable] > 0 && full[http.StatusInternalServerError] == 0
	recovered := after[http.StatusOK] > 0
	fmt.Printf("  before: %v, full: %v, freed: %v\n", byPhase[0], full, after)
	fmt.Printf("  refused retryably (503, no 500) while full: %s\n", verdict(fullOK))
	fmt.Printf("  writes succeed again without a restart: %s\n", verdict(recovered))
	return fullOK && recovered
}

// hugeTrace sends one trace of hugeSpans spans and fetches it.
func (r *runState) hugeTrace() bool {
	n := r.o.hugeSpans
	var id [16]byte
	binary.BigEndian.PutUint64(id[:8], 0xfeedface)
	binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	fmt.Printf("soak: huge trace of %d spans\n", n)
	client := &http.Client{Timeout: time.Minute}
	const per = 5000
	start := time.Now()
	for sent := 0; sent < n; {
		td := ptrace.NewTraces()
		ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
		td.ResourceSpans().At(0).Resource().Attributes().PutStr("service.name", "batch")
		for i := sent; i < min(n, sent+per); i++ {
			appendSpan(ss, id, i, start.Add(time.Duration(i)*time.Microsecond), time.Microsecond).SetName("process item")
		}
		body, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		check(err)
		if time.Now().After(r.deadline) {
			fmt.Printf("  could not send the huge trace before the deadline (%d of %d spans acknowledged): FAIL\n", sent, n)
			return false
		}
		status, retryAfter := post(context.Background(), client, r.otlp+"/v1/traces", body)
		if status == http.StatusOK {
			sent += per
			r.mu.Lock()
			r.acked[id] = min(n, sent)
			r.mu.Unlock()
			continue
		}
		time.Sleep(max(retryAfter, 100*time.Millisecond))
	}
	time.Sleep(4 * time.Second) // idle timeout (2 s) and a flush
	r.hugeID = id
	hex := fmt.Sprintf("%x", id)
	t0 := time.Now()
	status, size, body := get(r.http + "/api/v1/traces/" + hex)
	fetch := time.Since(t0)
	var page struct {
		TotalSpans int  `json:"total_spans"`
		Truncated  bool `json:"truncated"`
	}
	_ = json.Unmarshal(body, &page)
	t0 = time.Now()
	astatus, asize, _ := get(r.http + "/api/v1/traces/" + hex + "/analysis")
	analysis := time.Since(t0)
	fmt.Printf("  GET trace: %d, %d KB in %s (total_spans %d, truncated %v)\n", status, size>>10, fetch.Round(time.Millisecond), page.TotalSpans, page.Truncated)
	fmt.Printf("  GET analysis: %d, %d KB in %s\n", astatus, asize>>10, analysis.Round(time.Millisecond))
	ok := status == http.StatusOK && page.TotalSpans == n && size < 32<<20 && (astatus == http.StatusOK || astatus == http.StatusUnprocessableEntity)
	fmt.Printf("  bounded answers: %s; peak RSS since the overload phase %d MB\n", verdict(ok), r.peakRSSKB.Load()/1024)
	return ok
}

// appendSpan adds span number i of a trace (span id i+1, a child of span 1
// unless it is span 1).
func appendSpan(ss ptrace.ScopeSpans, id [16]byte, i int, start time.Time, d time.Duration) ptrace.Span {
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID(id))
	var sid [8]byte
	binary.BigEndian.PutUint64(sid[:], uint64(i+1))
	sp.SetSpanID(pcommon.SpanID(sid))
	if i > 0 {
		sp.SetParentSpanID(pcommon.SpanID([8]byte{7: 1}))
	}
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(d)))
	return sp
}

var queryClient = &http.Client{Timeout: 2 * time.Minute}

func get(url string) (int, int, []byte) {
	resp, err := queryClient.Get(url)
	if err != nil {
		return 0, 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, len(body), body
}

// maxVerify bounds the traces read back (a random sample beyond it).
const maxVerify = 20_000

// verify reads acknowledged traces back and compares span counts.
func (r *runState) verify() bool {
	r.mu.Lock()
	acked := make(map[[16]byte]int, maxVerify)
	var spans int
	if n, ok := r.acked[r.hugeID]; ok {
		acked[r.hugeID], spans = n, n
	}
	for id, n := range r.acked { // map order is random: a uniform sample
		if len(acked) == maxVerify {
			break
		}
		acked[id] = n
		spans += n
	}
	total := len(r.acked)
	r.mu.Unlock()
	lost, checked := 0, 0
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, want := range acked {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, _, body := get(fmt.Sprintf("%s/api/v1/traces/%x?limit=1", r.http, id))
			var page struct {
				TotalSpans int `json:"total_spans"`
			}
			_ = json.Unmarshal(body, &page)
			mu.Lock()
			checked++
			if page.TotalSpans < want {
				lost += want - page.TotalSpans
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("  %d of %d acknowledged traces (%d spans) read back after a restart, spans lost: %d: %s\n", checked, total, spans, lost, verdict(lost == 0))
	return lost == 0
}

func run(name string, args ...string) {
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	check(c.Run())
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		atExit()
		os.Exit(1)
	}
}
