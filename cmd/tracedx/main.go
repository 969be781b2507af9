// Command tracedx is a distributed-tracing backend that diagnoses traces.
// See `tracedx help`.
package main

import (
	"os"

	"github.com/tracedx/tracedx/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
