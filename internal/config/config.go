// Package config holds the settings of `tracedx serve`: defaults that work
// on a laptop, an optional YAML file, and command-line flags that override
// both (flags > file > defaults).
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/cluster"
)

// Config is the whole server configuration. YAML keys are the snake_case
// field tags.
type Config struct {
	DataDir  string  `yaml:"data_dir"`
	LogLevel string  `yaml:"log_level"`
	Listen   Listen  `yaml:"listen"`
	Storage  Storage `yaml:"storage"`
	Ingest   Ingest  `yaml:"ingest"`
	Query    Query   `yaml:"query"`
	// Analysis.Detectors maps a finding kind to its thresholds, e.g.
	// {n_plus_one_query: {min_count: 8}}. Kept as raw YAML so the analysis
	// package decodes it into the detector structs.
	Analysis Analysis `yaml:"analysis"`
	// Analytics are the cross-trace analytics: RED metrics, the service
	// graph, baselines and the systemic detectors.
	Analytics Analytics `yaml:"analytics"`
	// Logs configures the OTLP log records kept beside the traces.
	Logs Logs `yaml:"logs"`
	// Admission refuses ingest, retryably, while the server is over a budget.
	Admission Admission `yaml:"admission"`
	// MemoryLimit is the soft limit of the Go runtime (debug.SetMemoryLimit)
	// in bytes: the GC works harder as the process nears it, so RSS stays
	// close to it instead of at twice the live heap. 0 derives it from
	// storage.head_max_bytes unless GOMEMLIMIT is set; negative disables it.
	MemoryLimit int64 `yaml:"memory_limit"`
	// Cluster makes this node one of several sharing an S3 bucket.
	Cluster Cluster `yaml:"cluster"`
	// Alerting evaluates alert rules and notifies Alertmanager and
	// webhooks (docs/alerting.md).
	Alerting Alerting `yaml:"alerting"`
	// Sampling is tail sampling after diagnosis: which completed traces'
	// spans are kept.
	Sampling Sampling `yaml:"sampling"`
	// Retention of what outlives the traces.
	Retention Retention `yaml:"retention"`
	// Multitenancy keeps tenants' data apart (X-Scope-OrgID).
	Multitenancy Multitenancy `yaml:"multitenancy"`
	// Auth names the bearer tokens every listener requires.
	Auth Auth `yaml:"auth"`
	// TLS, when a certificate is set, encrypts every listener.
	TLS TLS `yaml:"tls"`
	// InsecureListen allows listening on a non-loopback address without
	// auth.token_file: anyone who reaches the port may then read and write
	// everything.
	InsecureListen bool `yaml:"insecure_listen"`
}

// Alerting settings. Rules are kept as raw YAML so the alerting package
// decodes and validates them.
type Alerting struct {
	Enabled bool `yaml:"enabled"`
	// Interval between rule evaluations.
	Interval time.Duration `yaml:"interval"`
	// ResendInterval between sends of a firing alert to Alertmanager.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// DefaultRules adds the built-in rules (critical findings,
	// cross-trace findings, SLO burn) to the configured ones.
	DefaultRules bool      `yaml:"default_rules"`
	Rules        yaml.Node `yaml:"rules"`
	// RulesFile holds more rules ({rules: [...]}); --alert-rules.
	RulesFile        string         `yaml:"rules_file"`
	AlertmanagerURLs []string       `yaml:"alertmanager_urls"`
	Webhooks         []AlertWebhook `yaml:"webhooks"`
	// ExternalURL is the base of the UI links in alerts ("": the
	// http listen address).
	ExternalURL string `yaml:"external_url"`
	// QueueSize bounds the notification batches waiting per receiver.
	QueueSize int `yaml:"queue_size"`
}

// AlertWebhook is a generic JSON webhook; with a secret each call carries
// an HMAC-SHA256 signature header.
type AlertWebhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return fmt.Sprint([]string(*l)) }
func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// Cluster lists the nodes of a cluster (the same list on every node).
// Empty: a single node.
type Cluster struct {
	// NodeID is this node's id in Peers.
	NodeID string         `yaml:"node_id"`
	Peers  []cluster.Peer `yaml:"peers"`
	// RefreshInterval is how often a node lists the bucket for blocks
	// the others wrote (default 5s).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// Forward sends spans to the node owning their trace (default true).
	// Off, a node stores what it receives: for a load balancer that
	// already keeps each trace on one node (the Collector's loadbalancing
	// exporter with routing_key traceID), saving a hop.
	Forward bool `yaml:"forward"`
	// TokenFile holds the cluster's peer token, the same on every node: a
	// node sends it to its peers, and the peer API answers only callers
	// holding it. Required with auth.token_file.
	TokenFile string `yaml:"token_file"`
	// TLSCAFile holds the CAs the peers' certificates are checked against
	// when tls is on (empty: tls.client_ca_file, else the system's).
	TLSCAFile string `yaml:"tls_ca_file"`
	// PeerCopiesMaxBytes bounds the copies of down peers' findings and
	// history a node downloads from the bucket into data_dir/peers (least
	// recently used deleted first; 0: a quarter of storage.max_disk_bytes,
	// no bound when that is 0 too).
	PeerCopiesMaxBytes int64 `yaml:"peer_copies_max_bytes"`
}

// S3 is the bucket that holds blocks with storage.backend s3.
type S3 struct {
	// Endpoint is host:port or a URL (http:// for plain HTTP).
	Endpoint string `yaml:"endpoint"`
	Bucket   string `yaml:"bucket"`
	Prefix   string `yaml:"prefix"`
	Region   string `yaml:"region"`
	// AccessKey and SecretKey default to the environment's
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// CacheBytes bounds the memory cache of block byte ranges.
	CacheBytes int64 `yaml:"cache_bytes"`
}

