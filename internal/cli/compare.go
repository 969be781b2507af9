package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/traceio"
)

func init() { extraCommands["compare"] = Compare }

const compareHelp = `Usage: tracedx compare [flags] A B
       tracedx compare [flags] --a FILE... --b FILE...

Compares side A (say, fast or successful requests) with side B (slow or failing ones): calls only on
one side, repeated-call count changes, nodes by duration difference (own time vs children), spans
failing on one side only. Spans are matched by their (service, operation) path from the root and their
order among equal siblings.

A side is one file (A, B) or the files after --a / --b (repeat the flag, or list several files after
it, e.g. --a fast/*.json --b slow/*.json). Files hold OTLP JSON (a request, or the Collector file
exporter's one request per line), OTLP protobuf, Jaeger JSON (UI download or API response) or Zipkin
v2 JSON; the format is detected from the content. '-' reads stdin (on one side only). Spans of one
trace id on one side are joined, even across files.

--mode auto (the default): when each side holds exactly one trace, the two traces are compared span
by span; otherwise the sides are compared as two groups (per path: presence, mean count and time per
trace, p50 per call, error share) and every trace on a side counts. --mode traces insists on one trace
per side; --mode groups compares as groups even single traces. --service (and --operation) compare
groups from the first span of that service (endpoint) in each trace instead of the trace root.

Exit status: 0 done, 2 bad flags or unreadable input, 1 the output could not be written.

Flags:
`

// Compare runs `tracedx compare`; see compareHelp for the semantics.
func Compare(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newCommand("compare", compareHelp, stderr)
	fs, usageErr := cmd.fs, cmd.usageErr
	var filesA, filesB fileList
	fs.Var(&filesA, "a", "a file of side A (repeatable; several files may follow one --a)")
	fs.Var(&filesB, "b", "a file of side B (repeatable; several files may follow one --b)")
	format := fs.String("format", "text", "output format: text, json or markdown")
	mode := fs.String("mode", "auto", "auto, traces or groups (see above)")
	service := fs.String("service", "", "groups: compare from the first span of this service instead of the trace root")
	operation := fs.String("operation", "", "groups: with --service, the span name of the endpoint")
	limit := fs.Int("limit", 10, "entries per section")
	if code, done := cmd.parse(expandSideLists(args), stdout); done {
		return code
	}
	if code, done := cmd.checkFormat(*format); done {
		return code
	}
	switch *mode {
	case "auto", "traces", "groups":
	default:
		return usageErr("--mode must be auto, traces or groups, got %q", *mode)
	}
	if *operation != "" && *service == "" {
		return usageErr("--operation needs --service")
	}
	if *service != "" && *mode == "traces" {
		return usageErr("--service selects an endpoint in each trace of a group; it does not go with --mode traces")
	}
	if *limit <= 0 {
		return usageErr("--limit must be positive, got %d", *limit)
	}
	sides := [2][]string{filesA, filesB}
	switch {
	case len(filesA) > 0 || len(filesB) > 0:
		if fs.NArg() > 0 {
			return usageErr("give the sides either as A B or with --a/--b, not both (extra arguments: %s)", strings.Join(fs.Args(), " "))
		}
		if len(filesA) == 0 || len(filesB) == 0 {
			return usageErr("both --a and --b need at least one file")
		}
	case fs.NArg() == 2:
		sides = [2][]string{{fs.Arg(0)}, {fs.Arg(1)}}
	default:
		return usageErr("want two files A B (or --a FILE... --b FILE...), got %d argument(s)", fs.NArg())
	}
	stdinUses := 0
	for _, side := range sides {
		for _, p := range side {
			if p == "-" {
				stdinUses++
			}
		}
	}
	if stdinUses > 1 {
		return usageErr("'-' (stdin) can be given only once")
	}

	var traces [2][][]model.Span
	for i, side := range sides {
		got, err := readSide(side, stdin, stderr, "compare")
		if err != nil {
			fmt.Fprintf(stderr, "tracedx compare: %v\n", err)
			return 2
		}
		traces[i] = got
	}
	single := len(traces[0]) == 1 && len(traces[1]) == 1
	if *mode == "traces" && !single {
		return usageErr("--mode traces needs one trace per side; side A holds %d, side B %d", len(traces[0]), len(traces[1]))
	}
	opt := compare.Options{Limit: *limit}
	var out any
	if *mode == "traces" || (*mode == "auto" && single && *service == "") {
		out = compare.Traces(traces[0][0], traces[1][0], opt)
	} else {
		gopt := compare.GroupOptions{Options: opt}
		if *service != "" {
			gopt.Root = compare.EndpointRoot(*service, *operation)
		}
		res := compare.Groups(traces[0], traces[1], gopt)
		for _, s := range []struct {
			name string
			n    int
		}{{"A", res.A.Traces}, {"B", res.B.Traces}} {
			if s.n == 0 {
				fmt.Fprintf(stderr, "tracedx compare: no trace of side %s has a span of service %q operation %q\n", s.name, *service, *operation)
				return 2
			}
		}
		out = res
	}
	var err error
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(out)
	case "markdown", "md":
		err = writeCompareMarkdown(stdout, out)
	default:
		err = writeCompareText(stdout, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tracedx compare: writing output: %v\n", err)
		return 1
	}
	return 0
}

