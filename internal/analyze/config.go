package analyze

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadDetectorConfig returns every registered detector with the thresholds
// of a YAML document applied. The document maps kinds to the detectors'
// threshold fields (their yaml tags); a kind set to false is switched off:
//
//	slow_query:
//	  min_duration_ms: 250
//	cache_miss: {min_fallback_ms: 100}
//	instrumentation_gap: false
//
// Kinds not named keep docs/patterns.md defaults. Unknown kinds and
// unknown fields are errors, so a typo cannot silently leave a default in
// place. An empty document yields DefaultDetectors().
func LoadDetectorConfig(doc []byte) ([]Detector, error) {
	detectors := DefaultDetectors()
	if len(bytes.TrimSpace(doc)) == 0 {
		return detectors, nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("detector config: %w", err)
	}
	if len(root.Content) == 0 {
		return detectors, nil
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("detector config: line %d: want a mapping of kind to thresholds", m.Line)
	}
	byKind := make(map[string]Detector, len(detectors))
	for _, d := range detectors {
		byKind[d.Kind()] = d
	}
	off := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		d, ok := byKind[k.Value]
		if !ok {
			return nil, fmt.Errorf("detector config: line %d: unknown kind %q (known: %s)", k.Line, k.Value, strings.Join(sortedKinds(byKind), ", "))
		}
		if v.Kind == yaml.ScalarNode {
			var on bool
			if err := v.Decode(&on); err != nil || v.Tag == "!!null" {
				return nil, fmt.Errorf("detector config: line %d: %s: want thresholds or false", v.Line, k.Value)
			}
			off[k.Value] = !on
			continue
		}
		// Round-trip through bytes so the strict decoder rejects unknown
		// fields (Node.Decode has no such option).
		b, err := yaml.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("detector config: %s: %w", k.Value, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(d); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("detector config: %s (line %d): %w", k.Value, k.Line, err)
		}
	}
	out := detectors[:0]
	for _, d := range detectors {
		if !off[d.Kind()] {
			out = append(out, d)
		}
	}
	return out, nil
}

func sortedKinds(m map[string]Detector) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