// Sampling settings. Off, every trace is kept. On, a completed trace's
// spans are kept when it has an error (keep_errors), a finding of at least
// keep_findings severity, or took longer than keep_slower_than ("p50" or
// "p95") of its endpoint's baseline; of the others, at least
// min_per_endpoint_per_minute per endpoint and a share rate. RED metrics,
// the service map, baselines and findings count every trace either way.
type Sampling struct {
	Enabled        bool    `yaml:"enabled"`
	KeepErrors     bool    `yaml:"keep_errors"`
	KeepFindings   string  `yaml:"keep_findings"`
	KeepSlowerThan string  `yaml:"keep_slower_than"`
	Rate           float64 `yaml:"rate"`
	// EndpointRates overrides rate per endpoint ("service operation" of
	// the root span, e.g. "checkout POST /api/checkout": 0.1).
	EndpointRates map[string]float64 `yaml:"endpoint_rates"`
	MinPerMinute  int                `yaml:"min_per_endpoint_per_minute"`
	// MaxFindingTracesPerMinute caps the traces one finding kind keeps per
	// endpoint per minute (0: no cap); the findings are all stored.
	MaxFindingTracesPerMinute int `yaml:"max_finding_traces_per_minute"`
}

// Retention tiers: what outlives what. Traces in general are kept for
// storage.retention; with sampling on, the traces it kept for
// kept_traces and the others for traces.
type Retention struct {
	// Traces is how long, with sampling on, the traces it did not keep
	// stay whole (useful right after an incident) before they are removed
	// (0: at the next compaction).
	Traces time.Duration `yaml:"traces"`
	// KeptTraces replaces storage.retention while sampling is enabled.
	KeptTraces time.Duration `yaml:"kept_traces"`
	// Findings are kept this long, also after their trace is gone.
	Findings time.Duration `yaml:"findings"`
	// Metrics is how long RED metrics and the service graph are kept
	// (replaces analysis.metrics_retention).
	Metrics time.Duration `yaml:"metrics"`
}

// TraceRetention is how long the stored traces are kept (with sampling:
// the kept ones).
func (c *Config) TraceRetention() time.Duration {
	if c.Sampling.Enabled {
		return c.Retention.KeptTraces
	}
	return c.Storage.Retention
}

// UnkeptTraceRetention is how long the traces sampling did not keep stay
// (0: sampling is off, or they go at the next compaction).
func (c *Config) UnkeptTraceRetention() time.Duration {
	if !c.Sampling.Enabled {
		return 0
	}
	return c.Retention.Traces
}

// MetricsRetention is retention.metrics, or the deprecated
// analysis.metrics_retention when only that is set.
func (c *Config) MetricsRetention() time.Duration {
	if c.Analysis.MetricsRetention > 0 && c.Retention.Metrics == Default().Retention.Metrics {
		return c.Analysis.MetricsRetention
	}
	return c.Retention.Metrics
}

// Multitenancy settings. Enabled, every request names its tenant
// (X-Scope-OrgID, or the tenant of its token), and each tenant gets its own
// storage, analysis, metrics, baselines and findings under
// data_dir/tenants/<id>, opened on first use.
type Multitenancy struct {
	Enabled bool `yaml:"enabled"`
	// Limits apply to every tenant; Tenants overrides them per tenant id
	// (fields left at 0 keep Limits').
	Limits  TenantLimits            `yaml:"limits"`
	Tenants map[string]TenantLimits `yaml:"tenants"`
}

// TenantLimits bound one tenant.
type TenantLimits struct {
	// IngestSpansPerSecond refuses spans beyond this rate with HTTP 429 /
	// gRPC RESOURCE_EXHAUSTED and Retry-After (0: no limit).
	IngestSpansPerSecond float64 `yaml:"ingest_spans_per_second"`
	// MaxSpansPerTrace drops spans of a trace beyond this count (0: no limit).
	MaxSpansPerTrace int `yaml:"max_spans_per_trace"`
	// MaxTraceBytes drops spans that would take a trace beyond this size,
	// counted as OTLP protobuf bytes like Tempo's max_bytes_per_trace
	// (0: no limit).
	MaxTraceBytes int64 `yaml:"max_trace_bytes"`
	// Retention of the tenant's traces (0: the server's).
	Retention time.Duration `yaml:"retention"`
}

// LimitsOf returns the limits of tenant id.
func (m *Multitenancy) LimitsOf(id string) TenantLimits {
	l := m.Limits
	if o, ok := m.Tenants[id]; ok {
		if o.IngestSpansPerSecond != 0 {
			l.IngestSpansPerSecond = o.IngestSpansPerSecond
		}
		if o.MaxSpansPerTrace != 0 {
			l.MaxSpansPerTrace = o.MaxSpansPerTrace
		}
		if o.MaxTraceBytes != 0 {
			l.MaxTraceBytes = o.MaxTraceBytes
		}
		if o.Retention != 0 {
			l.Retention = o.Retention
		}
	}
	return l
}

// Auth settings.
type Auth struct {
	// TokenFile lists the accepted bearer tokens, one per line
	// ("token [tenant [read,write]]") or as YAML (tokens: [{token, tenant,
	// scopes}]); re-read when it changes or on SIGHUP. Empty: no
	// authentication.
	TokenFile string `yaml:"token_file"`
}