// fileList is a repeatable flag.
type fileList []string

func (f *fileList) String() string { return strings.Join(*f, " ") }

func (f *fileList) Set(v string) error {
	if v == "" {
		return errors.New("empty file name")
	}
	*f = append(*f, v)
	return nil
}

// expandSideLists rewrites "--a x y --b z" into "--a x --a y --b z" so a
// shell glob can follow --a/--b; the flag package alone stops at the
// second file. A list ends at the next flag or at "--".
func expandSideLists(args []string) []string { return expandFileLists(args, "a", "b") }

// expandFileLists does what expandSideLists does for the named list flags.
func expandFileLists(args []string, names ...string) []string {
	isList := map[string]bool{}
	for _, n := range names {
		isList[n] = true
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		out = append(out, arg)
		if arg == "--" {
			return append(out, args[i+1:]...)
		}
		name := strings.TrimLeft(arg, "-")
		if !isList[name] || len(arg)-len(name) > 2 || i+1 >= len(args) {
			continue
		}
		// The flag's own value, then every further non-flag argument.
		i++
		out = append(out, args[i])
		for i+1 < len(args) && (args[i+1] == "-" || !strings.HasPrefix(args[i+1], "-")) {
			i++
			out = append(out, arg, args[i])
		}
	}
	return out
}

// readSide reads the files of one side and joins spans by trace id, so a
// trace exported in parts (or in several files) is compared whole. Spans
// without a start time are skipped as analyze skips them.
func readSide(paths []string, stdin io.Reader, stderr io.Writer, cmd string) ([][]model.Span, error) {
	idx := map[model.TraceID]int{}
	var out [][]model.Span
	for _, p := range paths {
		got, _, err := traceio.ReadInput(p, stdin)
		if err != nil {
			return nil, fmt.Errorf("cannot read traces from %w", err)
		}
		name := inputName(p)
		got = skipUntimed(cmd, name, got, stderr)
		if len(got) == 0 {
			return nil, fmt.Errorf("%s holds no spans", name)
		}
		for _, tr := range got {
			i, ok := idx[tr.ID]
			if !ok {
				i = len(out)
				idx[tr.ID] = i
				out = append(out, nil)
			}
			out[i] = append(out[i], tr.Spans...)
		}
	}
	return out, nil
}

// cmpReport is a comparison laid out once for every human format: the
// text and markdown writers differ only in how they draw it.
type cmpReport struct {
	title    string
	sides    []string
	summary  []string
	sections []cmpSection
}

// cmpSection is a table whose last column is the call path (the long one).
type cmpSection struct {
	title string
	cols  []string
	rows  [][]string
}

func ms(f float64) string { return fmt.Sprintf("%.1f ms", f) }

func arrow(a, b string) string { return a + " → " + b }

func pct(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }

