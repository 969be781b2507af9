package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFlagsOverrideFileOverrideDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tracedx.yaml")
	yaml := "data_dir: /from/file\nlisten:\n  http: 127.0.0.1:9999\nstorage:\n  retention: 48h\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--data-dir", "/from/flag"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/flag" {
		t.Errorf("flag must win over file: got %q", cfg.DataDir)
	}
	if cfg.Listen.HTTP != "127.0.0.1:9999" || cfg.Storage.Retention != 48*time.Hour {
		t.Errorf("file values lost: %+v", cfg)
	}
	if cfg.Listen.OTLPGRPC != "127.0.0.1:4317" {
		t.Errorf("default lost: %q", cfg.Listen.OTLPGRPC)
	}
}

func TestBadInputIsExplained(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(file, []byte("no_such_key: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{"--config", file}, nil); err == nil || !strings.Contains(err.Error(), "no_such_key") {
		t.Fatalf("unknown key must be reported, got %v", err)
	}
	if _, err := Load([]string{"--log-level", "loud"}, nil); err == nil {
		t.Fatal("bad log level accepted")
	}
	if _, err := Load([]string{"extra"}, nil); err == nil {
		t.Fatal("stray argument accepted")
	}
	empty := filepath.Join(dir, "empty.yaml")
	_ = os.WriteFile(empty, nil, 0o644)
	if _, err := Load([]string{"--config", empty}, nil); err != nil {
		t.Fatalf("empty config file must be accepted: %v", err)
	}
}

func TestMemoryAndAnalyticsSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tracedx.yaml")
	yaml := "memory_limit: 402653184\nanalytics:\n  enabled: false\nanalysis:\n  queue_spans: 1000\n  max_cpu_share: 0.3\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--analysis=false"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MemoryLimit != 384<<20 || cfg.Analytics.Enabled || cfg.Analysis.Enabled || cfg.Analysis.QueueSpans != 1000 || cfg.Analysis.MaxCPUShare != 0.3 {
		t.Fatalf("file/flag values not applied: %+v", cfg)
	}
	if l, src := cfg.EffectiveMemoryLimit("1GiB"); l != 384<<20 || src != "config" {
		t.Errorf("explicit memory_limit must win over GOMEMLIMIT: %d %s", l, src)
	}
	cfg, err = Load([]string{"--analytics=false", "--memory-limit", "-1", "--head-max-bytes", "67108864"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Analytics.Enabled || !cfg.Analysis.Enabled || cfg.Storage.HeadMaxBytes != 64<<20 {
		t.Fatalf("flags not applied: %+v", cfg)
	}
	if l, src := cfg.EffectiveMemoryLimit(""); l != 0 || src != "none" {
		t.Errorf("-1 must disable the limit: %d %s", l, src)
	}

	def := Default()
	if !def.Analytics.Enabled || def.MemoryLimit != 0 {
		t.Fatalf("defaults: %+v", def)
	}
	if l, src := def.EffectiveMemoryLimit("512MiB"); l != 0 || src != "GOMEMLIMIT" {
		t.Errorf("GOMEMLIMIT must be honoured when memory_limit is unset: %d %s", l, src)
	}
	l, src := def.EffectiveMemoryLimit("")
	if src != "default" || l != def.Storage.HeadMaxBytes*5/4+96<<20 {
		t.Errorf("derived limit: %d %s", l, src)
	}
	def.Storage.HeadMaxBytes *= 4
	if l2, _ := def.EffectiveMemoryLimit(""); l2 <= l {
		t.Errorf("the derived limit must grow with head_max_bytes: %d then %d", l, l2)
	}

	for _, args := range [][]string{{"--memory-limit", "1000"}, {"--head-max-bytes", "-5"}} {
		if _, err := Load(args, nil); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("analysis:\n  max_cpu_share: 1.5\n"), 0o644)
	if _, err := Load([]string{"--config", bad}, nil); err == nil || !strings.Contains(err.Error(), "max_cpu_share") {
		t.Errorf("bad max_cpu_share: %v", err)
	}
	for _, wait := range []string{"-1s", "10s"} {
		_ = os.WriteFile(bad, []byte("admission:\n  memory_wait: "+wait+"\n"), 0o644)
		if _, err := Load([]string{"--config", bad}, nil); err == nil || !strings.Contains(err.Error(), "memory_wait") {
			t.Errorf("admission.memory_wait %s: %v", wait, err)
		}
	}
	_ = os.WriteFile(bad, []byte("admission:\n  memory_wait: 0s\n"), 0o644)
	if cfg, err := Load([]string{"--config", bad}, nil); err != nil || cfg.Admission.MemoryWait != 0 {
		t.Errorf("admission.memory_wait 0s: %v, %v", cfg.Admission.MemoryWait, err)
	}
}

// fileLoader returns a function that loads a config file of the given
// text.
func fileLoader(t *testing.T) func(yaml string) (Config, error) {
	dir := t.TempDir()
	return func(yaml string) (Config, error) {
		file := filepath.Join(dir, "tracedx.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return Load([]string{"--config", file}, nil)
	}
}

func TestBaselineSettings(t *testing.T) {
	load := fileLoader(t)
	cfg, err := load("analytics:\n  baseline:\n    accept_after: 2h\n    anomaly_factor: 3\n")
	if err != nil {
		t.Fatal(err)
	}
	bl := cfg.Analytics.Baseline
	if bl.AcceptAfter != 2*time.Hour || bl.AnomalyFactor != 3 || bl.HalfLife != 24*time.Hour || bl.Window != 5*time.Minute || bl.ReleaseAfter != 30*time.Minute {
		t.Errorf("baseline settings (set keys, defaults for the rest): %+v", bl)
	}
	if _, err := load("analytics:\n  baseline:\n    anomaly_factor: 1\n"); err == nil || !strings.Contains(err.Error(), "anomaly_factor") {
		t.Errorf("anomaly_factor 1 must be refused by name, got %v", err)
	}
	if _, err := load("analytics:\n  baseline:\n    window: 0s\n"); err == nil || !strings.Contains(err.Error(), "analytics.baseline") {
		t.Errorf("a zero window must be refused, got %v", err)
	}
}

func TestStorageS3AndClusterSettings(t *testing.T) {
	cfg, err := Load([]string{"--storage", "s3", "--s3-endpoint", "http://minio:9000", "--s3-bucket", "traces", "--s3-prefix", "prod",
		"--node-id", "b", "--peers", "a=10.0.0.1:4317/10.0.0.1:16686,b=10.0.0.2:4317/10.0.0.2:16686"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Backend != "s3" || cfg.Storage.S3.Endpoint != "http://minio:9000" || cfg.Storage.S3.Bucket != "traces" || cfg.Storage.S3.Prefix != "prod" {
		t.Fatalf("s3 flags: %+v", cfg.Storage)
	}
	if cfg.Cluster.NodeID != "b" || len(cfg.Cluster.Peers) != 2 || cfg.Cluster.Peers[1].HTTP != "10.0.0.2:16686" || !cfg.Cluster.Forward {
		t.Fatalf("cluster flags: %+v", cfg.Cluster)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte(`
storage:
  backend: s3
  s3: {endpoint: "minio:9000", bucket: traces}
cluster:
  node_id: a
  forward: false
  refresh_interval: 2s
  peers:
    - {id: a, otlp_grpc: "10.0.0.1:4317", http: "10.0.0.1:16686"}
`), 0o644)
	cfg, err = Load([]string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Forward || cfg.Cluster.RefreshInterval != 2*time.Second || cfg.Cluster.Peers[0].OTLPGRPC != "10.0.0.1:4317" || cfg.Storage.S3.CacheBytes != 64<<20 {
		t.Fatalf("cluster file: %+v %+v", cfg.Cluster, cfg.Storage.S3)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"s3 without bucket": {[]string{"--storage", "s3", "--s3-endpoint", "m:9000"}, "storage.s3.bucket"},
		"unknown backend":   {[]string{"--storage", "gcs"}, `"gcs"`},
		"cluster on local":  {[]string{"--node-id", "a", "--peers", "a=h:1/h:2"}, "needs storage.backend s3"},
		"node not a peer":   {[]string{"--storage", "s3", "--s3-endpoint", "m:9000", "--s3-bucket", "b", "--node-id", "c", "--peers", "a=h:1/h:2"}, `"c" is not in the peer list`},
		"bad peer":          {[]string{"--peers", "a=h:1"}, "want id=otlp_grpc_host:port/http_host:port"},
		"peer CA without tls": {[]string{"--storage", "s3", "--s3-endpoint", "m:9000", "--s3-bucket", "b", "--node-id", "a", "--peers", "a=h:1/h:2",
			"--config", secureCluster(t, "cluster:\n  tls_ca_file: /etc/tracedx/ca.pem\n")}, "cluster.tls_ca_file needs tls.cert_file"},
		"cluster with auth, no peer token": {[]string{"--storage", "s3", "--s3-endpoint", "m:9000", "--s3-bucket", "b", "--node-id", "a", "--peers", "a=h:1/h:2",
			"--auth-token-file", "/etc/tracedx/tokens"}, "needs cluster.token_file"},
	} {
		if _, err := Load(tc.args, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %s", name, err, tc.want)
		}
	}
}

func secureCluster(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// Tokens, TLS and tenants all work in a cluster: the whole set loads.
func TestSecureMultiTenantClusterLoads(t *testing.T) {
	file := secureCluster(t, `
storage: {backend: s3, s3: {endpoint: "minio:9000", bucket: traces}}
multitenancy: {enabled: true}
auth: {token_file: /etc/tracedx/tokens}
tls: {cert_file: /etc/tracedx/node.pem, key_file: /etc/tracedx/node-key.pem, client_ca_file: /etc/tracedx/ca.pem}
listen: {otlp_grpc: "0.0.0.0:4317", http: "0.0.0.0:16686"}
cluster:
  node_id: a
  token_file: /etc/tracedx/peer-token
  tls_ca_file: /etc/tracedx/ca.pem
  peers:
    - {id: a, otlp_grpc: "tracedx-a:4317", http: "tracedx-a:16686"}
    - {id: b, otlp_grpc: "tracedx-b:4317", http: "tracedx-b:16686"}
`)
	cfg, err := Load([]string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.TokenFile != "/etc/tracedx/peer-token" || cfg.Cluster.TLSCAFile != "/etc/tracedx/ca.pem" || !cfg.Multitenancy.Enabled {
		t.Fatalf("secure cluster settings: %+v", cfg.Cluster)
	}
}

func TestAlertingSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tracedx.yaml")
	yaml := "alerting:\n  interval: 5s\n  alertmanager_urls: [http://from-file:9093]\n  webhooks: [{url: http://hook, secret: s}]\n  rules:\n    - alert: X\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--alertmanager-url", "http://a:9093", "--alertmanager-url", "http://b:9093", "--alert-rules", "/etc/rules.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Alerting
	if a.Interval != 5*time.Second || a.ResendInterval != time.Minute || !a.DefaultRules || a.RulesFile != "/etc/rules.yaml" ||
		strings.Join(a.AlertmanagerURLs, " ") != "http://a:9093 http://b:9093" || len(a.Webhooks) != 1 || a.Webhooks[0].Secret != "s" || a.Rules.Kind == 0 {
		t.Fatalf("alerting settings: %+v", a)
	}
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("alerting:\n  interval: 0s\n"), 0o644)
	if _, err := Load([]string{"--config", bad}, nil); err == nil || !strings.Contains(err.Error(), "alerting.interval") {
		t.Errorf("zero interval: %v", err)
	}
	_ = os.WriteFile(bad, []byte("alerting:\n  external_url: tracedx.example.com\n"), 0o644)
	if _, err := Load([]string{"--config", bad}, nil); err == nil || !strings.Contains(err.Error(), "alerting.external_url") {
		t.Errorf("external_url without a scheme: %v", err)
	}
	_ = os.WriteFile(bad, []byte("alerting:\n  interval: 0s\n"), 0o644)
	if cfg, err := Load([]string{"--config", bad, "--alerting=false"}, nil); err != nil || cfg.Alerting.Enabled {
		t.Errorf("alerting off needs no valid interval: %v", err)
	}
}

// The retention tiers: retention.traces applies to the traces sampling
// did not keep (only with sampling on), retention.metrics replaces
// analysis.metrics_retention, which still works while it is the only one
// set.
func TestRetentionTiers(t *testing.T) {
	load := func(yaml string) Config {
		t.Helper()
		file := filepath.Join(t.TempDir(), "tracedx.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load([]string{"--config", file}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := load("retention:\n  traces: 6h\n")
	if cfg.UnkeptTraceRetention() != 0 || cfg.TraceRetention() != cfg.Storage.Retention {
		t.Errorf("sampling off: unkept %v, traces %v", cfg.UnkeptTraceRetention(), cfg.TraceRetention())
	}
	cfg = load("sampling:\n  enabled: true\nretention:\n  traces: 6h\n  kept_traces: 240h\n")
	if cfg.UnkeptTraceRetention() != 6*time.Hour || cfg.TraceRetention() != 240*time.Hour {
		t.Errorf("sampling on: unkept %v, kept %v", cfg.UnkeptTraceRetention(), cfg.TraceRetention())
	}
	def, old, both := load(""), load("analysis:\n  metrics_retention: 48h\n"), load("analysis:\n  metrics_retention: 48h\nretention:\n  metrics: 96h\n")
	if got := def.MetricsRetention(); got != 30*24*time.Hour {
		t.Errorf("default metrics retention %v", got)
	}
	if got := old.MetricsRetention(); got != 48*time.Hour {
		t.Errorf("deprecated analysis.metrics_retention ignored: %v", got)
	}
	if got := both.MetricsRetention(); got != 96*time.Hour {
		t.Errorf("retention.metrics must win over the deprecated key: %v", got)
	}
	file := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(file, []byte("retention:\n  traces: -1h\n"), 0o644)
	if _, err := Load([]string{"--config", file}, nil); err == nil || !strings.Contains(err.Error(), "retention.traces") {
		t.Errorf("negative retention.traces: %v", err)
	}
}

func TestTenantLimitOverrides(t *testing.T) {
	m := Multitenancy{Limits: TenantLimits{IngestSpansPerSecond: 100, MaxTraceBytes: 1 << 20},
		Tenants: map[string]TenantLimits{"big": {MaxTraceBytes: 50 << 20}}}
	if l := m.LimitsOf("big"); l.MaxTraceBytes != 50<<20 || l.IngestSpansPerSecond != 100 {
		t.Errorf("big: %+v", l)
	}
	if l := m.LimitsOf("other"); l.MaxTraceBytes != 1<<20 {
		t.Errorf("other: %+v", l)
	}
}

func TestTraceMaxOpen(t *testing.T) {
	load := fileLoader(t)
	cfg, err := load("storage:\n  trace_idle_timeout: 20s\n")
	if err != nil || cfg.Storage.MaxOpen() != time.Minute {
		t.Fatalf("unset: max open %v (%v), want three idle timeouts", cfg.Storage.MaxOpen(), err)
	}
	if def := Default(); def.Storage.MaxOpen() != 30*time.Second {
		t.Errorf("default max open %v, want 30s", def.Storage.MaxOpen())
	}
	cfg, err = load("storage:\n  trace_max_open: 2m\n")
	if err != nil || cfg.Storage.MaxOpen() != 2*time.Minute {
		t.Fatalf("set: max open %v (%v), want 2m", cfg.Storage.MaxOpen(), err)
	}
	for _, bad := range []string{"storage:\n  trace_max_open: 5s\n", "storage:\n  trace_max_open: -1s\n"} {
		_, err := load(bad)
		if err == nil || !strings.Contains(err.Error(), "storage.trace_max_open") || !strings.Contains(err.Error(), "trace_idle_timeout (10s)") {
			t.Errorf("%q: %v, want an error naming trace_max_open and the idle timeout", bad, err)
		}
	}
}