// TLS settings of every listener (PEM files). The certificate and key are
// re-read when they change.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires client certificates signed by it (mTLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listeners speak TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Listen addresses. Defaults bind loopback only; an empty address disables
// that listener.
type Listen struct {
	OTLPGRPC string `yaml:"otlp_grpc"`
	OTLPHTTP string `yaml:"otlp_http"`
	Zipkin   string `yaml:"zipkin"`
	// HTTP serves the UI, /api/v1, the Jaeger APIs and /metrics.
	HTTP  string `yaml:"http"`
	Tempo string `yaml:"tempo"`
	// AllowedHosts are the host names the UI and query APIs answer to
	// besides the listen addresses' hosts, localhost and the loopback
	// addresses; "*" allows any. A request naming another Host is refused,
	// so a web page cannot reach a local instance through DNS rebinding.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// Storage settings of the embedded engine.
type Storage struct {
	Retention        time.Duration `yaml:"retention"`
	MaxDiskBytes     int64         `yaml:"max_disk_bytes"`
	TraceIdleTimeout time.Duration `yaml:"trace_idle_timeout"`
	// TraceMaxOpen completes a trace that is still receiving spans this
	// long after its first one (0: 3 × TraceIdleTimeout; see MaxOpen).
	TraceMaxOpen time.Duration `yaml:"trace_max_open"`
	HeadMaxBytes int64         `yaml:"head_max_bytes"`
	// CompactInterval is how often compaction and retention run
	// (0: every 30s).
	CompactInterval time.Duration `yaml:"compact_interval"`
	// WALGroupWait is how long a WAL record found alone waits for other
	// requests' records to share its fsync, while requests are concurrent
	// (0: 1ms; negative: never): ingest CPU against latency.
	WALGroupWait time.Duration `yaml:"wal_group_wait"`
	// Backend is where blocks live: "local" (under data_dir) or "s3".
	// The WAL and the head stay on local disk either way.
	Backend string `yaml:"backend"`
	S3      S3     `yaml:"s3"`
}

// Ingest limits.
type Ingest struct {
	MaxRequestBytes    int64 `yaml:"max_request_bytes"`
	MaxAttributes      int   `yaml:"max_attributes_per_span"`
	MaxSpansPerRequest int   `yaml:"max_spans_per_request"`
	MaxEventsPerSpan   int   `yaml:"max_events_per_span"`
	MaxLinksPerSpan    int   `yaml:"max_links_per_span"`
	// MaxAttributeDepth: arrays and maps nested deeper inside one
	// attribute value are cut (requests nested deeper than 128 levels are
	// refused before decoding).
	MaxAttributeDepth      int `yaml:"max_attribute_depth"`
	MaxAttributeValueBytes int `yaml:"max_attribute_value_bytes"`
	// MaxSpansPerTrace bounds the spans of one trace within one request.
	MaxSpansPerTrace int           `yaml:"max_spans_per_trace"`
	MaxSpanDuration  time.Duration `yaml:"max_span_duration"`
	// DedupWindowSpans is how many recently accepted spans are remembered
	// so that a client's retry is not stored twice (-1: only within a request).
	DedupWindowSpans int `yaml:"dedup_window_spans"`
}

// Query limits of the query APIs: TraceQL (Tempo API) and /api/v1.
type Query struct {
	// Timeout is the time budget of one query request: a TraceQL query is
	// answered 422 beyond it, a trace or analysis of /api/v1 503, both with
	// the reason.
	Timeout time.Duration `yaml:"timeout"`
	// MaxRegexBytes and MaxRegexInstructions bound one regular expression
	// (its text and its compiled program).
	MaxRegexBytes        int `yaml:"max_regex_bytes"`
	MaxRegexInstructions int `yaml:"max_regex_instructions"`
	// MaxTraceSpans is the largest page of spans GET /api/v1/traces/{id}
	// returns (the rest with ?offset=).
	MaxTraceSpans int `yaml:"max_trace_spans"`
	// MaxAnalysisSpans: GET /api/v1/traces/{id}/analysis of a larger trace
	// is refused with 422 (its background findings stay available).
	MaxAnalysisSpans int `yaml:"max_analysis_spans"`
	// MaxAPITraceSpans cuts a trace fetched through the Jaeger or Tempo
	// APIs, whose formats have no pages, to its first spans by start.
	MaxAPITraceSpans int `yaml:"max_api_trace_spans"`
}

// Analysis settings: the per-trace detectors run on every completed trace.
type Analysis struct {
	Enabled   bool      `yaml:"enabled"`
	Detectors yaml.Node `yaml:"detectors"`
	// MetricsRetention is the deprecated name of retention.metrics, still
	// honoured when retention.metrics is left at its default (0: unset).
	MetricsRetention time.Duration `yaml:"metrics_retention"`
	// QueueSpans bounds the spans of completed traces waiting for the
	// analysis worker (decoded, ~1.7 KB each); beyond it traces are skipped
	// and counted, their spans stay in the store.
	QueueSpans int `yaml:"queue_spans"`
	// MaxCPUShare is the share of the server's CPU the completed-trace
	// pipeline (detectors, baselines, systemic detectors) may take while
	// the server is CPU-bound; above it the detectors and baselines see a
	// sample of traces (the systemic detectors still see every one).
	// 0 or 1 disables shedding.
	MaxCPUShare float64 `yaml:"max_cpu_share"`
}

// Analytics switches the cross-trace analytics. Off, serve only stores
// and (if analysis is enabled) runs the per-trace detectors: the metrics,
// service map and systemic findings APIs answer with empty results.
type Analytics struct {
	Enabled bool `yaml:"enabled"`
	// BaselineTracesPerSecond caps the completed traces fed to the
	// baselines (uniformly sampled above it; 0: every trace). Baselines are
	// decayed distributions over hours, so a sample describes them as well
	// as every trace, at a fraction of the cost (~1.2 µs per span). In a
	// cluster the cap is the cluster's: each of N nodes feeds its own
	// baselines 1/N of it (each node sees a uniform share of the traces).
	BaselineTracesPerSecond float64 `yaml:"baseline_traces_per_second"`
	// WholeTracesPerSecond: above this rate of completed traces, the
	// cross-trace analytics decode a uniform sample of whole traces (the
	// latency examples behind attribution, the baselines) and count every
	// other trace from the summary the store keeps without decoding it.
	// Traces that may hold a cache miss or an auth failure only the whole
	// trace can place are always decoded (0: decode every trace). In a
	// cluster the rate is the cluster's, as for BaselineTracesPerSecond.
	WholeTracesPerSecond float64 `yaml:"whole_traces_per_second"`
	// Baseline says how "usual" is learnt and how incidents are kept out
	// of it.
	Baseline Baseline `yaml:"baseline"`
	// ExemplarLabel is the exemplar label carrying the trace id on the
	// traces_spanmetrics_* series of /metrics: Tempo's metrics-generator
	// writes traceID, which Grafana's exemplar links expect by default.
	ExemplarLabel string `yaml:"exemplar_label"`
}

// Logs settings. Logs are kept as long as the traces (storage.retention).
type Logs struct {
	// KeepUncorrelated stores log records without a trace id, searchable
	// through /api/v1/logs; off, they are counted and dropped.
	KeepUncorrelated bool `yaml:"keep_uncorrelated"`
}

// Baseline configures the learnt baselines (internal/baseline). A window
// whose p50 is anomaly_factor times the usual p50, or whose error share
// jumps as much, is held out of the baseline until the shift has lasted
// accept_after, and dropped once normal windows have been back for
// release_after.
type Baseline struct {
	HalfLife      time.Duration `yaml:"half_life"`
	Window        time.Duration `yaml:"window"`
	AnomalyFactor float64       `yaml:"anomaly_factor"`
	AcceptAfter   time.Duration `yaml:"accept_after"`
	ReleaseAfter  time.Duration `yaml:"release_after"`
}

// Admission: while the server is over one of these budgets (or the head's,
// or the disk's), ingest requests are refused before they are read, with
// HTTP 503 + Retry-After / gRPC UNAVAILABLE + RetryInfo, which exporters
// retry after the delay.
type Admission struct {
	// HeapFraction refuses while the live Go heap (after the last
	// collection) exceeds this share of the memory limit, or the heap in
	// use exceeds the whole limit. 0 disables; without a memory limit it
	// does nothing.
	HeapFraction float64 `yaml:"heap_fraction"`
	// AnalysisQueue refuses while the analysis queue is full, so traces
	// are not skipped by the detectors for lack of room. Off, the queue
	// sheds instead: traces that matter displace plain ones.
	AnalysisQueue bool `yaml:"analysis_queue"`
	// MemoryWait is how long a request that finds the heap over
	// HeapFraction waits, unread, for it to come back under before it is
	// refused. 0 refuses at once.
	MemoryWait time.Duration `yaml:"memory_wait"`
	// RetryAfter is the delay suggested to refused clients.
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Default returns a configuration that works with no file and no flags.
func Default() Config {
	return Config{
		DataDir:  "./tracedx-data",
		LogLevel: "info",
		Listen: Listen{
			OTLPGRPC:     "127.0.0.1:4317",
			OTLPHTTP:     "127.0.0.1:4318",
			Zipkin:       "127.0.0.1:9411",
			HTTP:         "127.0.0.1:16686",
			Tempo:        "127.0.0.1:3200",
			AllowedHosts: []string{},
		},
		Storage: Storage{
			Retention:        7 * 24 * time.Hour,
			TraceIdleTimeout: 10 * time.Second,
			HeadMaxBytes:     128 << 20,
			Backend:          "local",
			S3:               S3{CacheBytes: 64 << 20},
		},
		Cluster: Cluster{RefreshInterval: 5 * time.Second, Forward: true},
		Ingest: Ingest{
			MaxRequestBytes:        16 << 20,
			MaxAttributes:          128,
			MaxSpansPerRequest:     100_000,
			MaxEventsPerSpan:       128,
			MaxLinksPerSpan:        128,
			MaxAttributeDepth:      32,
			MaxAttributeValueBytes: 64 << 10,
			MaxSpansPerTrace:       100_000,
			MaxSpanDuration:        24 * time.Hour,
			DedupWindowSpans:       1 << 18,
		},
		Query: Query{Timeout: 30 * time.Second, MaxRegexBytes: 1024, MaxRegexInstructions: 5000,
			MaxTraceSpans: 10_000, MaxAnalysisSpans: 50_000, MaxAPITraceSpans: 50_000},
		Analysis: Analysis{Enabled: true, QueueSpans: 8192, MaxCPUShare: 0.2},
		Analytics: Analytics{Enabled: true, BaselineTracesPerSecond: 200, WholeTracesPerSecond: 100, ExemplarLabel: "traceID",
			Baseline: Baseline{HalfLife: 24 * time.Hour, Window: 5 * time.Minute, AnomalyFactor: 2, AcceptAfter: 6 * time.Hour, ReleaseAfter: 30 * time.Minute}},
		Alerting:  Alerting{Enabled: true, Interval: 15 * time.Second, ResendInterval: time.Minute, DefaultRules: true, QueueSize: 64},
		Sampling:  Sampling{KeepErrors: true, KeepFindings: "warning", KeepSlowerThan: "p95", Rate: 0.01, MinPerMinute: 1},
		Retention: Retention{Traces: 24 * time.Hour, KeptTraces: 30 * 24 * time.Hour, Findings: 30 * 24 * time.Hour, Metrics: 30 * 24 * time.Hour},
		Admission: Admission{HeapFraction: 0.7, MemoryWait: 500 * time.Millisecond, RetryAfter: time.Second},
	}
}

// Load parses args (without the subcommand name) into a Config: defaults,
// then the YAML file named by --config, then the other flags.
func Load(args []string, usageOut *bytes.Buffer) (Config, error) {
	cfg := Default()
	fs := flag.NewFlagSet("tracedx serve", flag.ContinueOnError)
	if usageOut != nil {
		fs.SetOutput(usageOut)
	}
	configFile := fs.String("config", "", "optional YAML configuration file; flags given on the command line override it")
	// Flags are bound to a scratch copy first so the file can be applied
	// underneath them.
	var f Config = cfg
	fs.StringVar(&f.DataDir, "data-dir", cfg.DataDir, "directory for the write-ahead log, blocks, metrics and findings")
	fs.StringVar(&f.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&f.Listen.OTLPGRPC, "otlp-grpc-addr", cfg.Listen.OTLPGRPC, "OTLP/gRPC listen address (empty disables)")
	fs.StringVar(&f.Listen.OTLPHTTP, "otlp-http-addr", cfg.Listen.OTLPHTTP, "OTLP/HTTP listen address for /v1/traces and /v1/logs (empty disables)")
	fs.StringVar(&f.Listen.Zipkin, "zipkin-addr", cfg.Listen.Zipkin, "Zipkin v2 JSON listen address for /api/v2/spans (empty disables)")
	fs.StringVar(&f.Listen.HTTP, "http-addr", cfg.Listen.HTTP, "address of the UI, /api/v1, the Jaeger APIs and /metrics")
	fs.StringVar(&f.Listen.Tempo, "tempo-addr", cfg.Listen.Tempo, "address of the Tempo-compatible API (empty disables)")
	allowedHosts := fs.String("allowed-hosts", "", "comma-separated host names the UI and query APIs answer to, besides the listen hosts, localhost and loopback (* for any)")
	fs.DurationVar(&f.Storage.Retention, "retention", cfg.Storage.Retention, "delete spans older than this")
	fs.Int64Var(&f.Storage.MaxDiskBytes, "max-disk-bytes", cfg.Storage.MaxDiskBytes, "disk budget of spans, WAL and findings: the oldest blocks are deleted beyond it, and ingest is refused (retryably) rather than delete data for the WAL (0: no limit)")
	fs.DurationVar(&f.Storage.TraceIdleTimeout, "trace-idle-timeout", cfg.Storage.TraceIdleTimeout, "a trace with no new spans for this long is complete and gets analysed")
	fs.Int64Var(&f.Ingest.MaxRequestBytes, "max-request-bytes", cfg.Ingest.MaxRequestBytes, "largest accepted ingest request body (after decompression)")
	fs.Int64Var(&f.Storage.HeadMaxBytes, "head-max-bytes", cfg.Storage.HeadMaxBytes, "memory for spans not yet in blocks; ingest slows, then refuses, beyond it")
	fs.BoolVar(&f.Analysis.Enabled, "analysis", cfg.Analysis.Enabled, "run the per-trace detectors on completed traces")
	fs.BoolVar(&f.Analytics.Enabled, "analytics", cfg.Analytics.Enabled, "compute the cross-trace analytics: RED metrics, service graph, baselines, systemic findings")
	fs.Int64Var(&f.MemoryLimit, "memory-limit", cfg.MemoryLimit, "soft memory limit of the process in bytes; 0: GOMEMLIMIT if set, else storage.head_max_bytes*5/4 + 96 MiB; -1: none")
	fs.StringVar(&f.Storage.Backend, "storage", cfg.Storage.Backend, "where blocks live: local (under --data-dir) or s3 (--s3-endpoint, --s3-bucket)")
	fs.StringVar(&f.Storage.S3.Endpoint, "s3-endpoint", cfg.Storage.S3.Endpoint, "S3 endpoint, host:port or http(s)://host:port; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	fs.StringVar(&f.Storage.S3.Bucket, "s3-bucket", cfg.Storage.S3.Bucket, "S3 bucket for blocks (created when missing)")
	fs.StringVar(&f.Storage.S3.Prefix, "s3-prefix", cfg.Storage.S3.Prefix, "prefix of the objects in the bucket")
	fs.StringVar(&f.Cluster.NodeID, "node-id", cfg.Cluster.NodeID, "this node's id in --peers")
	peers := fs.String("peers", "", "cluster nodes sharing the bucket, comma-separated id=otlp_grpc_host:port/http_host:port (this node included)")
	fs.StringVar(&f.Alerting.RulesFile, "alert-rules", cfg.Alerting.RulesFile, "YAML file of alert rules ({rules: [...]}, see docs/alerting.md)")
	var amURLs stringList
	fs.Var(&amURLs, "alertmanager-url", "Alertmanager to notify, e.g. http://localhost:9093 (repeat for several)")
	fs.BoolVar(&f.Alerting.Enabled, "alerting", cfg.Alerting.Enabled, "evaluate alert rules and send notifications")
	fs.BoolVar(&f.Sampling.Enabled, "sampling", cfg.Sampling.Enabled, "tail sampling: keep only traces with errors, findings or unusual latency, and sampling.rate of the rest")
	fs.BoolVar(&f.Multitenancy.Enabled, "multitenancy", cfg.Multitenancy.Enabled, "keep tenants apart: every request names its tenant (X-Scope-OrgID or its token's)")
	fs.StringVar(&f.Auth.TokenFile, "auth-token-file", cfg.Auth.TokenFile, "file of accepted bearer tokens (token [tenant [read,write]] per line, or YAML); empty: no authentication")
	fs.StringVar(&f.TLS.CertFile, "tls-cert", cfg.TLS.CertFile, "PEM certificate of every listener; enables TLS (re-read when it changes)")
	fs.StringVar(&f.TLS.KeyFile, "tls-key", cfg.TLS.KeyFile, "PEM private key of --tls-cert")
	fs.StringVar(&f.TLS.ClientCAFile, "tls-client-ca", cfg.TLS.ClientCAFile, "PEM CA certificates client certificates must be signed by (mTLS); empty: no client certificates")
	fs.BoolVar(&f.InsecureListen, "insecure-listen", cfg.InsecureListen, "allow non-loopback listen addresses without --auth-token-file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (serve takes only flags)", fs.Arg(0))
	}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return cfg, fmt.Errorf("reading config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
			return cfg, fmt.Errorf("config file %s: %w", *configFile, err)
		}
	}
	// Apply only the flags the user set, so they win over the file.
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "data-dir":
			cfg.DataDir = f.DataDir
		case "log-level":
			cfg.LogLevel = f.LogLevel
		case "otlp-grpc-addr":
			cfg.Listen.OTLPGRPC = f.Listen.OTLPGRPC
		case "otlp-http-addr":
			cfg.Listen.OTLPHTTP = f.Listen.OTLPHTTP
		case "zipkin-addr":
			cfg.Listen.Zipkin = f.Listen.Zipkin
		case "http-addr":
			cfg.Listen.HTTP = f.Listen.HTTP
		case "tempo-addr":
			cfg.Listen.Tempo = f.Listen.Tempo
		case "retention":
			cfg.Storage.Retention = f.Storage.Retention
		case "max-disk-bytes":
			cfg.Storage.MaxDiskBytes = f.Storage.MaxDiskBytes
		case "trace-idle-timeout":
			cfg.Storage.TraceIdleTimeout = f.Storage.TraceIdleTimeout
		case "max-request-bytes":
			cfg.Ingest.MaxRequestBytes = f.Ingest.MaxRequestBytes
		case "head-max-bytes":
			cfg.Storage.HeadMaxBytes = f.Storage.HeadMaxBytes
		case "analysis":
			cfg.Analysis.Enabled = f.Analysis.Enabled
		case "analytics":
			cfg.Analytics.Enabled = f.Analytics.Enabled
		case "memory-limit":
			cfg.MemoryLimit = f.MemoryLimit
		case "storage":
			cfg.Storage.Backend = f.Storage.Backend
		case "s3-endpoint":
			cfg.Storage.S3.Endpoint = f.Storage.S3.Endpoint
		case "s3-bucket":
			cfg.Storage.S3.Bucket = f.Storage.S3.Bucket
		case "s3-prefix":
			cfg.Storage.S3.Prefix = f.Storage.S3.Prefix
		case "node-id":
			cfg.Cluster.NodeID = f.Cluster.NodeID
		case "alert-rules":
			cfg.Alerting.RulesFile = f.Alerting.RulesFile
		case "alertmanager-url":
			cfg.Alerting.AlertmanagerURLs = amURLs
		case "alerting":
			cfg.Alerting.Enabled = f.Alerting.Enabled
		case "allowed-hosts":
			cfg.Listen.AllowedHosts = splitList(*allowedHosts)
		case "sampling":
			cfg.Sampling.Enabled = f.Sampling.Enabled
		case "multitenancy":
			cfg.Multitenancy.Enabled = f.Multitenancy.Enabled
		case "auth-token-file":
			cfg.Auth.TokenFile = f.Auth.TokenFile
		case "tls-cert":
			cfg.TLS.CertFile = f.TLS.CertFile
		case "tls-key":
			cfg.TLS.KeyFile = f.TLS.KeyFile
		case "tls-client-ca":
			cfg.TLS.ClientCAFile = f.TLS.ClientCAFile
		case "insecure-listen":
			cfg.InsecureListen = f.InsecureListen
		}
	})
	if *peers != "" {
		ps, err := cluster.ParsePeers(*peers)
		if err != nil {
			return cfg, fmt.Errorf("--peers: %w", err)
		}
		cfg.Cluster.Peers = ps
	}
	return cfg, cfg.Validate()
}

