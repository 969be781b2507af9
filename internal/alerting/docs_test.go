package alerting

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocumentedRulesLoad keeps docs/alerting.md true: its rules file
// loads and validates, and each documented kind of condition is in it.
func TestDocumentedRulesLoad(t *testing.T) {
	doc, err := os.ReadFile("../../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, part := range strings.Split(string(doc), "```yaml\n")[1:] {
		b, _, _ := strings.Cut(part, "```")
		if strings.HasPrefix(b, "rules:") {
			block = b
		}
	}
	if block == "" {
		t.Fatal("no rules file in docs/alerting.md")
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := LoadRuleFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(rules); err != nil {
		t.Fatalf("documented rules: %v", err)
	}
	types := map[string]bool{}
	for i := range rules {
		types[rules[i].Type()] = true
	}
	for _, k := range []string{"red", "slo", "findings", "cross_trace"} {
		if !types[k] {
			t.Errorf("the documented rules show no %s condition", k)
		}
	}
}
