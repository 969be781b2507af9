package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic"
	"github.com/tracedx/tracedx/internal/traceio"
)

func init() { extraCommands["analyze"] = Analyze }

// analyzeOutput is the JSON contract of `tracedx analyze --format json`.
type analyzeOutput struct {
	Traces []analyze.Result `json:"traces"`
	// Systemic are the cross-trace findings of all the files together,
	// detected in trace time (absent when there are none).
	Systemic []systemic.Finding `json:"systemic,omitempty"`
}

const analyzeHelp = `Usage: tracedx analyze [flags] FILE...

Diagnoses each trace in the files: critical path, findings (N+1 queries, retry storms, swallowed
errors, …) and a why chain. Over all the files together it also runs the cross-trace detectors
(error-rate spikes, latency regressions, missing services, new error types, …) in trace time: the
traces are replayed in order of start, so a recorded incident gives the findings live ingest gave
(the detectors want about ten minutes of history before they compare). Files hold OTLP JSON (a
request, or the Collector file exporter's one request per line), OTLP protobuf, Jaeger JSON, Zipkin
v2 JSON, Tempo's trace JSON or tracedx's own /api/v1/traces/{id}; the format is detected. '-' reads stdin. Exit status: 0 ok, 1 a --fail-on/--fail-on-severity
finding exists, 2 bad flags or input.

Flags:
`

// Analyze runs `tracedx analyze [flags] FILE...`: it diagnoses every trace
// in the files ('-' reads stdin) and prints the findings. Exit codes: 0 no
// gate failed, 1 a --fail-on/--fail-on-severity finding exists, 2 bad
// flags or unreadable input.
func Analyze(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newCommand("analyze", analyzeHelp, stderr)
	fs, usageErr := cmd.fs, cmd.usageErr
	format := fs.String("format", "text", "output format: text, json or markdown")
	failOn := fs.String("fail-on", "", "exit 1 when a finding of one of these kinds exists (comma-separated, e.g. n_plus_one_query,retry_storm)")
	failSev := fs.String("fail-on-severity", "", "exit 1 when a finding of this severity or worse exists: warning or critical")
	configPath := fs.String("config", "", "YAML file with detector thresholds per kind (kind: {field: value}, or kind: false to switch it off)")
	if code, done := cmd.parse(args, stdout); done {
		return code
	}
	if code, done := cmd.checkFormat(*format); done {
		return code
	}
	if fs.NArg() == 0 {
		return usageErr("no input: name one or more trace files, or '-' for stdin")
	}
	gateSev := 0
	switch strings.ToLower(*failSev) {
	case "":
	case "warning":
		gateSev = analyze.SeverityWarning.Rank()
	case "critical":
		gateSev = analyze.SeverityCritical.Rank()
	case "info":
		gateSev = analyze.SeverityInfo.Rank()
	default:
		return usageErr("--fail-on-severity must be warning or critical, got %q", *failSev)
	}

	detectors := analyze.DefaultDetectors()
	if *configPath != "" {
		doc, err := os.ReadFile(*configPath)
		if err != nil {
			return usageErr("read --config: %v", err)
		}
		if detectors, err = analyze.LoadDetectorConfig(doc); err != nil {
			return usageErr("--config %s: %v", *configPath, err)
		}
	}
	gateKinds := map[string]bool{}
	if *failOn != "" {
		known := map[string]bool{}
		for _, k := range analyze.Kinds() {
			known[k] = true
		}
		for _, k := range strings.Split(*failOn, ",") {
			k = strings.TrimSpace(k)
			if k == "" {
				continue
			}
			if !known[k] {
				return usageErr("--fail-on: unknown kind %q (known: %s)", k, strings.Join(analyze.Kinds(), ", "))
			}
			gateKinds[k] = true
		}
	}

	var traces []traceio.Trace
	stdinUsed := false
	for _, path := range fs.Args() {
		var got []traceio.Trace
		var err error
		if path == "-" {
			if stdinUsed {
				return usageErr("'-' (stdin) given twice")
			}
			stdinUsed = true
			if got, _, err = traceio.Read(stdin); err != nil {
				err = fmt.Errorf("stdin: %w", err)
			}
		} else {
			got, _, err = traceio.ReadFile(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tracedx analyze: cannot read traces from %v\n", err)
			return 2
		}
		name := inputName(path)
		got = skipUntimed("analyze", name, got, stderr)
		if len(got) == 0 {
			fmt.Fprintf(stderr, "tracedx analyze: %s holds no spans\n", name)
			return 2
		}
		traces = append(traces, got...)
	}

	out := analyzeOutput{Traces: make([]analyze.Result, 0, len(traces))}
	opts := analyze.Options{Detectors: detectors}
	parents := make([]map[string]string, 0, len(traces))
	whole := make([][]model.Span, 0, len(traces))
	for _, tr := range traces {
		out.Traces = append(out.Traces, analyze.Analyze(tr.Spans, opts))
		parents = append(parents, parentsOf(tr.Spans))
		whole = append(whole, tr.Spans)
	}
	g := gate{kinds: gateKinds, severity: gateSev, failOn: *failOn, failSev: *failSev}
	tripped := g.tripped(out.Traces)
	// The cross-trace detectors run on the traces' own clock, so a
	// recorded incident gives the findings live ingest gave.
	out.Systemic = systemic.ReplayTraces(systemic.Config{}, whole, slog.New(slog.NewTextHandler(io.Discard, nil)))

	var err error
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(out)
	case "markdown", "md":
		err = writeMarkdown(stdout, out.Traces, parents, g, tripped)
		if err == nil {
			err = writeSystemic(stdout, out.Systemic, true)
		}
	default:
		err = writeText(stdout, out.Traces, parents, g)
		if err == nil {
			err = writeSystemic(stdout, out.Systemic, false)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tracedx analyze: write output: %v\n", err)
		return 2
	}
	if len(tripped) > 0 {
		fmt.Fprintf(stderr, "tracedx analyze: failing: %s matched the gate: %s\n", plural(len(tripped), "finding"), strings.Join(firstN(tripped, 5), "; "))
		return 1
	}
	return 0
}

// gate is what --fail-on and --fail-on-severity ask for.
type gate struct {
	kinds           map[string]bool
	severity        int
	failOn, failSev string
}

func (g gate) active() bool { return len(g.kinds) > 0 || g.severity > 0 }

func (g gate) matches(f analyze.Finding) bool {
	return g.kinds[f.Kind] || (g.severity > 0 && f.Severity.Rank() >= g.severity)
}

// tripped describes each finding that fails the gate, sorted.
func (g gate) tripped(results []analyze.Result) []string {
	var out []string
	for _, r := range results {
		for _, f := range r.Findings {
			if g.matches(f) {
				out = append(out, fmt.Sprintf("%s (%s) in trace %s", f.Kind, f.Severity, r.TraceID))
			}
		}
	}
	sort.Strings(out)
	return out
}

// flags renders the gate as the command line gave it.
func (g gate) flags() string {
	var parts []string
	if g.failOn != "" {
		parts = append(parts, "`--fail-on "+g.failOn+"`")
	}
	if g.failSev != "" {
		parts = append(parts, "`--fail-on-severity "+g.failSev+"`")
	}
	return strings.Join(parts, " and ")
}

// parentsOf maps span id to parent span id (hex), to order path rows.
func parentsOf(spans []model.Span) map[string]string {
	m := make(map[string]string, len(spans))
	for i := range spans {
		if !spans[i].ParentSpanID.IsZero() {
			m[spans[i].SpanID.String()] = spans[i].ParentSpanID.String()
		}
	}
	return m
}

func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
}