func splitList(s string) []string {
	out := []string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// EffectiveMemoryLimit resolves MemoryLimit: the limit in bytes (0: none)
// and where it comes from ("config", "GOMEMLIMIT", "default" or "none").
// gomemlimit is the GOMEMLIMIT environment variable; when set and the
// config leaves memory_limit at 0, the Go runtime has already applied it.
func (c *Config) EffectiveMemoryLimit(gomemlimit string) (int64, string) {
	switch {
	case c.MemoryLimit < 0:
		return 0, "none"
	case c.MemoryLimit > 0:
		return c.MemoryLimit, "config"
	case gomemlimit != "":
		return 0, "GOMEMLIMIT"
	}
	head := c.Storage.HeadMaxBytes
	if head <= 0 {
		head = Default().Storage.HeadMaxBytes
	}
	// The engine holds up to about 1.25 × head_max_bytes (head, cold tier,
	// a cut in flight); ingest buffers and the rest need ~100 MB at full
	// rate. Measured at 100k spans/s (store only): peak RSS 261 MB with
	// this limit (256 MiB), 306 MB with 32 MiB more, at the same CPU cost.
	return head*5/4 + 96<<20, "default"
}

// MaxOpen is how long a trace that keeps receiving spans stays open
// before it is completed (and analysed) all the same: trace_max_open, or
// three times trace_idle_timeout (30 s by default). Three idle timeouts
// leave traces whose spans trickle in (exporters flushing every 5 s,
// a slow batch job) whole, and bound how late a trace that never goes idle
// (a message requeued forever, a long-lived stream) is analysed; each
// later completion reads the whole trace back, so a much shorter bound
// costs read-backs.
func (s Storage) MaxOpen() time.Duration {
	if s.TraceMaxOpen > 0 {
		return s.TraceMaxOpen
	}
	return 3 * s.TraceIdleTimeout
}

// Validate checks values a user can get wrong.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir must not be empty")
	}
	if c.Listen.HTTP == "" {
		return errors.New("listen.http must not be empty: the query API and UI need it")
	}
	if c.Storage.TraceIdleTimeout <= 0 {
		return errors.New("storage.trace_idle_timeout must be positive")
	}
	if m := c.Storage.TraceMaxOpen; m < 0 || (m > 0 && m < c.Storage.TraceIdleTimeout) {
		return fmt.Errorf("storage.trace_max_open %s: want 0 (three times trace_idle_timeout) or at least trace_idle_timeout (%s); shorter, traces would complete before they go idle", m, c.Storage.TraceIdleTimeout)
	}
	if c.Storage.Retention < 0 || c.Storage.MaxDiskBytes < 0 || c.Cluster.PeerCopiesMaxBytes < 0 {
		return errors.New("storage.retention, storage.max_disk_bytes and cluster.peer_copies_max_bytes must not be negative")
	}
	if c.Storage.HeadMaxBytes < 0 {
		return errors.New("storage.head_max_bytes must not be negative")
	}
	if c.Analysis.QueueSpans < 0 {
		return errors.New("analysis.queue_spans must not be negative")
	}
	if c.Analysis.MaxCPUShare < 0 || c.Analysis.MaxCPUShare > 1 {
		return fmt.Errorf("analysis.max_cpu_share %g: want a fraction between 0 and 1", c.Analysis.MaxCPUShare)
	}
	if c.Analytics.BaselineTracesPerSecond < 0 {
		return errors.New("analytics.baseline_traces_per_second must not be negative")
	}
	if c.Analytics.WholeTracesPerSecond < 0 {
		return errors.New("analytics.whole_traces_per_second must not be negative")
	}
	if bl := c.Analytics.Baseline; bl.HalfLife <= 0 || bl.Window <= 0 || bl.AcceptAfter <= 0 || bl.ReleaseAfter <= 0 {
		return errors.New("analytics.baseline: half_life, window, accept_after and release_after must be positive durations")
	}
	if c.Analytics.Baseline.AnomalyFactor <= 1 {
		return fmt.Errorf("analytics.baseline.anomaly_factor %g: want more than 1 (a window that many times slower than usual is held out)", c.Analytics.Baseline.AnomalyFactor)
	}
	if c.MemoryLimit > 0 && c.MemoryLimit < 64<<20 {
		return fmt.Errorf("memory_limit %d: below 64 MiB the garbage collector would run constantly; use -1 for no limit", c.MemoryLimit)
	}
	if c.Admission.HeapFraction < 0 || c.Admission.HeapFraction > 1 {
		return fmt.Errorf("admission.heap_fraction %g: want a fraction between 0 and 1", c.Admission.HeapFraction)
	}
	if c.Admission.RetryAfter < 0 {
		return errors.New("admission.retry_after must not be negative")
	}
	if c.Admission.MemoryWait < 0 || c.Admission.MemoryWait > 5*time.Second {
		return fmt.Errorf("admission.memory_wait %s: want 0 to 5s (exporters time out after a few seconds)", c.Admission.MemoryWait)
	}
	if c.Query.MaxTraceSpans <= 0 || c.Query.MaxAnalysisSpans <= 0 || c.Query.MaxAPITraceSpans <= 0 {
		return errors.New("query.max_trace_spans, query.max_analysis_spans and query.max_api_trace_spans must be positive")
	}
	if c.Ingest.MaxRequestBytes <= 0 {
		return errors.New("ingest.max_request_bytes must be positive")
	}
	if err := c.validateStorage(); err != nil {
		return err
	}
	if c.Alerting.Enabled {
		if c.Alerting.Interval <= 0 {
			return errors.New("alerting.interval must be positive")
		}
		if c.Alerting.ResendInterval <= 0 {
			return errors.New("alerting.resend_interval must be positive")
		}
		if c.Alerting.QueueSize <= 0 {
			return errors.New("alerting.queue_size must be positive")
		}
		if u := c.Alerting.ExternalURL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("alerting.external_url %q: want the http(s):// address people open the UI at", u)
		}
		for i, w := range c.Alerting.Webhooks {
			if w.URL == "" {
				return fmt.Errorf("alerting.webhooks[%d].url must not be empty", i)
			}
		}
	}
	in := c.Ingest
	for _, v := range []struct {
		key string
		n   int
	}{{"max_attributes_per_span", in.MaxAttributes}, {"max_spans_per_request", in.MaxSpansPerRequest},
		{"max_events_per_span", in.MaxEventsPerSpan}, {"max_links_per_span", in.MaxLinksPerSpan},
		{"max_attribute_depth", in.MaxAttributeDepth}, {"max_attribute_value_bytes", in.MaxAttributeValueBytes},
		{"max_spans_per_trace", in.MaxSpansPerTrace}} {
		if v.n <= 0 {
			return fmt.Errorf("ingest.%s must be positive (got %d)", v.key, v.n)
		}
	}
	if in.MaxAttributeDepth > 128 {
		return fmt.Errorf("ingest.max_attribute_depth %d: at most 128", in.MaxAttributeDepth)
	}
	if in.MaxAttributeValueBytes < 64 {
		return fmt.Errorf("ingest.max_attribute_value_bytes %d: at least 64", in.MaxAttributeValueBytes)
	}
	if in.MaxSpanDuration <= 0 {
		return errors.New("ingest.max_span_duration must be positive")
	}
	if c.Query.Timeout <= 0 || c.Query.MaxRegexBytes <= 0 || c.Query.MaxRegexInstructions <= 0 {
		return errors.New("query.timeout, query.max_regex_bytes and query.max_regex_instructions must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if err := c.validateSampling(); err != nil {
		return err
	}
	return c.validateSecurity()
}

