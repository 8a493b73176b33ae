package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "echod.toml")
	if err := os.WriteFile(file, []byte(`
listen = ["127.0.0.1:1", "unix:/tmp/x.sock"]
drain-timeout = "5s"
max-conns = 10
idle-timeout = "1m"
fdstore = true
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]string{"-config", file, "-drain-timeout", "7s", "-listen", "[::1]:2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Listen, ","); got != "[::1]:2" {
		t.Errorf("listen = %s, want the flag's [::1]:2 (a flag replaces the file's list)", got)
	}
	if cfg.DrainTimeout != 7*time.Second {
		t.Errorf("drain-timeout = %v, want the flag's 7s", cfg.DrainTimeout)
	}
	if cfg.MaxConns != 10 || cfg.IdleTimeout != time.Minute || !cfg.FDStore {
		t.Errorf("file values lost: max-conns %d idle-timeout %v fdstore %v", cfg.MaxConns, cfg.IdleTimeout, cfg.FDStore)
	}
	if cfg.UpgradeTimeout != 10*time.Second {
		t.Errorf("upgrade-timeout = %v, want the default 10s", cfg.UpgradeTimeout)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "/run/echod:/run/other")
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.specs) != 0 || cfg.DrainTimeout != 30*time.Second || cfg.Control != "/run/echod/control.sock" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		file string
		args []string
		want string
	}{
		{file: `listen = ["127.0.0.1:1"]` + "\nlisten-typo = 1\n", want: "unknown key(s): listen-typo"},
		{file: `drain-timeout = "soon"`, want: "drain-timeout"},
		{file: `max-conns = "many"`, want: "max-conns"},
		{file: `listen = ["127.0.0.1:1", "127.0.0.1:1"]`, want: "given twice"},
		{file: `upgrade-timeout = "0s"`, want: "upgrade-timeout: 0s must be positive"},
		{file: `log-level = "loud"`, want: "log-level"},
		{args: []string{"-control", "relative.sock"}, want: "control"},
		{args: []string{"-listen", "unix:/a.sock", "-control", "/a.sock"}, want: "also a listen address"},
		{args: []string{"extra"}, want: `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		args := tc.args
		if tc.file != "" {
			f := filepath.Join(t.TempDir(), "c.toml")
			os.WriteFile(f, []byte(tc.file), 0o644)
			args = append([]string{"-config", f}, args...)
		}
		_, err := parseConfig(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q, file %q) = %v, want an error saying %q", tc.args, tc.file, err, tc.want)
		}
	}
}

// FuzzDecodeConfig: whatever the file holds, decoding and validating
// never panics, and a config that validates has parsed listen specs.
func FuzzDecodeConfig(f *testing.F) {
	for _, s := range []string{
		"", `listen = ["127.0.0.1:7007"]`, "drain-timeout = \"1s\"\nmax-conns = 3", "fdstore = true",
		"listen = [\n", `x = 1`, `listen = "notalist"`, "[section]\nkey=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cfg := defaultConfig()
		if err := decodeConfig("fuzz", []byte(text), &cfg); err != nil {
			return
		}
		if err := cfg.validate(); err != nil {
			return
		}
		if len(cfg.specs) != len(cfg.Listen) {
			t.Fatalf("%d listen values but %d specs", len(cfg.Listen), len(cfg.specs))
		}
	})
}

func TestLoggerTimestamps(t *testing.T) {
	var b strings.Builder
	t.Setenv("JOURNAL_STREAM", "")
	newLogger(&b, "info").Info("hello", "gen", 1)
	if !strings.HasPrefix(b.String(), "time=") {
		t.Errorf("terminal log line %q has no timestamp", b.String())
	}
	// Only when stderr really is the journal's stream (device and inode
	// match, as go-systemd's StderrIsJournalStream checks).
	var st syscall.Stat_t
	if err := syscall.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", "1:1")
	b.Reset()
	newLogger(&b, "info").Info("hello", "gen", 1)
	if !strings.HasPrefix(b.String(), "time=") {
		t.Errorf("log line %q has no timestamp though stderr is not the journal", b.String())
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	b.Reset()
	newLogger(&b, "info").Info("hello", "gen", 1)
	if got := b.String(); got != "level=INFO msg=hello gen=1\n" {
		t.Errorf("journal log line %q, want no timestamp", got)
	}
}
