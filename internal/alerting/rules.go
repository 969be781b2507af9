// Package alerting turns what tracedx knows — findings, RED metrics, SLO
// burn — into alerts with a lifecycle (pending → firing → resolved), keeps
// their state across restarts, and hands them to Prometheus Alertmanager
// and webhooks without ever blocking ingest or evaluation.
package alerting

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/analyze"
)

// Rule is one alerting rule as written in YAML. Exactly one of RED, SLO,
// Findings and CrossTrace says what it watches.
type Rule struct {
	Name string `yaml:"alert"`
	// For is how long the condition must hold before the alert fires.
	For         time.Duration     `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`

	RED        *REDCondition        `yaml:"red"`
	SLO        *SLOCondition        `yaml:"slo"`
	Findings   *FindingsCondition   `yaml:"findings"`
	CrossTrace *CrossTraceCondition `yaml:"cross_trace"`

	annotations map[string]*template.Template
}

// REDCondition watches the requests of entry operations (server and
// consumer spans). Service and Operation narrow it; empty means every
// one, each its own alert. Exactly one threshold is set.
type REDCondition struct {
	Service   string        `yaml:"service"`
	Operation string        `yaml:"operation"`
	Window    time.Duration `yaml:"window"`
	// MinRequests in the window below which an operation is not judged.
	MinRequests int `yaml:"min_requests"`
	// ErrorRatioAbove fires when errors/requests exceeds it (0..1).
	ErrorRatioAbove float64 `yaml:"error_ratio_above"`
	// LatencyAboveMS with Percentile (50, 95 or 99) fires when that
	// percentile of the window exceeds it.
	LatencyAboveMS float64 `yaml:"latency_above_ms"`
	Percentile     int     `yaml:"percentile"`
	// RateDropBelow fires when the request rate of the window falls below
	// this share of the rate over the Baseline period before the window.
	RateDropBelow float64       `yaml:"rate_drop_below"`
	Baseline      time.Duration `yaml:"baseline"`
}

// SLOCondition alerts on error-budget burn with the multi-window,
// multi-burn-rate method: each window pair fires when both its long and its
// short window burn faster than Factor times the sustainable rate.
type SLOCondition struct {
	Service   string `yaml:"service"`
	Operation string `yaml:"operation"`
	// Objective is the share of good requests, e.g. 0.999.
	Objective float64 `yaml:"objective"`
	// LatencyMS makes it a latency objective: a good request succeeds in
	// less than this. 0: availability (a good request does not fail).
	LatencyMS   float64      `yaml:"latency_ms"`
	MinRequests int          `yaml:"min_requests"`
	Windows     []BurnWindow `yaml:"windows"`
}

// BurnWindow is one window pair of a burn-rate alert.
type BurnWindow struct {
	Long   time.Duration `yaml:"long"`
	Short  time.Duration `yaml:"short"`
	Factor float64       `yaml:"factor"`
}

// DefaultBurnWindows are the Google SRE workbook's page-worthy pairs: 2% of
// a 30-day budget spent in 1 h (14.4x) and 5% in 6 h (6x).
var DefaultBurnWindows = []BurnWindow{
	{Long: time.Hour, Short: 5 * time.Minute, Factor: 14.4},
	{Long: 6 * time.Hour, Short: 30 * time.Minute, Factor: 6},
}

// FindingsCondition counts per-trace findings in a window, one alert per
// (kind, service).
type FindingsCondition struct {
	// Kind: one finding kind, several separated by commas, or "" for any.
	Kind        string           `yaml:"kind"`
	Service     string           `yaml:"service"`
	MinSeverity analyze.Severity `yaml:"min_severity"`
	// MoreThan fires when the window holds more findings than this.
	MoreThan int           `yaml:"more_than"`
	Window   time.Duration `yaml:"window"`
}

// CrossTraceCondition makes every cross-trace (systemic) finding an alert
// of its own, active while the detector has reported it within Window.
type CrossTraceCondition struct {
	Kind        string           `yaml:"kind"`
	Service     string           `yaml:"service"`
	MinSeverity analyze.Severity `yaml:"min_severity"`
	Window      time.Duration    `yaml:"window"`
}

