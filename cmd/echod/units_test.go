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

	"github.com/echod/echod/systemd/systemdtest"
)

// TestShippedUnitsVerify checks the shipped unit files with systemd's own
// tools: `systemd-analyze verify` finds nothing wrong, and the hardening
// keeps the exposure score of `systemd-analyze security` at 2.0 or below
// ("OK"). The user-manager tests cannot run the hardening (no namespaces
// there); this is where it is checked.
func TestShippedUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	verifyUnits(t, systemdtest.Installed(), "")
}

// TestShippedUnits254Verify is TestShippedUnitsVerify for the units of
// systemd/units/254 (and the socket units beside them) with systemd 254's
// systemd-analyze (systemdtest.Backports254).
func TestShippedUnits254Verify(t *testing.T) {
	verifyUnits(t, systemdtest.Backports254(t), "254")
}

// verifyUnits runs sd's systemd-analyze verify and security on the socket
// units of systemd/units and the service units of systemd/units/sub.
func verifyUnits(t *testing.T, sd systemdtest.Systemd, sub string) {
	t.Helper()
	sa := sd.Analyze
	dir := t.TempDir()
	units, _ := filepath.Glob(filepath.Join("..", "..", "systemd", "units", "*.socket"))
	services, _ := filepath.Glob(filepath.Join("..", "..", "systemd", "units", sub, "*.service"))
	units = append(units, services...)
	if len(services) == 0 {
		t.Fatalf("no service units in systemd/units/%s", sub)
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
	out, err := sd.Command(ctx, sa, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, p := range paths {
		if !strings.HasSuffix(p, ".service") {
			continue
		}
		out, err := sd.Command(ctx, sa, "security", "--offline=yes", p).CombinedOutput()
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
