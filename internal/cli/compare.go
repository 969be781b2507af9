package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/zipkin"
)

func init() { extraCommands["compare"] = Compare }

// Compare runs `tracedx compare [flags] A B`. With one trace per file it
// compares the two traces; when a file holds several traces the files are
// compared as two groups. Exit codes: 0 done, 2 usage or unreadable input,
// 1 output failure.
func Compare(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tracedx compare", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	format := fs.String("format", "text", "output format: text or json")
	service := fs.String("service", "", "group mode: compare from the first span of this service instead of the trace root")
	operation := fs.String("operation", "", "group mode: with --service, the span name of the endpoint")
	limit := fs.Int("limit", 10, "entries per section")
	fs.Usage = func() {
		fmt.Fprint(&help, "Usage: tracedx compare [flags] A B\n\n"+
			"Compares trace A (say, a fast or successful request) with trace B (a slow or failing one):\n"+
			"calls only on one side, repeated-call count changes, nodes by duration difference (own time vs\n"+
			"children), spans failing on one side only. Files hold OTLP JSON or protobuf, or Zipkin v2 JSON;\n"+
			"'-' reads stdin. Files with several traces are compared as two groups.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, help.String())
			return 0
		}
		fmt.Fprintf(stderr, "tracedx compare: %v\n%s", err, help.String())
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		fmt.Fprintf(stderr, "tracedx compare: want two files, got %d\n%s", fs.NArg(), help.String())
		return 2
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "tracedx compare: --format must be text or json, got %q\n", *format)
		return 2
	}
	if *operation != "" && *service == "" {
		fmt.Fprintln(stderr, "tracedx compare: --operation needs --service")
		return 2
	}
	if fs.Arg(0) == "-" && fs.Arg(1) == "-" {
		fmt.Fprintln(stderr, "tracedx compare: only one of the files can be stdin")
		return 2
	}
	var sides [2][][]model.Span
	for i := 0; i < 2; i++ {
		traces, err := readTraceFile(fs.Arg(i), stdin)
		if err != nil {
			fmt.Fprintf(stderr, "tracedx compare: %v\n", err)
			return 2
		}
		sides[i] = traces
	}
	opt := compare.Options{Limit: *limit}
	var out any
	if len(sides[0]) == 1 && len(sides[1]) == 1 && *service == "" {
		out = compare.Traces(sides[0][0], sides[1][0], opt)
	} else {
		gopt := compare.GroupOptions{Options: opt}
		if *service != "" {
			gopt.Root = compare.EndpointRoot(*service, *operation)
		}
		res := compare.Groups(sides[0], sides[1], gopt)
		if res.A.Traces == 0 || res.B.Traces == 0 {
			fmt.Fprintf(stderr, "tracedx compare: no trace has a span of service %q operation %q on side %s\n", *service, *operation,
				map[bool]string{true: "A", false: "B"}[res.A.Traces == 0])
			return 2
		}
		out = res
	}
	var err error
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(out)
	} else {
		err = writeCompareText(stdout, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tracedx compare: writing output: %v\n", err)
		return 1
	}
	return 0
}

