package web

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	ui "github.com/tracedx/tracedx/web"
)

func get(t *testing.T, h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

func TestEmbeddedUI(t *testing.T) {
	h := Handler()

	rr := get(t, h, "/", nil)
	if rr.Code != 200 || !strings.HasPrefix(rr.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("/: %d %q", rr.Code, rr.Header().Get("Content-Type"))
	}
	index := rr.Body.String()
	if !strings.Contains(index, `<script type="module" src="/js/app.js">`) {
		t.Fatalf("index.html does not load the app module:\n%s", index)
	}
	if rr.Header().Get("ETag") == "" || rr.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("caching headers: %v", rr.Header())
	}

	// Every script the index and the router load must be served as JS
	// (browsers refuse ES modules with another type).
	for _, p := range []string{"/js/app.js", "/js/trace.js", "/js/search.js", "/js/overview.js", "/js/compare.js", "/js/findings.js", "/js/theme.js", "/js/traceql.js"} {
		rr := get(t, h, p, nil)
		if rr.Code != 200 || rr.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
			t.Errorf("%s: %d %q", p, rr.Code, rr.Header().Get("Content-Type"))
		}
		if rr.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
	}
	if rr := get(t, h, "/css/app.css", nil); rr.Code != 200 || !strings.HasPrefix(rr.Header().Get("Content-Type"), "text/css") {
		t.Errorf("css: %d %q", rr.Code, rr.Header().Get("Content-Type"))
	}

	// SPA fallback: routes get index.html so shared URLs load.
	for _, p := range []string{"/search", "/trace/0af7651916cd43dd8448eb211c80319c", "/compare?a=1&b=2", "/findings/", "/tempofoo"} {
		rr := get(t, h, p, nil)
		if rr.Code != 200 || rr.Body.String() != index {
			t.Errorf("%s: want index.html, got %d (%d bytes)", p, rr.Code, rr.Body.Len())
		}
	}
	// Missing assets and API paths are real 404s, never HTML.
	for _, p := range []string{"/js/missing.js", "/api/v1/nope", "/api", "/tempo/api/search", "/tempo"} {
		rr := get(t, h, p, nil)
		if rr.Code != 404 || strings.Contains(rr.Body.String(), "<html") {
			t.Errorf("%s: want 404 without HTML, got %d", p, rr.Code)
		}
	}
}

func TestConditionalAndGzip(t *testing.T) {
	body := strings.Repeat("export const x = 1;\n", 200)
	h, err := newHandler(fstest.MapFS{
		"ui/index.html": {Data: []byte("<!doctype html><title>x</title>")},
		"ui/js/a.js":    {Data: []byte(body)},
	}, "ui")
	if err != nil {
		t.Fatal(err)
	}
	rr := get(t, h, "/js/a.js", map[string]string{"Accept-Encoding": "br, gzip"})
	if rr.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("no gzip: %v", rr.Header())
	}
	zr, err := gzip.NewReader(bytes.NewReader(rr.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if string(plain) != body {
		t.Fatal("gzip body differs")
	}
	if rr := get(t, h, "/js/a.js", map[string]string{"Accept-Encoding": "gzip;q=0"}); rr.Header().Get("Content-Encoding") != "" || rr.Body.String() != body {
		t.Fatal("gzip;q=0 must get identity")
	}
	etag := rr.Header().Get("ETag")
	if rr := get(t, h, "/js/a.js", map[string]string{"If-None-Match": etag}); rr.Code != http.StatusNotModified || rr.Body.Len() != 0 {
		t.Fatalf("If-None-Match: %d", rr.Code)
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", rec.Code)
	}
	if _, err := newHandler(fstest.MapFS{"ui/a.js": {Data: []byte("x")}}, "ui"); err == nil {
		t.Fatal("a tree without index.html must be refused")
	}
}

// Every relative import of every module must resolve to a served module:
// there is no bundler to catch a missing or misnamed file.
func TestModuleImportsResolve(t *testing.T) {
	h := Handler()
	importRe := regexp.MustCompile(`(?:from|import\()\s*'(\./[^']+)'`)
	entries, err := fs.ReadDir(ui.UI, "ui/js")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".js") {
			continue
		}
		src, err := fs.ReadFile(ui.UI, "ui/js/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range importRe.FindAllStringSubmatch(string(src), -1) {
			p := path.Join("/js", m[1])
			n++
			if rr := get(t, h, p, nil); rr.Code != 200 || rr.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
				t.Errorf("%s imports %s: served %d %q", e.Name(), p, rr.Code, rr.Header().Get("Content-Type"))
			}
		}
	}
	if n < 10 {
		t.Fatalf("found only %d imports; the pattern no longer matches the sources", n)
	}
}