func (c *Config) validateSampling() error {
	sm := c.Sampling
	switch sm.KeepFindings {
	case "", "info", "warning", "critical":
	default:
		return fmt.Errorf("sampling.keep_findings %q: want info, warning, critical or empty", sm.KeepFindings)
	}
	switch sm.KeepSlowerThan {
	case "", "p50", "p95":
	default:
		return fmt.Errorf("sampling.keep_slower_than %q: want p50, p95 or empty", sm.KeepSlowerThan)
	}
	if sm.Rate < 0 || sm.Rate > 1 {
		return fmt.Errorf("sampling.rate %g: want a share between 0 and 1", sm.Rate)
	}
	for ep, r := range sm.EndpointRates {
		if r < 0 || r > 1 {
			return fmt.Errorf("sampling.endpoint_rates[%q] %g: want a share between 0 and 1", ep, r)
		}
	}
	if sm.MinPerMinute < 0 || sm.MaxFindingTracesPerMinute < 0 {
		return errors.New("sampling.min_per_endpoint_per_minute and max_finding_traces_per_minute must not be negative")
	}
	if sm.Enabled && !c.Analysis.Enabled {
		return errors.New("sampling needs analysis.enabled: without the detectors a trace's findings could not keep it")
	}
	for id, l := range c.Multitenancy.Tenants {
		if l.IngestSpansPerSecond < 0 || l.MaxSpansPerTrace < 0 || l.MaxTraceBytes < 0 || l.Retention < 0 {
			return fmt.Errorf("multitenancy.tenants.%s: limits must not be negative", id)
		}
	}
	if l := c.Multitenancy.Limits; l.IngestSpansPerSecond < 0 || l.MaxSpansPerTrace < 0 || l.MaxTraceBytes < 0 || l.Retention < 0 {
		return errors.New("multitenancy.limits must not be negative")
	}
	if r := c.Retention; r.Traces < 0 || r.KeptTraces < 0 || r.Findings < 0 || r.Metrics < 0 || c.Analysis.MetricsRetention < 0 {
		return errors.New("retention.traces, retention.kept_traces, retention.findings and retention.metrics must not be negative")
	}
	return nil
}

