package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/faultbed"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
)

func runRootCause(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := RootCause(args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func flatten(traces [][]model.Span) []model.Span {
	var out []model.Span
	for _, tr := range traces {
		out = append(out, tr...)
	}
	return out
}

// A recorded incident, written as files the way a user exports them, is
// ranked with the faulty service first in every format.
func TestRootCauseCLI(t *testing.T) {
	w, err := faultbed.Generate(faultbed.Config{Seed: 5, Class: faultbed.NetworkDelay, TracesPerWindow: 80})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	half := len(w.Baseline) / 2
	b1 := writeOTLP(t, dir, "base1.json", flatten(w.Baseline[:half]), false)
	b2 := writeOTLP(t, dir, "base2.pb", flatten(w.Baseline[half:]), true)
	inc := writeOTLP(t, dir, "incident.json", flatten(w.Incident), false)

	out, errOut, code := runRootCause(t, "--baseline", b1, b2, "--incident", inc, "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep rootcause.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	if len(rep.Causes) == 0 || rep.Causes[0].Service != w.Fault.Service {
		t.Fatalf("%s: causes %+v", w.Fault.String(), rep.Causes)
	}

	out, _, code = runRootCause(t, "--baseline", b1, "--baseline", b2, "--incident", inc)
	if code != 0 {
		t.Fatal("text format failed")
	}
	mustContain(t, "text", out, "1. "+w.Fault.Service, "examples: baseline ", "in front of "+w.Fault.Service)
	out, _, code = runRootCause(t, "--baseline", b1, "--incident", inc, "--format", "markdown")
	if code != 0 {
		t.Fatal("markdown format failed")
	}
	mustContain(t, "markdown", out, "## Root causes", "**"+w.Fault.Service)
}

func TestRootCauseBadInput(t *testing.T) {
	w, err := faultbed.Generate(faultbed.Config{Seed: 6, Class: faultbed.Exception, TracesPerWindow: 30})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := writeOTLP(t, dir, "b.json", flatten(w.Baseline), false)
	i := writeOTLP(t, dir, "i.json", flatten(w.Incident), false)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--baseline", b}, "both --baseline and --incident"},
		{[]string{"--baseline", b, "--incident", i, "--format", "xml"}, "--format must be"},
		{[]string{"--baseline", b, "--incident", i, "--operation", "x"}, "--operation needs --service"},
		{[]string{"--baseline", b, "--incident", dir + "/missing.json"}, "cannot read traces"},
		{[]string{"--baseline", b, "--incident", i, "--service", "nosuch"}, "no traces in the baseline window through endpoint nosuch"},
		{[]string{"extra", "--baseline", b, "--incident", i}, "unexpected arguments"},
	} {
		_, errOut, code := runRootCause(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
