// Package version holds build information, set with -ldflags at release
// time and read from the Go build info otherwise.
package version

import "runtime/debug"

// Version is the release version; overridden with
// -ldflags "-X github.com/tracedx/tracedx/internal/version.Version=v1.2.3".
var Version = "0.1.0-dev"

// Revision returns the VCS revision the binary was built from, if known.
func Revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
