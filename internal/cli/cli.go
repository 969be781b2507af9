// Package cli implements the tracedx command line: one binary, one
// subcommand per job. Each subcommand returns its exit code so tests can
// run it in-process.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/server"
	"github.com/tracedx/tracedx/internal/version"
)

const usage = `tracedx — a tracing backend that tells you why a request was slow or failed.

Usage:
  tracedx serve [flags]            run ingest, storage, analysis, APIs and UI on this machine
  tracedx analyze [flags] FILE...  diagnose trace files (OTLP JSON/protobuf, Jaeger JSON, Zipkin JSON); '-' reads stdin
  tracedx compare [flags] A B      compare two traces, or two groups: --a FILE... --b FILE...
  tracedx rootcause [flags] --baseline FILE... --incident FILE...
                                   rank the services most likely to have caused an incident
  tracedx demo [flags]             run tracedx with a simulated shop that produces every incident
  tracedx version                  print the version
  tracedx help [COMMAND]           show help

Run 'tracedx COMMAND --help' for the flags of a command.
`

// Main runs the command line and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "tracedx %s (revision %s, %s)\n", version.Version, version.Revision(), runtime.Version())
		return 0
	case "help", "-h", "--help":
		if len(rest) > 0 {
			return Main([]string{rest[0], "--help"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		if run, ok := extraCommands[cmd]; ok {
			return run(rest, stdin, stdout, stderr)
		}
		fmt.Fprintf(stderr, "tracedx: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// Validate checks the command line of a long-running command (serve,
// demo) as Main would read it, without starting anything, so tools and
// tests can check documented commands.
func Validate(args []string) error {
	if len(args) == 0 {
		return errors.New("no command")
	}
	var out bytes.Buffer
	switch args[0] {
	case "serve":
		if _, err := config.Load(args[1:], &out); err != nil && !errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("tracedx serve: %w", err)
		}
		return nil
	case "demo":
		if _, code, _ := parseDemoArgs(args[1:], io.Discard, &out); code != 0 {
			return errors.New(strings.TrimSpace(out.String()))
		}
		return nil
	}
	return fmt.Errorf("validate: %q is not a long-running command; run it with Main", args[0])
}

// extraCommands are the subcommands that live in their own files
// (analyze, compare, rootcause, demo).
var extraCommands = map[string]func(args []string, stdin io.Reader, stdout, stderr io.Writer) int{}

func serve(args []string, stdout, stderr io.Writer) int {
	var help bytes.Buffer
	cfg, err := config.Load(args, &help)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, "Usage: tracedx serve [flags]\n\nRuns everything on this machine with embedded storage.\n\nFlags:\n")
		fmt.Fprint(stdout, help.String())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tracedx serve: %v\n", err)
		if help.Len() > 0 {
			fmt.Fprint(stderr, help.String())
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "tracedx serve: %v\n", err)
		return 1
	}
	return 0
}
