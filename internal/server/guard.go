package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// guard wraps the UI and query API handlers. Every reply carries
// X-Content-Type-Options: nosniff, so a browser never reads a JSON or text
// reply as script or HTML. Requests must name an allowed Host: a web page
// the user visits can point its own domain at 127.0.0.1 (DNS rebinding)
// and then read the local UI and APIs as same-origin; its requests still
// carry its domain in Host, which is refused here.
func guard(listen string, allowed []string, next http.Handler) http.Handler {
	hosts := allowedHosts(listen, allowed)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !hosts.allow(r.Host) {
			http.Error(w, fmt.Sprintf("Host %q is not allowed: if tracedx is reached under this name, add it to listen.allowed_hosts (--allowed-hosts)",
				truncateHost(r.Host)), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type hostSet struct {
	any   bool
	names map[string]bool
}

// allowedHosts: the listen address's host, this machine's name, the
// configured names and ("*") anything. Localhost names and IP literals are
// always allowed: a rebinding page's Host is its own domain name, never an
// IP address.
func allowedHosts(listen string, extra []string) hostSet {
	hs := hostSet{names: map[string]bool{}}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		hs.names[strings.ToLower(h)] = true
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hs.names[strings.ToLower(h)] = true
	}
	for _, h := range extra {
		if h == "*" {
			hs.any = true
		}
		hs.names[strings.ToLower(strings.TrimSuffix(h, "."))] = true
	}
	return hs
}

func (hs hostSet) allow(hostport string) bool {
	if hs.any || hostport == "" { // HTTP/1.0 without Host: not a browser
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	return hs.names[host]
}

func truncateHost(h string) string {
	if len(h) > 100 {
		return h[:100] + "…"
	}
	return h
}
