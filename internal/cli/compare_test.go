package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

func writeOTLP(t *testing.T, dir, name string, spans []model.Span, proto bool) string {
	t.Helper()
	td := otlpconv.ToTraces(spans)
	var b []byte
	var err error
	if proto {
		b, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	} else {
		b, err = (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompareCLI(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ga, gb := workload.New(1), workload.New(2)
	ga.ItemQueries, gb.ItemQueries = 2, 51
	a := writeOTLP(t, dir, "a.json", ga.Checkout(t0), false)
	b := writeOTLP(t, dir, "b.pb", gb.Checkout(t0), true)

	var out, errb bytes.Buffer
	if code := Compare([]string{a, b}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "2 → 51") || !strings.Contains(out.String(), "SELECT id, name, price FROM items WHERE id = ?") {
		t.Errorf("text output lacks the count change:\n%s", out.String())
	}

	out.Reset()
	stdin, _ := os.ReadFile(a)
	if code := Compare([]string{"--format", "json", "-", b}, bytes.NewReader(stdin), &out, &errb); code != 0 {
		t.Fatalf("json exit %d: %s", code, errb.String())
	}
	var r compare.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Mode != "traces" || len(r.CountChanges) == 0 || r.CountChanges[0].CountB != 51 {
		t.Errorf("json output: %v %s", err, out.String())
	}

	// Files with several traces are compared as groups.
	var many []model.Span
	for i := 0; i < 5; i++ {
		many = append(many, gb.Checkout(t0.Add(time.Duration(i)*time.Second))...)
	}
	g := writeOTLP(t, dir, "group.json", many, false)
	out.Reset()
	if code := Compare([]string{"--format=json", "--service", "checkout", a, g}, nil, &out, &errb); code != 0 {
		t.Fatalf("group exit %d: %s", code, errb.String())
	}
	var gr compare.GroupResult
	if err := json.Unmarshal(out.Bytes(), &gr); err != nil || gr.Mode != "groups" || gr.B.Traces != 5 {
		t.Errorf("group output: %v %s", err, out.String())
	}

	junk := filepath.Join(dir, "junk.json")
	os.WriteFile(junk, []byte(`{"resourceSpans": 12}`), 0o644)
	for _, args := range [][]string{{a}, {a, filepath.Join(dir, "missing.json")}, {a, junk}, {"--format", "xml", a, b}, {"-", "-"}} {
		errb.Reset()
		if code := Compare(args, bytes.NewReader(nil), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}
