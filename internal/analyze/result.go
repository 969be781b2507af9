package analyze

// Result is the analysis of one trace. The JSON names are the stable
// contract of `tracedx analyze --format json` and of
// GET /api/v1/traces/{id}/analysis.
type Result struct {
	TraceID       string    `json:"trace_id"`
	RootService   string    `json:"root_service"`
	RootOperation string    `json:"root_operation"`
	DurationMS    float64   `json:"duration_ms"`
	SpanCount     int       `json:"span_count"`
	Findings      []Finding `json:"findings"`
	// FindingsOmitted counts the least important findings dropped by the
	// per-trace cap (Options.MaxFindings).
	FindingsOmitted int        `json:"findings_omitted,omitempty"`
	CriticalPath    []PathStep `json:"critical_path"`
	Why             []string   `json:"why"`
}
