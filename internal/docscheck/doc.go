// Package docscheck holds the test that keeps the user documentation true:
// every relative link in README.md and docs/*.md resolves (file and
// heading), and every tracedx command shown in a code block parses, or
// runs where that is cheap.
package docscheck
