// Package web serves the embedded single-page UI. Unknown paths that look
// like routes (no file extension) get index.html so that every UI URL can be
// shared and reloaded; API paths (/api/, and /tempo/ where the server mounts
// the Tempo-compatible API for the TraceQL box) never do, so API typos and
// an unmounted API stay 404 and the UI can say what is missing.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	ui "github.com/tracedx/tracedx/web"
)

type asset struct {
	body        []byte
	gz          []byte // nil when compression does not pay
	etag        string
	contentType string
}

// Handler returns the UI handler. Assets are read and compressed once, so
// serving is a map lookup; the UI is small (tens of kB).
func Handler() http.Handler {
	h, err := newHandler(ui.UI, "ui")
	if err != nil {
		// The tree is compiled into the binary: failing here is a build bug.
		panic(fmt.Sprintf("web: loading embedded UI: %v", err))
	}
	return h
}

// DevHandler serves the UI from a directory on disk, re-read on every
// request, so edits show up on reload (web/devserver uses it).
func DevHandler(dir fs.FS) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := newHandler(dir, ".")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	})
}

type handler struct {
	assets map[string]*asset // by URL path, "/index.html"
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
}

func newHandler(fsys fs.FS, root string) (*handler, error) {
	sub, err := fs.Sub(fsys, root)
	if err != nil {
		return nil, fmt.Errorf("web: sub %s: %w", root, err)
	}
	h := &handler{assets: map[string]*asset{}}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, p)
		if err != nil {
			return fmt.Errorf("web: read %s: %w", p, err)
		}
		ext := path.Ext(p)
		ct := contentTypes[ext]
		if ct == "" {
			ct = mime.TypeByExtension(ext)
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		a := &asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if compressible(ct) && len(body) > 512 {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			_, _ = zw.Write(body)
			_ = zw.Close()
			if buf.Len() < len(body)*9/10 {
				a.gz = buf.Bytes()
			}
		}
		h.assets["/"+p] = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h.assets["/index.html"] == nil {
		return nil, fmt.Errorf("web: %s/index.html missing", root)
	}
	return h, nil
}

// TempoPrefix is where the UI expects the Tempo-compatible API on its own
// origin (the TraceQL search box calls TempoPrefix + "/api/search"). The
// server mounts it with http.StripPrefix(TempoPrefix, tempoHandler).
const TempoPrefix = "/tempo"

func isAPIPath(p string) bool {
	for _, pre := range []string{"/api", TempoPrefix} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

func compressible(ct string) bool {
	return strings.HasPrefix(ct, "text/") || strings.Contains(ct, "javascript") || strings.Contains(ct, "json") || strings.Contains(ct, "svg")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := path.Clean("/" + r.URL.Path)
	if isAPIPath(p) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprintf(w, "{\"error\":%q}\n", "no endpoint "+p)
		return
	}
	a := h.assets[p]
	if a == nil {
		if path.Ext(p) != "" {
			// A missing asset must not come back as HTML with status 200:
			// the browser would report a confusing MIME error instead.
			http.NotFound(w, r)
			return
		}
		a = h.assets["/index.html"]
		p = "/index.html"
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Vary", "Accept-Encoding")
	// File names carry no content hash (there is no build step), so the
	// browser revalidates every time; an unchanged asset costs a 304.
	hd.Set("Cache-Control", "no-cache")
	if p == "/index.html" {
		hd.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'")
		hd.Set("Referrer-Policy", "same-origin")
	}
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatch(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		hd.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	hd.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func acceptsGzip(h string) bool {
	for _, part := range strings.Split(h, ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(name) != "gzip" {
			continue
		}
		q = strings.ReplaceAll(strings.TrimSpace(q), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
