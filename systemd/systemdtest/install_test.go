package systemdtest_test

import (
	"strings"
	"testing"

	"github.com/echod/echod/systemd/systemdtest"
)

// TestStartWith254: a systemd 254 user manager (Debian's backports,
// extracted) boots, answers its own systemctl with its version, and runs a
// Type=notify-reload service, which exists only from 253 on.
func TestStartWith254(t *testing.T) {
	t.Parallel()
	sd := systemdtest.Backports254(t)
	if sd.Version != 254 {
		t.Fatalf("Version = %d, want 254", sd.Version)
	}
	m := systemdtest.StartWith(t, sd)
	if v := systemdtest.ParseShow(m.MustSystemctl(t, "show", "-p", "Version"))["Version"]; !strings.HasPrefix(v, "254") {
		t.Fatalf("the manager's Version = %q, want 254…", v)
	}
	unit := systemdtest.UniqueName("reload254") + ".service"
	m.Install(t, unit, "[Service]\nType=notify-reload\nExecStart=/bin/sleep 60\n")
	if p := m.Show(t, unit, "LoadState", "Type"); p["LoadState"] != "loaded" || p["Type"] != "notify-reload" {
		t.Fatalf("notify-reload unit: %v, want loaded with Type=notify-reload\n%s", p, m.Log())
	}
}
