// Package web holds the browser UI of tracedx as plain ES modules and CSS
// (no build step, so `go build` needs no Node). internal/web serves it.
package web

import "embed"

// UI is the static tree under ui/: index.html, css/, js/.
//
//go:embed ui
var UI embed.FS
