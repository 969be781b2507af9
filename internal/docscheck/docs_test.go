package docscheck

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/tracedx/tracedx/internal/cli"
)

// root is the repository root, relative to this package.
const root = "../.."

func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	return files
}

// block is a fenced code block: its language and lines.
type block struct {
	lang  string
	lines []string
	line  int // first line number in the file
}

// split separates prose from fenced code blocks.
func split(text string) (prose []string, blocks []block) {
	var cur *block
	for i, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			if cur == nil {
				cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), line: i + 2}
			} else {
				blocks = append(blocks, *cur)
				cur = nil
			}
			prose = append(prose, "")
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, l)
			prose = append(prose, "")
			continue
		}
		prose = append(prose, l)
	}
	return prose, blocks
}

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	codeSpan  = regexp.MustCompile("`[^`]*`")
	headingRE = regexp.MustCompile(`^#{1,6}\s+(.*)$`)
)

// anchors returns the GitHub anchors of a markdown file's headings.
func anchors(text string) map[string]bool {
	prose, _ := split(text)
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range prose {
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			seen[a]++
			a = a + "-" + strconv.Itoa(n)
		} else {
			seen[a] = 1
		}
		out[a] = true
	}
	return out
}

// TestRelativeLinksResolve: every link that is not a URL names a file of
// the repository, and a #fragment names a heading of that file.
func TestRelativeLinksResolve(t *testing.T) {
	checked := 0
	for _, f := range docFiles(t) {
		text := read(t, f)
		prose, _ := split(text)
		for n, l := range prose {
			for _, m := range linkRE.FindAllStringSubmatch(codeSpan.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, frag, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.Join(filepath.Dir(f), path)
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link %q: %v", rel(f), n+1, target, err)
					continue
				}
				if frag != "" && strings.HasSuffix(dest, ".md") && !anchors(read(t, dest))[frag] {
					t.Errorf("%s:%d: link %q: no heading with anchor #%s in %s", rel(f), n+1, target, frag, rel(dest))
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d links; is the link pattern broken?", checked)
	}
}

// command is one tracedx command line shown in the docs.
type command struct {
	where string
	args  []string
}

var cmdPrefixes = []string{"go run ./cmd/tracedx ", "tracedx "}

// commands extracts the tracedx commands of the code blocks: shell lines
// and the run: lines of YAML (CI examples). Comments, pipes and redirects
// end a command.
func commands(t *testing.T) []command {
	t.Helper()
	var out []command
	for _, f := range docFiles(t) {
		_, blocks := split(read(t, f))
		for _, b := range blocks {
			switch b.lang {
			case "", "sh", "bash", "shell", "console", "yaml", "yml":
			default:
				continue
			}
			for i := 0; i < len(b.lines); i++ {
				start := i
				l := strings.TrimSpace(b.lines[i])
				// A line ending in a backslash goes on on the next one,
				// as in sh.
				for strings.HasSuffix(l, "\\") && i+1 < len(b.lines) {
					i++
					l = strings.TrimSuffix(l, "\\") + " " + strings.TrimSpace(b.lines[i])
				}
				l = strings.TrimPrefix(l, "$ ")
				l = strings.TrimPrefix(l, "- ")
				l = strings.TrimPrefix(l, "run: ")
				for _, p := range cmdPrefixes {
					if strings.HasPrefix(l, p) {
						args := shellWords(t, strings.TrimPrefix(l, p))
						out = append(out, command{where: rel(f) + ":" + strconv.Itoa(b.line+start), args: args})
						break
					}
				}
			}
		}
	}
	return out
}

// shellWords splits a command line as sh would (quotes, $VAR), stopping at
// a comment, pipe, redirect or command separator.
func shellWords(t *testing.T, s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			words = append(words, os.Expand(cur.String(), func(string) string { return t.TempDir() }))
		}
		cur.Reset()
		inWord = false
	}
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		case (r == '#' && !inWord) || r == '|' || r == '>' || r == ';' || r == '&':
			flush()
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return words
}

// fixture stands in for trace files a command names but this repository
// does not have (a CI job's traces.json).
const fixture = "testdata/traces/n_plus_one_query/positive-orders-then-50-customers.json"

// TestDocumentedCommandsWork runs every tracedx command of README.md and
// docs/*.md: long-running ones (serve, demo) have their command line
// checked without starting; the others run for real, with trace files the
// repository lacks replaced by a fixture.
func TestDocumentedCommandsWork(t *testing.T) {
	cmds := commands(t)
	if len(cmds) < 10 {
		t.Fatalf("found only %d commands", len(cmds))
	}
	t.Logf("%d commands", len(cmds))
	t.Chdir(root)
	thresholds := filepath.Join(t.TempDir(), "thresholds.yaml")
	if err := os.WriteFile(thresholds, []byte("n_plus_one_query: {min_repetitions: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if len(c.args) == 0 {
			t.Errorf("%s: empty command", c.where)
			continue
		}
		help := false
		for _, a := range c.args {
			help = help || a == "--help" || a == "-h"
		}
		if (c.args[0] == "serve" || c.args[0] == "demo") && !help {
			if err := cli.Validate(c.args); err != nil {
				t.Errorf("%s: tracedx %s: %v", c.where, strings.Join(c.args, " "), err)
			}
			continue
		}
		args := make([]string, len(c.args))
		stdin := []byte{}
		for i, a := range c.args {
			args[i] = a
			switch {
			case i == 0 || strings.HasPrefix(a, "-") && a != "-":
			case a == "-":
				stdin = []byte(read(t, fixture))
			case inRepository(a):
				// A path into the repository must exist as written.
			case strings.HasSuffix(a, ".yaml"):
				args[i] = thresholds
			case strings.HasSuffix(a, ".json") || strings.HasSuffix(a, ".pb"):
				args[i] = fixture
			}
		}
		var out, errb bytes.Buffer
		code := cli.Main(args, bytes.NewReader(stdin), &out, &errb)
		ok := code == 0 || (code == 1 && (args[0] == "analyze") && strings.Contains(errb.String(), "matched the gate"))
		if !ok {
			t.Errorf("%s: tracedx %s: exit %d\n%s", c.where, strings.Join(c.args, " "), code, errb.String())
		}
	}
}

// inRepository reports whether a path starts in a directory of this
// repository (testdata/…, docs/…): such paths are not placeholders.
func inRepository(path string) bool {
	first, _, found := strings.Cut(filepath.ToSlash(path), "/")
	if !found {
		_, err := os.Stat(path)
		return err == nil
	}
	st, err := os.Stat(first)
	return err == nil && st.IsDir()
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func rel(path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}