// DefaultRules ship enabled so a new user gets alerts without writing any:
// critical findings, every cross-trace finding, and SLO burn at 99.9%
// availability on every entry operation with enough traffic.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "TracedxCriticalFinding", Labels: map[string]string{"severity": "critical"},
			Findings: &FindingsCondition{MinSeverity: analyze.SeverityCritical, Window: 10 * time.Minute}},
		{Name: "TracedxCrossTraceFinding",
			CrossTrace: &CrossTraceCondition{MinSeverity: analyze.SeverityWarning, Window: 30 * time.Minute}},
		{Name: "TracedxSLOBurn", Labels: map[string]string{"severity": "page"},
			SLO: &SLOCondition{Objective: 0.999, MinRequests: 100}},
	}
}

// RuleFile is the document of --alert-rules: a list under "rules".
type RuleFile struct {
	Rules []Rule `yaml:"rules"`
}

// ParseRules decodes a YAML list of rules (the value of alerting.rules).
// Unknown fields are errors.
func ParseRules(node *yaml.Node) ([]Rule, error) {
	if node == nil || node.Kind == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(node); err != nil {
		return nil, fmt.Errorf("alerting.rules: %w", err)
	}
	var rules []Rule
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("alerting.rules: %w", err)
	}
	return rules, nil
}

