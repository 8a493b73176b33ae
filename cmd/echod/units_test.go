package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestShippedUnitsVerify checks the shipped unit files with systemd's own
// tools: `systemd-analyze verify` finds nothing wrong, and the hardening
// keeps the exposure score of `systemd-analyze security` at 2.0 or below
// ("OK"). The user-manager tests cannot run the hardening (no namespaces
// there); this is where it is checked.
func TestShippedUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	units, err := filepath.Glob(filepath.Join("..", "..", "systemd", "units", "*"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no unit files: %v", err)
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(u))
		content := strings.ReplaceAll(string(b), "/usr/local/bin/echod", echodBin(t))
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, p := range paths {
		if !strings.HasSuffix(p, ".service") {
			continue
		}
		out, err := exec.CommandContext(ctx, sa, "security", "--offline=yes", p).CombinedOutput()
		m := score.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", filepath.Base(p), err, out)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", filepath.Base(p), v)
		if v > 2.0 {
			t.Errorf("%s: exposure %.1f, want ≤ 2.0 (hardening lost?)\n%s", filepath.Base(p), v, out)
		}
	}
}
