// Command accuracy measures the root-cause ranking on the fault bed: for
// each fault class it injects the fault at a random service and time
// (seeded) and prints how often the faulty service came first (top-1) and
// among the first three (top-3).
//
//	go run ./internal/faultbed/cmd/accuracy -runs 20 -seed 1
//
// With -export DIR it writes one run (-class, -seed) as OTLP JSON files
// DIR/baseline.json and DIR/incident.json instead, for `tracedx rootcause`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/faultbed"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

func main() {
	runs := flag.Int("runs", 20, "runs per fault class")
	seed := flag.Uint64("seed", 1, "seed of the first run; run i uses seed+i")
	traces := flag.Int("traces", 250, "mean traces per window")
	class := flag.String("class", "", "only this fault class (default: all)")
	strength := flag.Float64("strength", 1, "scale of the faults: delays, CPU slowdown beyond 1x, failing share")
	skew := flag.Duration("skew", 25*time.Millisecond, "largest clock offset of a service's host")
	naive := flag.Bool("naive", false, "rank by the plain per-service self-time comparison instead, for reference")
	verbose := flag.Bool("v", false, "list the runs missed at top 1")
	export := flag.String("export", "", "write the run of -class and -seed as OTLP JSON files into this directory")
	flag.Parse()
	if *runs <= 0 || *traces <= 0 || *strength <= 0 || *skew <= 0 {
		fmt.Fprintln(os.Stderr, "accuracy: -runs, -traces, -strength and -skew must be positive")
		os.Exit(2)
	}
	classes := faultbed.Classes()
	if *class != "" {
		c, err := faultbed.ParseClass(*class)
		if err != nil {
			fmt.Fprintf(os.Stderr, "accuracy: %v\n", err)
			os.Exit(2)
		}
		classes = []faultbed.Class{c}
	}
	if *export != "" {
		if len(classes) != 1 {
			fmt.Fprintln(os.Stderr, "accuracy: -export needs -class")
			os.Exit(2)
		}
		if err := exportRun(*export, faultbed.Config{Seed: *seed, Class: classes[0], TracesPerWindow: *traces, Strength: *strength, MaxSkew: *skew}); err != nil {
			fmt.Fprintf(os.Stderr, "accuracy: %v\n", err)
			os.Exit(1)
		}
		return
	}
	res, err := faultbed.Accuracy(classes, *runs, *seed, faultbed.Config{TracesPerWindow: *traces, Strength: *strength, MaxSkew: *skew, Naive: *naive})
	if err != nil {
		fmt.Fprintf(os.Stderr, "accuracy: %v\n", err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "class\truns\ttop-1\ttop-3\ttop-1 with operation")
	var runsAll, top1All, top3All int
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Class, r.Runs, pct(r.Top1, r.Runs), pct(r.Top3, r.Runs), pct(r.OpTop1, r.Runs))
		runsAll, top1All, top3All = runsAll+r.Runs, top1All+r.Top1, top3All+r.Top3
	}
	fmt.Fprintf(tw, "all\t%d\t%s\t%s\t\n", runsAll, pct(top1All, runsAll), pct(top3All, runsAll))
	_ = tw.Flush()
	if *verbose {
		for _, r := range res {
			if len(r.Misses) > 0 {
				fmt.Printf("\n%s misses:\n  %s\n", r.Class, strings.Join(r.Misses, "\n  "))
			}
		}
	}
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f %% (%d/%d)", 100*float64(n)/float64(of), n, of)
}

// exportRun writes one run's windows as OTLP JSON.
func exportRun(dir string, cfg faultbed.Config) error {
	w, err := faultbed.Generate(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for name, traces := range map[string][][]model.Span{"baseline.json": w.Baseline, "incident.json": w.Incident} {
		var spans []model.Span
		for _, tr := range traces {
			spans = append(spans, tr...)
		}
		b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(otlpconv.ToTraces(spans))
		if err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	fmt.Printf("injected %s; %d baseline and %d incident traces in %s\n", w.Fault.String(), len(w.Baseline), len(w.Incident), dir)
	return nil
}
