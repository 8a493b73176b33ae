package load

import (
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"127.0.0.1:7007":     {"tcp", "127.0.0.1:7007"},
		"tcp:[::1]:7":        {"tcp", "[::1]:7"},
		"unix:/run/e.sock":   {"unix", "/run/e.sock"},
		"/run/echod/e.sock":  {"unix", "/run/echod/e.sock"},
		"unix:relative/sock": {"unix", "relative/sock"},
	} {
		if got, err := ParseTarget(in); err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "unix:", "localhost", "relative/path"} {
		if _, err := ParseTarget(in); err == nil {
			t.Errorf("ParseTarget(%q) succeeded", in)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	c := Config{Addr: "127.0.0.1:1", Duration: time.Second, Concurrency: 1, Size: 64, Timeout: time.Second,
		Reload: ReloadConfig{PidFile: "/run/x.pid", Every: time.Second}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// The reload timeout does not follow -timeout.
	if c.Reload.Signal != "HUP" || c.Reload.Timeout != DefaultReloadTimeout || c.Reload.Mode() != "signal" {
		t.Errorf("reload defaults = %+v", c.Reload)
	}
	c.Reload.Timeout = 90 * time.Second
	if err := c.Validate(); err != nil || c.Reload.Timeout != 90*time.Second {
		t.Errorf("reload timeout 90s: %v, %v", err, c.Reload.Timeout)
	}
	c.Reload.Timeout = -time.Second
	if err := c.Validate(); err == nil {
		t.Error("negative reload timeout accepted")
	}
}
