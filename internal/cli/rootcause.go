package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
)

func init() { extraCommands["rootcause"] = RootCause }

const rootcauseHelp = `Usage: tracedx rootcause [flags] --baseline FILE... --incident FILE...

Ranks the services (and their operations) most likely to have caused an incident, by comparing the
traces of the incident with traces of a normal period: growth of each service's own time on the
critical path, time lost in front of a service (its callers wait longer than it works), where new
errors start, calls that appeared or vanished, and the places the per-trace findings blame. A score is
the share of the incident a cause explains. docs/rootcause.md describes the scoring.

Files hold OTLP JSON, OTLP protobuf, Jaeger JSON or Zipkin v2 JSON, as for 'tracedx compare'; several
files may follow one --baseline or --incident. --service (and --operation) rank within one endpoint: the
subtree under its first span in each trace.

Exit status: 0 done, 2 bad flags, unreadable input or no trace with the endpoint, 1 the output could not
be written.

Flags:
`

// RootCause runs `tracedx rootcause`; see rootcauseHelp.
func RootCause(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newCommand("rootcause", rootcauseHelp, stderr)
	fs, usageErr := cmd.fs, cmd.usageErr
	var base, inc fileList
	fs.Var(&base, "baseline", "a trace file of the normal period (repeatable; several files may follow)")
	fs.Var(&inc, "incident", "a trace file of the incident (repeatable; several files may follow)")
	format := fs.String("format", "text", "output format: text, json or markdown")
	service := fs.String("service", "", "rank within this service's endpoint instead of whole traces")
	operation := fs.String("operation", "", "with --service, the span name of the endpoint")
	limit := fs.Int("limit", 5, "causes listed")
	findings := fs.Bool("findings", true, "analyze each trace and count the culprits its findings name")
	if code, done := cmd.parse(expandFileLists(args, "baseline", "incident"), stdout); done {
		return code
	}
	if code, done := cmd.checkFormat(*format); done {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected arguments %s: give files with --baseline and --incident", strings.Join(fs.Args(), " "))
	case len(base) == 0 || len(inc) == 0:
		return usageErr("both --baseline and --incident need at least one file")
	case *operation != "" && *service == "":
		return usageErr("--operation needs --service")
	case *limit <= 0:
		return usageErr("--limit must be positive, got %d", *limit)
	}
	if n := countStdin(base) + countStdin(inc); n > 1 {
		return usageErr("'-' (stdin) can be given only once")
	}
	var sides [2][][]model.Span
	for i, files := range [][]string{base, inc} {
		got, err := readSide(files, stdin, stderr, "rootcause")
		if err != nil {
			fmt.Fprintf(stderr, "tracedx rootcause: %v\n", err)
			return 2
		}
		sides[i] = got
	}
	opt := rootcause.Options{Service: *service, Operation: *operation, Limit: *limit}
	if *findings {
		opt.BaselineFindings, opt.IncidentFindings = findingsOf(sides[0]), findingsOf(sides[1])
	}
	rep, err := rootcause.Rank(sides[0], sides[1], opt)
	if err != nil {
		fmt.Fprintf(stderr, "tracedx rootcause: %v\n", err)
		return 2
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	default:
		err = writeRootCause(stdout, rep, len(sides[0]), len(sides[1]), *format != "text")
	}
	if err != nil {
		fmt.Fprintf(stderr, "tracedx rootcause: writing output: %v\n", err)
		return 1
	}
	return 0
}

func countStdin(files []string) int {
	n := 0
	for _, f := range files {
		if f == "-" {
			n++
		}
	}
	return n
}

func findingsOf(traces [][]model.Span) []analyze.Finding {
	var out []analyze.Finding
	for _, tr := range traces {
		out = append(out, analyze.Analyze(tr, analyze.Options{}).Findings...)
	}
	return out
}

// writeRootCause prints the ranking as text or, with md, markdown: the
// same lines, markdown only adds headings and list markers.
func writeRootCause(w io.Writer, rep rootcause.Report, nBase, nInc int, md bool) error {
	var b strings.Builder
	head, item, sub := "", "", "     - "
	if md {
		head, item, sub = "## ", "", "   - "
	}
	fmt.Fprintf(&b, "%sRoot causes: %d incident traces against %d baseline traces\n\n", head, nInc, nBase)
	if len(rep.Causes) == 0 {
		b.WriteString("Nothing stands out: no service explains a change between the windows.\n")
	}
	for i, c := range rep.Causes {
		name := strings.TrimSpace(c.Service + " " + c.Operation)
		if md {
			name = "**" + mdCell(name) + "**"
		}
		fmt.Fprintf(&b, "%s%d. %s  score %.2f\n", item, i+1, name, c.Score)
		for _, e := range c.Evidence {
			text := e.Text
			if md {
				text = mdCell(text)
			}
			fmt.Fprintf(&b, "%s%s\n", sub, text)
		}
		if c.Examples.Baseline != "" && c.Examples.Incident != "" {
			fmt.Fprintf(&b, "%sexamples: baseline %s, incident %s\n", sub, c.Examples.Baseline, c.Examples.Incident)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