func (c *Config) validateStorage() error {
	switch c.Storage.Backend {
	case "local", "":
	case "s3":
		if c.Storage.S3.Endpoint == "" || c.Storage.S3.Bucket == "" {
			return errors.New("storage.backend s3 needs storage.s3.endpoint and storage.s3.bucket (--s3-endpoint, --s3-bucket)")
		}
	default:
		return fmt.Errorf("storage.backend %q: want local or s3", c.Storage.Backend)
	}
	if len(c.Cluster.Peers) == 0 {
		return nil
	}
	if c.Storage.Backend != "s3" {
		return errors.New("cluster.peers needs storage.backend s3: the nodes share blocks through the bucket")
	}
	if _, err := cluster.NewRing(c.Cluster.Peers, c.Cluster.NodeID); err != nil {
		return fmt.Errorf("cluster: %w (set --node-id to this node's id in --peers)", err)
	}
	if c.Cluster.RefreshInterval <= 0 {
		return errors.New("cluster.refresh_interval must be positive")
	}
	// With tokens on the listeners, forwarded spans and peer queries need
	// a credential of their own that no tenant's token can stand in for.
	if c.Auth.TokenFile != "" && c.Cluster.TokenFile == "" {
		return errors.New("cluster with auth.token_file needs cluster.token_file: the peer token the nodes send each other")
	}
	if c.Cluster.TLSCAFile != "" && !c.TLS.Enabled() {
		return errors.New("cluster.tls_ca_file needs tls.cert_file and tls.key_file: peers speak TLS only when the listeners do")
	}
	return nil
}

// validateSecurity refuses half a TLS setup, and a listener others can
// reach when nothing checks who they are.
func (c *Config) validateSecurity() error {
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls: set both cert_file and key_file (--tls-cert, --tls-key), or neither")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return errors.New("tls.client_ca_file needs tls.cert_file and tls.key_file: client certificates are checked only over TLS")
	}
	if c.Auth.TokenFile != "" || c.InsecureListen {
		return nil
	}
	for _, l := range []struct{ key, addr string }{{"otlp_grpc", c.Listen.OTLPGRPC}, {"otlp_http", c.Listen.OTLPHTTP},
		{"zipkin", c.Listen.Zipkin}, {"http", c.Listen.HTTP}, {"tempo", c.Listen.Tempo}} {
		if l.addr != "" && !Loopback(l.addr) {
			return fmt.Errorf("listen.%s %q is reachable from other hosts, and without authentication anyone there could read and write every trace: "+
				"set --auth-token-file (auth.token_file), or pass --insecure-listen (insecure_listen: true) to accept that", l.key, l.addr)
		}
	}
	return nil
}

// Loopback reports whether a listen address binds only the loopback
// interface. An empty host (":4317") binds every interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
