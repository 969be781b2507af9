package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
)

// command holds what every file-reading subcommand sets up the same way:
// its flag set, help text and usage errors.
type command struct {
	name   string
	fs     *flag.FlagSet
	help   bytes.Buffer
	stderr io.Writer
}

// newCommand returns the flag set of `tracedx name`; usage is printed before
// the flag defaults by --help.
func newCommand(name, usage string, stderr io.Writer) *command {
	c := &command{name: name, fs: flag.NewFlagSet("tracedx "+name, flag.ContinueOnError), stderr: stderr}
	c.fs.SetOutput(&c.help)
	c.fs.Usage = func() {
		fmt.Fprint(&c.help, usage)
		c.fs.PrintDefaults()
	}
	return c
}

// usageErr reports a bad invocation and returns exit code 2.
func (c *command) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "tracedx "+c.name+": "+format+"\n", a...)
	fmt.Fprintf(c.stderr, "Run 'tracedx %s --help' for usage.\n", c.name)
	return 2
}

// parse parses args; done is true when the command must exit with code
// (after --help, or a flag error).
func (c *command) parse(args []string, stdout io.Writer) (code int, done bool) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, c.help.String())
			return 0, true
		}
		return c.usageErr("%v", err), true
	}
	return 0, false
}

// checkFormat accepts the output formats every command prints.
func (c *command) checkFormat(format string) (int, bool) {
	switch format {
	case "text", "json", "markdown", "md":
		return 0, false
	}
	return c.usageErr("--format must be text, json or markdown, got %q", format), true
}
