package docscheck

import (
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var routeRE = regexp.MustCompile(`"((?:GET|POST|PUT|DELETE|PATCH) /api/v1/[^"]*)"`)

// TestEveryRouteDocumented finds the /api/v1 routes the code registers and
// expects each in docs/api.md as a `GET /api/v1/...` heading, so a route
// added by any component shows up in the reference.
func TestEveryRouteDocumented(t *testing.T) {
	api := read(t, filepath.Join(root, "docs", "api.md"))
	routes := map[string]string{}
	err := filepath.WalkDir(filepath.Join(root, "internal"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		for _, m := range routeRE.FindAllStringSubmatch(read(t, path), -1) {
			routes[m[1]] = rel(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) < 15 {
		t.Fatalf("found only %d routes; is the pattern broken?", len(routes))
	}
	for route, where := range routes {
		if !strings.Contains(api, "\n## "+route+"\n") && !strings.Contains(api, "\n## "+route+"?") {
			t.Errorf("%s (registered in %s) has no section in docs/api.md", route, where)
		}
	}
}