// readTraceFile reads OTLP JSON, OTLP protobuf or Zipkin v2 JSON and splits
// the spans by trace, in order of first appearance.
func readTraceFile(name string, stdin io.Reader) ([][]model.Span, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	spans, err := decodeSpans(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(spans) == 0 {
		return nil, fmt.Errorf("%s: no spans", name)
	}
	idx := map[model.TraceID]int{}
	var out [][]model.Span
	for _, s := range spans {
		i, ok := idx[s.TraceID]
		if !ok {
			i = len(out)
			idx[s.TraceID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], s)
	}
	return out, nil
}

func decodeSpans(data []byte) ([]model.Span, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, errors.New("empty file")
	case trimmed[0] == '[':
		spans, err := zipkin.ToModel(trimmed)
		var bad *zipkin.InvalidSpansError
		if errors.As(err, &bad) && len(spans) > 0 {
			return spans, nil
		}
		return spans, err
	case trimmed[0] == '{':
		if bytes.Contains(trimmed[:min(len(trimmed), 4096)], []byte(`"processes"`)) {
			return nil, errors.New("jaeger JSON is not supported by compare yet; export OTLP JSON (Jaeger api_v3) or Zipkin JSON")
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(trimmed)
		if err != nil {
			return nil, fmt.Errorf("decoding OTLP JSON: %w", err)
		}
		return otlpconv.FromTraces(td), nil
	default:
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(data)
		if err != nil {
			return nil, fmt.Errorf("not OTLP JSON, Zipkin JSON or OTLP protobuf: %w", err)
		}
		return otlpconv.FromTraces(td), nil
	}
}

func writeCompareText(w io.Writer, out any) error {
	var b strings.Builder
	switch r := out.(type) {
	case compare.Result:
		fmt.Fprintf(&b, "A %s  %s %s  %.1f ms  %d spans  %d errors\n", r.A.TraceID, r.A.RootService, r.A.RootOperation, r.A.DurationMS, r.A.SpanCount, r.A.ErrorCount)
		fmt.Fprintf(&b, "B %s  %s %s  %.1f ms  %d spans  %d errors\n", r.B.TraceID, r.B.RootService, r.B.RootOperation, r.B.DurationMS, r.B.SpanCount, r.B.ErrorCount)
		fmt.Fprintf(&b, "%d spans matched\n", r.Matched)
		textSections(&b, r.Summary, r.OnlyInOne, r.CountChanges, r.Errors)
		if len(r.Durations) > 0 {
			b.WriteString("\nLargest duration differences (B - A):\n")
			for _, d := range r.Durations {
				fmt.Fprintf(&b, "  %+9.1f ms  %s\n              %.1f → %.1f ms; own time %+.1f ms, children %+.1f ms\n",
					d.DiffMS, d.Path, d.DurationMSA, d.DurationMSB, d.SelfDiffMS, d.ChildrenDiffMS)
			}
		}
	case compare.GroupResult:
		fmt.Fprintf(&b, "A %d traces  mean %.1f ms  p50 %.1f ms  errors %.0f%%  %.1f spans\n", r.A.Traces, r.A.MeanDurationMS, r.A.P50DurationMS, 100*r.A.ErrorShare, r.A.MeanSpanCount)
		fmt.Fprintf(&b, "B %d traces  mean %.1f ms  p50 %.1f ms  errors %.0f%%  %.1f spans\n", r.B.Traces, r.B.MeanDurationMS, r.B.P50DurationMS, 100*r.B.ErrorShare, r.B.MeanSpanCount)
		textSections(&b, r.Summary, r.OnlyInOne, r.CountChanges, r.Errors)
		if len(r.Durations) > 0 {
			b.WriteString("\nLargest differences in time per trace (B - A):\n")
			for _, d := range r.Durations {
				fmt.Fprintf(&b, "  %+9.1f ms  %s\n              %.1f → %.1f ms per trace; p50 per call %.1f → %.1f ms\n",
					d.DiffMS, d.Path, d.A.PerTraceMS, d.B.PerTraceMS, d.A.P50MS, d.B.P50MS)
			}
		}
	default:
		return fmt.Errorf("unexpected result %T", out)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func textSections(b *strings.Builder, summary []string, only []compare.OnlyInOne, counts []compare.CountChange, errs []compare.ErrorDiff) {
	if len(summary) > 0 {
		b.WriteString("\nSummary:\n")
		for _, s := range summary {
			fmt.Fprintf(b, "  - %s\n", s)
		}
	}
	if len(counts) > 0 {
		b.WriteString("\nRepeated calls whose count changed:\n")
		for _, c := range counts {
			fmt.Fprintf(b, "  %s → %s  %s  (%.1f → %.1f ms)\n", num(c.CountA), num(c.CountB), c.Path, c.DurationMSA, c.DurationMSB)
		}
	}
	if len(only) > 0 {
		b.WriteString("\nCalls on one side only:\n")
		sorted := append([]compare.OnlyInOne(nil), only...)
		sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Side < sorted[j].Side })
		for _, o := range sorted {
			fmt.Fprintf(b, "  only %s  %s x%s  %.1f ms", strings.ToUpper(o.Side), o.Path, num(o.Count), o.DurationMS)
			if o.Failed > 0 {
				fmt.Fprintf(b, "  (%d failed)", o.Failed)
			}
			b.WriteString("\n")
		}
	}
	if len(errs) > 0 {
		b.WriteString("\nError differences:\n")
		for _, e := range errs {
			fmt.Fprintf(b, "  %s: failed %.0f%% in A, %.0f%% in B", e.Path, 100*e.ErrorShareA, 100*e.ErrorShareB)
			if e.ErrorB != "" {
				fmt.Fprintf(b, "  B: %s", e.ErrorB)
			}
			if e.ErrorA != "" {
				fmt.Fprintf(b, "  A: %s", e.ErrorA)
			}
			b.WriteString("\n")
		}
	}
}

func num(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.1f", f)
}