// maxWaterfall caps the critical-path rows shown per trace; the rows kept
// are the ones with the most self time.
const maxWaterfall = 14

func waterfallSteps(steps []analyze.PathStep) ([]analyze.PathStep, int) {
	if len(steps) <= maxWaterfall {
		return steps, 0
	}
	idx := make([]int, len(steps))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return steps[idx[a]].SelfMS > steps[idx[b]].SelfMS })
	keep := idx[:maxWaterfall]
	sort.Ints(keep)
	out := make([]analyze.PathStep, 0, maxWaterfall)
	for _, i := range keep {
		out = append(out, steps[i])
	}
	return out, len(steps) - maxWaterfall
}

func fmtMS(ms float64) string {
	switch {
	case ms >= 10000:
		return fmt.Sprintf("%.0f s", ms/1000)
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 10:
		return fmt.Sprintf("%.0f ms", ms)
	default:
		return fmt.Sprintf("%.1f ms", ms)
	}
}

func writeText(w io.Writer, results []analyze.Result, parents []map[string]string, g gate) error {
	var b strings.Builder
	const width = 32
	for i, r := range results {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "trace %s  %s %s  %s  %d spans  %s\n", r.TraceID, r.RootService, r.RootOperation,
			fmtMS(r.DurationMS), r.SpanCount, plural(len(r.Findings), "finding"))
		steps, hidden := pathRows(r.CriticalPath, parents[i])
		if len(steps) > 0 {
			b.WriteString("\ncritical path\n")
		}
		total := r.DurationMS
		for _, s := range steps {
			if total <= 0 {
				total = 1
			}
			lo := int(s.StartMS / total * width)
			hi := int(s.EndMS/total*width + 0.999)
			lo, hi = min(max(lo, 0), width-1), min(max(hi, lo+1), width)
			bar := strings.Repeat(" ", lo) + strings.Repeat("█", hi-lo) + strings.Repeat(" ", width-hi)
			indent := strings.Repeat(" ", min(s.Depth, 8))
			fmt.Fprintf(&b, "  |%s| %8s self  %s%s %s\n", bar, fmtMS(s.SelfMS), indent, s.Service, model.Clip(s.Operation, 70))
		}
		if hidden > 0 {
			fmt.Fprintf(&b, "  … %d more spans on the path with less self time\n", hidden)
		}
		if len(r.Findings) > 0 {
			b.WriteString("\nfindings\n")
		}
		for _, f := range byImpact(r.Findings, g) {
			fmt.Fprintf(&b, "  %-8s %-20s %s", strings.ToUpper(string(f.Severity)), f.Kind, f.Title)
			if f.ImpactMS >= 0.1 {
				fmt.Fprintf(&b, "  [impact %s]", fmtMS(f.ImpactMS))
			}
			b.WriteString("\n")
			if c := f.Culprit; c != nil {
				fmt.Fprintf(&b, "  %-8s %-20s culprit: %s %s — %s\n", "", "", c.Service, model.Clip(c.Operation, 70), c.Reason)
			}
			if f.Fix != "" {
				fmt.Fprintf(&b, "  %-8s %-20s fix: %s\n", "", "", f.Fix)
			}
		}
		if len(r.Why) > 0 {
			b.WriteString("\nwhy\n")
			for j, s := range r.Why {
				fmt.Fprintf(&b, "  %d. %s\n", j+1, s)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdCell escapes what would break a table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}

// writeMarkdown renders a pull-request comment: the gate's verdict first,
// then per trace the why list (covering every gated finding), the findings
// by impact and the critical path in tree order.
func writeMarkdown(w io.Writer, results []analyze.Result, parents []map[string]string, g gate, tripped []string) error {
	var b strings.Builder
	nf := 0
	for _, r := range results {
		nf += len(r.Findings)
	}
	fmt.Fprintf(&b, "# tracedx analyze: %s, %s\n\n", plural(len(results), "trace"), plural(nf, "finding"))
	switch {
	case !g.active():
	case len(tripped) > 0:
		fmt.Fprintf(&b, "**Gate failed:** %s matched %s:\n\n", plural(len(tripped), "finding"), g.flags())
		for _, t := range firstN(tripped, 10) {
			fmt.Fprintf(&b, "- %s\n", t)
		}
		b.WriteString("\n")
	default:
		fmt.Fprintf(&b, "**Gate passed:** no finding matched %s.\n\n", g.flags())
	}
	for i, r := range results {
		findings := byImpact(r.Findings, g)
		fmt.Fprintf(&b, "## Trace `%s`: %s %s\n\n%s, %s, %s.\n", r.TraceID, mdCell(r.RootService), mdCell(r.RootOperation),
			fmtMS(r.DurationMS), plural(r.SpanCount, "span"), plural(len(r.Findings), "finding"))
		why := whyWithGated(r.Why, findings, g)
		if len(why) > 0 {
			b.WriteString("\n### Why\n\n")
			for j, s := range why {
				fmt.Fprintf(&b, "%d. %s\n", j+1, s)
			}
		}
		if len(findings) > 0 {
			b.WriteString("\n### Findings\n\n| severity | kind | finding | impact | fix |\n|---|---|---|---:|---|\n")
			for _, f := range findings {
				sev := string(f.Severity)
				if g.matches(f) {
					sev = "**" + sev + " (gate)**"
				}
				fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s |\n", sev, f.Kind, mdCell(f.Title), fmtMS(f.ImpactMS), mdCell(f.Fix))
			}
		}
		steps, hidden := pathRows(r.CriticalPath, parents[i])
		if len(steps) > 0 {
			b.WriteString("\n### Critical path\n\n| span | service | operation | start | self |\n|---|---|---|---:|---:|\n")
			for _, s := range steps {
				fmt.Fprintf(&b, "| `%s` | %s | %s%s | %s | %s |\n", s.SpanID, mdCell(s.Service), strings.Repeat("· ", min(s.Depth, 8)),
					mdCell(model.Clip(s.Operation, 80)), fmtMS(s.StartMS), fmtMS(s.SelfMS))
			}
			if hidden > 0 {
				fmt.Fprintf(&b, "\n%d more spans on the path with less self time.\n", hidden)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// inputName is how messages name a trace file argument.
func inputName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// skipUntimed drops the spans of traces read from the input name that
// carry no start time, saying so on stderr: shown or compared, they would
// sit at 1970 and stretch their trace over 56 years.
func skipUntimed(cmd, name string, traces []traceio.Trace, stderr io.Writer) []traceio.Trace {
	traces, dropped := traceio.DropUntimed(traces)
	if dropped > 0 {
		fmt.Fprintf(stderr, "tracedx %s: %s: skipped %s without a start time (a Zipkin span without timestamp "+
			"or annotations); live ingest rejects them too\n", cmd, name, plural(dropped, "span"))
	}
	return traces
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// byImpact orders findings for a reviewer: those failing the gate first,
// then by the time a fix would save, then by severity.
func byImpact(fs []analyze.Finding, g gate) []analyze.Finding {
	out := append([]analyze.Finding(nil), fs...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if ga, gb := g.matches(a), g.matches(b); ga != gb {
			return ga
		}
		if a.ImpactMS != b.ImpactMS {
			return a.ImpactMS > b.ImpactMS
		}
		return a.Severity.Rank() > b.Severity.Rank()
	})
	return out
}

// whyWithGated appends to the why chain each gated finding it does not
// already tell, so the comment explains every reason the check failed.
func whyWithGated(why []string, findings []analyze.Finding, g gate) []string {
	out := append([]string(nil), why...)
	told := strings.Join(why, "\n")
	for _, f := range findings {
		if !g.matches(f) || strings.Contains(told, f.Title) {
			continue
		}
		line := fmt.Sprintf("Also `%s` (%s): %s", f.Kind, f.Severity, f.Title)
		if f.ImpactMS >= 0.1 {
			line += fmt.Sprintf(" — %s of the request could be saved", fmtMS(f.ImpactMS))
		}
		if f.Fix != "" {
			line += ". Fix: " + f.Fix
		}
		out = append(out, line)
	}
	return out
}

// pathRows picks the critical-path rows to show (the most self time, with
// their ancestors on the path so no row hangs without its parent) and puts
// them in tree order: each parent above its children, siblings by start.
func pathRows(steps []analyze.PathStep, parents map[string]string) ([]analyze.PathStep, int) {
	byID := make(map[string]int, len(steps))
	for i, s := range steps {
		byID[s.SpanID] = i
	}
	// up finds the nearest ancestor of step i that is on the path.
	up := func(i int) int {
		for id, ok := parents[steps[i].SpanID]; ok; id, ok = parents[id] {
			if j, on := byID[id]; on {
				return j
			}
		}
		return -1
	}
	keep := make([]bool, len(steps))
	kept, _ := waterfallSteps(steps)
	for _, s := range kept {
		for i := byID[s.SpanID]; i >= 0 && !keep[i]; i = up(i) {
			keep[i] = true
		}
	}
	children := map[int][]int{}
	for i := range steps {
		if keep[i] {
			children[up(i)] = append(children[up(i)], i)
		}
	}
	var out []analyze.PathStep
	var walk func(p int)
	walk = func(p int) {
		kids := children[p]
		sort.SliceStable(kids, func(a, b int) bool { return steps[kids[a]].StartMS < steps[kids[b]].StartMS })
		for _, k := range kids {
			out = append(out, steps[k])
			walk(k)
		}
	}
	walk(-1)
	return out, len(steps) - len(out)
}

// writeSystemic prints the cross-trace findings after the traces, with
// when (in trace time) each was detected and the culprit it names.
func writeSystemic(w io.Writer, fs []systemic.Finding, md bool) error {
	if len(fs) == 0 {
		return nil
	}
	var b strings.Builder
	if md {
		b.WriteString("\n## Across traces\n\n| detected | severity | kind | finding | culprit |\n|---|---|---|---|---|\n")
	} else {
		b.WriteString("\nacross traces (detected in trace time)\n")
	}
	for _, f := range fs {
		culprit := "-"
		if f.Culprit != nil {
			culprit = strings.TrimSpace(f.Culprit.Service + " " + f.Culprit.Operation)
		}
		at := f.Time.UTC().Format("2006-01-02 15:04:05")
		if md {
			fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s |\n", at, f.Severity, f.Kind, mdCell(f.Title), mdCell(culprit))
			continue
		}
		fmt.Fprintf(&b, "  %s  %-8s %-22s %s\n", at, strings.ToUpper(string(f.Severity)), f.Kind, f.Title)
		if f.Culprit != nil {
			fmt.Fprintf(&b, "  %19s  %-8s %-22s culprit: %s (%s)\n", "", "", "", culprit, f.Culprit.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
