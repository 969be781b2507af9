package alerting

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// State of an alert.
type State string

const (
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Alert is one instance of a rule, identified by its labels.
type Alert struct {
	// Key identifies the alert: its labels, sorted, in one string.
	Key         string            `json:"key"`
	Rule        string            `json:"rule"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       State             `json:"state"`
	Value       float64           `json:"value"`
	Culprit     analyze.Culprit   `json:"culprit"`
	// ActiveAt is when the condition started to hold (pending since).
	ActiveAt   time.Time `json:"active_at"`
	FiredAt    time.Time `json:"fired_at,omitzero"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// LastSeenAt is the last evaluation in which the condition held.
	LastSeenAt   time.Time `json:"last_seen_at"`
	GeneratorURL string    `json:"generator_url"`
	// Delivered records, per receiver, the last state it acknowledged and
	// when: what makes a restart neither repeat nor lose a notification.
	Delivered map[string]Delivery `json:"delivered,omitempty"`
}

// Delivery is what a receiver last acknowledged.
type Delivery struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
}

func alertKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

func (a *Alert) clone() Alert {
	c := *a
	c.Labels = cloneMap(a.Labels)
	c.Annotations = cloneMap(a.Annotations)
	if a.Delivered != nil {
		c.Delivered = make(map[string]Delivery, len(a.Delivered))
		for k, v := range a.Delivered {
			c.Delivered[k] = v
		}
	}
	return c
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// stateFile is what the data directory keeps.
type stateFile struct {
	Version int     `json:"version"`
	Alerts  []Alert `json:"alerts"`
	History []Alert `json:"history"`
}

const stateFileName = "alerts.json"

func loadState(dir string) (stateFile, error) {
	var st stateFile
	if dir == "" {
		return st, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading alert state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("alert state %s is corrupt: %w", filepath.Join(dir, stateFileName), err)
	}
	return st, nil
}

// saveState writes the state atomically: a crash leaves the old or the
// new file, never half of one.
func saveState(dir string, st stateFile) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("alert state dir: %w", err)
	}
	st.Version = 1
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding alert state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, stateFileName+".tmp*")
	if err != nil {
		return fmt.Errorf("writing alert state: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, stateFileName))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing alert state: %w", err)
	}
	return nil
}
