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
