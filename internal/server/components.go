package server

import (
	"net/http"

	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/web"
)

// tempoHandler returns the Tempo-compatible API.
func tempoHandler(st store.Store, p *pipeline) http.Handler { return nil }

// uiHandler serves the web UI.
func uiHandler() http.Handler { return web.Handler() }

// extraRoutes are the cross-trace analysis endpoints.
func (s *Server) extraRoutes(st store.Store, p *pipeline) []func(*http.ServeMux) { return nil }