// LoadRuleFile reads a rules file ({rules: [...]}).
func LoadRuleFile(path string) ([]Rule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("alert rules file: %w", err)
	}
	var f RuleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("alert rules file %s: %w", path, err)
	}
	return f.Rules, nil
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate checks every rule and compiles its annotation templates. The
// error names the rule and the field.
func Validate(rules []Rule) error {
	seen := map[string]bool{}
	for i := range rules {
		r := &rules[i]
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		if err := r.validate(); err != nil {
			return fmt.Errorf("alert rule %q: %w", name, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("alert rule %q: alert: the name is used by another rule", name)
		}
		seen[r.Name] = true
	}
	return nil
}

func (r *Rule) validate() error {
	if r.Name == "" {
		return errors.New("alert: every rule needs a name")
	}
	if !labelName.MatchString(r.Name) {
		return fmt.Errorf("alert: %q is not a valid alert name (letters, digits, _)", r.Name)
	}
	if r.For < 0 {
		return errors.New("for: must not be negative")
	}
	for k := range r.Labels {
		if !labelName.MatchString(k) {
			return fmt.Errorf("labels: %q is not a valid label name", k)
		}
	}
	r.annotations = map[string]*template.Template{}
	for k, text := range r.Annotations {
		if !labelName.MatchString(k) {
			return fmt.Errorf("annotations: %q is not a valid annotation name", k)
		}
		t, err := template.New(k).Option("missingkey=zero").Parse(text)
		if err != nil {
			return fmt.Errorf("annotations.%s: %w", k, err)
		}
		r.annotations[k] = t
	}
	set := 0
	for _, on := range []bool{r.RED != nil, r.SLO != nil, r.Findings != nil, r.CrossTrace != nil} {
		if on {
			set++
		}
	}
	if set != 1 {
		return errors.New("needs exactly one of red, slo, findings, cross_trace")
	}
	switch {
	case r.RED != nil:
		return r.RED.validate()
	case r.SLO != nil:
		return r.SLO.validate()
	case r.Findings != nil:
		return r.Findings.validate()
	}
	return r.CrossTrace.validate()
}

func (c *REDCondition) validate() error {
	if c.Window <= 0 {
		return errors.New("red.window: must be positive, e.g. 5m")
	}
	if c.MinRequests < 0 {
		return errors.New("red.min_requests: must not be negative")
	}
	set := 0
	if c.ErrorRatioAbove != 0 {
		set++
		if c.ErrorRatioAbove < 0 || c.ErrorRatioAbove >= 1 {
			return fmt.Errorf("red.error_ratio_above: %g is not a ratio between 0 and 1", c.ErrorRatioAbove)
		}
	}
	if c.LatencyAboveMS != 0 {
		set++
		if c.LatencyAboveMS < 0 {
			return errors.New("red.latency_above_ms: must be positive")
		}
		switch c.Percentile {
		case 50, 95, 99:
		case 0:
			c.Percentile = 99
		default:
			return fmt.Errorf("red.percentile: %d; want 50, 95 or 99", c.Percentile)
		}
	}
	if c.RateDropBelow != 0 {
		set++
		if c.RateDropBelow < 0 || c.RateDropBelow >= 1 {
			return fmt.Errorf("red.rate_drop_below: %g is not a share between 0 and 1", c.RateDropBelow)
		}
		if c.Baseline == 0 {
			c.Baseline = time.Hour
		}
		if c.Baseline < c.Window {
			return errors.New("red.baseline: must be at least the window")
		}
	}
	if set != 1 {
		return errors.New("red: needs exactly one of error_ratio_above, latency_above_ms, rate_drop_below")
	}
	return nil
}

func (c *SLOCondition) validate() error {
	if c.Objective <= 0 || c.Objective >= 1 {
		return fmt.Errorf("slo.objective: %g; want a share of good requests such as 0.999", c.Objective)
	}
	if c.LatencyMS < 0 {
		return errors.New("slo.latency_ms: must not be negative")
	}
	if c.MinRequests < 0 {
		return errors.New("slo.min_requests: must not be negative")
	}
	if len(c.Windows) == 0 {
		c.Windows = append([]BurnWindow(nil), DefaultBurnWindows...)
	}
	for i, w := range c.Windows {
		if w.Long <= 0 || w.Short <= 0 || w.Short > w.Long {
			return fmt.Errorf("slo.windows[%d]: long and short must be positive and short at most long", i)
		}
		if w.Factor <= 0 {
			return fmt.Errorf("slo.windows[%d].factor: must be positive", i)
		}
	}
	return nil
}

func validSeverity(field string, s analyze.Severity) error {
	if s != "" && s.Rank() == 0 {
		return fmt.Errorf("%s: %q; want info, warning or critical", field, s)
	}
	return nil
}

func (c *FindingsCondition) validate() error {
	if c.Window <= 0 {
		return errors.New("findings.window: must be positive, e.g. 10m")
	}
	if c.MoreThan < 0 {
		return errors.New("findings.more_than: must not be negative")
	}
	if err := validKinds("findings.kind", c.Kind); err != nil {
		return err
	}
	return validSeverity("findings.min_severity", c.MinSeverity)
}

func (c *CrossTraceCondition) validate() error {
	if c.Window <= 0 {
		return errors.New("cross_trace.window: must be positive, e.g. 30m")
	}
	if err := validKinds("cross_trace.kind", c.Kind); err != nil {
		return err
	}
	return validSeverity("cross_trace.min_severity", c.MinSeverity)
}

var kindName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func validKinds(field, list string) error {
	for _, k := range splitList(list) {
		if !kindName.MatchString(k) {
			return fmt.Errorf("%s: %q is not a finding kind (snake_case, e.g. n_plus_one_query)", field, k)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Type names the condition of a rule for the API.
func (r *Rule) Type() string {
	switch {
	case r.RED != nil:
		return "red"
	case r.SLO != nil:
		return "slo"
	case r.Findings != nil:
		return "findings"
	}
	return "cross_trace"
}

// Query renders the condition in one line, the "query" of the rules API.
func (r *Rule) Query() string {
	switch {
	case r.RED != nil:
		c := r.RED
		scope := scopeOf(c.Service, c.Operation)
		switch {
		case c.ErrorRatioAbove > 0:
			return fmt.Sprintf("error ratio of %s over %s > %g", scope, human(c.Window), c.ErrorRatioAbove)
		case c.LatencyAboveMS > 0:
			return fmt.Sprintf("p%d latency of %s over %s > %g ms", c.Percentile, scope, human(c.Window), c.LatencyAboveMS)
		}
		return fmt.Sprintf("request rate of %s over %s < %g × the rate of the %s before", scope, human(c.Window), c.RateDropBelow, human(c.Baseline))
	case r.SLO != nil:
		c := r.SLO
		what := "availability"
		if c.LatencyMS > 0 {
			what = fmt.Sprintf("latency < %g ms", c.LatencyMS)
		}
		parts := make([]string, len(c.Windows))
		for i, w := range c.Windows {
			parts[i] = fmt.Sprintf("%s/%s at %gx", human(w.Long), human(w.Short), w.Factor)
		}
		return fmt.Sprintf("%s SLO %g of %s burning: %s", what, c.Objective, scopeOf(c.Service, c.Operation), strings.Join(parts, " or "))
	case r.Findings != nil:
		c := r.Findings
		return fmt.Sprintf("findings %s of %s with severity >= %s in %s > %d", orAny(c.Kind), orAny(c.Service), orAny(string(c.MinSeverity)), human(c.Window), c.MoreThan)
	}
	c := r.CrossTrace
	return fmt.Sprintf("cross-trace finding %s of %s with severity >= %s in the last %s", orAny(c.Kind), orAny(c.Service), orAny(string(c.MinSeverity)), human(c.Window))
}

func scopeOf(service, op string) string {
	switch {
	case service == "":
		return "every entry operation"
	case op == "":
		return "every entry operation of " + service
	}
	return service + " " + op
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}
