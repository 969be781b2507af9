package analyze

import (
	"fmt"
	"sort"
	"sync"
)

// Detector recognises one kind of pattern in one trace. A detector is a
// struct whose exported fields are its thresholds (YAML-configurable, with
// the defaults of docs/patterns.md set by its constructor); it keeps no
// state between calls, so one instance serves concurrent analyses.
type Detector interface {
	Kind() string
	Detect(t *Trace, env *Env) []Finding
}

// Env is what a detector may use besides the trace.
type Env struct {
	History History
}

var (
	registryMu sync.Mutex
	registry   = map[string]func() Detector{}
)

// Register adds a detector constructor; detectors call it from init.
func Register(newDetector func() Detector) {
	registryMu.Lock()
	defer registryMu.Unlock()
	d := newDetector()
	if _, dup := registry[d.Kind()]; dup {
		panic(fmt.Sprintf("analyze: detector %q registered twice", d.Kind()))
	}
	registry[d.Kind()] = newDetector
}

// DefaultDetectors returns a fresh instance of every registered detector
// with default thresholds, sorted by kind.
func DefaultDetectors() []Detector {
	registryMu.Lock()
	defer registryMu.Unlock()
	out := make([]Detector, 0, len(registry))
	for _, f := range registry {
		out = append(out, f())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind() < out[j].Kind() })
	return out
}

// Kinds lists the registered per-trace kinds.
func Kinds() []string {
	ds := DefaultDetectors()
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Kind()
	}
	return out
}