func compareReport(out any) (cmpReport, error) {
	var rep cmpReport
	var only []compare.OnlyInOne
	var counts []compare.CountChange
	var errs []compare.ErrorDiff
	var durations cmpSection
	switch r := out.(type) {
	case compare.Result:
		rep.title = "Trace comparison"
		side := func(name string, t compare.TraceInfo) string {
			return fmt.Sprintf("%s: trace %s, %s %s, %s, %d spans, %d errors", name, t.TraceID,
				t.RootService, t.RootOperation, ms(t.DurationMS), t.SpanCount, t.ErrorCount)
		}
		rep.sides = []string{side("A", r.A), side("B", r.B)}
		rep.sides = append(rep.sides, fmt.Sprintf("%d spans matched", r.Matched))
		rep.summary, only, counts, errs = r.Summary, r.OnlyInOne, r.CountChanges, r.Errors
		durations = cmpSection{title: "Largest duration differences (B - A)", cols: []string{"diff", "A → B", "own time", "children", "call"}}
		for _, d := range r.Durations {
			durations.rows = append(durations.rows, []string{fmt.Sprintf("%+.1f ms", d.DiffMS), arrow(num(d.DurationMSA), ms(d.DurationMSB)),
				fmt.Sprintf("%+.1f ms", d.SelfDiffMS), fmt.Sprintf("%+.1f ms", d.ChildrenDiffMS), d.Path})
		}
	case compare.GroupResult:
		rep.title = "Group comparison"
		side := func(name string, g compare.GroupInfo) string {
			return fmt.Sprintf("%s: %d traces, mean %s, p50 %s, %s failed, %.1f spans per trace", name, g.Traces,
				ms(g.MeanDurationMS), ms(g.P50DurationMS), pct(g.ErrorShare), g.MeanSpanCount)
		}
		rep.sides = []string{side("A", r.A), side("B", r.B)}
		rep.summary, only, counts, errs = r.Summary, r.OnlyInOne, r.CountChanges, r.Errors
		durations = cmpSection{title: "Largest differences in time per trace (B - A)", cols: []string{"diff", "per trace A → B", "p50 per call A → B", "call"}}
		for _, d := range r.Durations {
			durations.rows = append(durations.rows, []string{fmt.Sprintf("%+.1f ms", d.DiffMS),
				arrow(statMS(d.A, perTrace), statMS(d.B, perTrace)), arrow(statMS(d.A, p50), statMS(d.B, p50)),
				d.Path})
		}
	default:
		return rep, fmt.Errorf("unexpected result %T", out)
	}
	sec := cmpSection{title: "Repeated calls whose count changed", cols: []string{"count A → B", "time A → B", "call"}}
	for _, c := range counts {
		sec.rows = append(sec.rows, []string{arrow(num(c.CountA), num(c.CountB)), arrow(num(c.DurationMSA), ms(c.DurationMSB)), c.Path})
	}
	rep.sections = append(rep.sections, sec)
	sec = cmpSection{title: "Calls on one side only", cols: []string{"side", "count", "time", "failed", "call"}}
	sorted := append([]compare.OnlyInOne(nil), only...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Side < sorted[j].Side })
	for _, o := range sorted {
		sec.rows = append(sec.rows, []string{"only " + strings.ToUpper(o.Side), "x" + num(o.Count), ms(o.DurationMS), fmt.Sprint(o.Failed), o.Path})
	}
	rep.sections = append(rep.sections, sec, durations)
	sec = cmpSection{title: "Error differences", cols: []string{"failed A", "failed B", "error", "call"}}
	for _, e := range errs {
		var msg []string
		if e.ErrorB != "" {
			msg = append(msg, "B: "+e.ErrorB)
		}
		if e.ErrorA != "" {
			msg = append(msg, "A: "+e.ErrorA)
		}
		sec.rows = append(sec.rows, []string{pct(e.ErrorShareA), pct(e.ErrorShareB), strings.Join(msg, "; "), e.Path})
	}
	rep.sections = append(rep.sections, sec)
	return rep, nil
}

func perTrace(p *compare.PathStats) float64 { return p.PerTraceMS }

func p50(p *compare.PathStats) float64 { return p.P50MS }

// statMS reads one statistic of a side that may lack the path.
func statMS(p *compare.PathStats, f func(*compare.PathStats) float64) string {
	if p == nil {
		return "-"
	}
	return ms(f(p))
}

func writeCompareText(w io.Writer, out any) error {
	rep, err := compareReport(out)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(rep.title + "\n")
	for _, s := range rep.sides {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	if len(rep.summary) > 0 {
		b.WriteString("\nSummary:\n")
		for _, s := range rep.summary {
			fmt.Fprintf(&b, "  - %s\n", s)
		}
	}
	for _, sec := range rep.sections {
		if len(sec.rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", sec.title)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  %s\n", strings.Join(sec.cols, "\t"))
		for _, row := range sec.rows {
			fmt.Fprintf(tw, "  %s\n", strings.Join(row, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func writeCompareMarkdown(w io.Writer, out any) error {
	rep, err := compareReport(out)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", rep.title)
	for _, s := range rep.sides {
		fmt.Fprintf(&b, "- %s\n", mdCell(s))
	}
	if len(rep.summary) > 0 {
		b.WriteString("\n### Summary\n\n")
		for _, s := range rep.summary {
			fmt.Fprintf(&b, "- %s\n", mdCell(s))
		}
	}
	for _, sec := range rep.sections {
		if len(sec.rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### %s\n\n| %s |\n|%s\n", sec.title, strings.Join(sec.cols, " | "), strings.Repeat("---|", len(sec.cols)))
		for _, row := range sec.rows {
			cells := make([]string, len(row))
			for i, c := range row {
				cells[i] = mdCell(c)
			}
			// The call path is code-like (statements, routes): keep it verbatim.
			cells[len(cells)-1] = "`" + strings.ReplaceAll(cells[len(cells)-1], "`", "'") + "`"
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func num(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.1f", f)
}
