package systemdtest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/systemd/systemdtest"
)

// testReload is what a test of a daemon under systemd looks like; in real
// code it is a func TestXxx(t *testing.T) in the daemon's package.
func testReload(t *testing.T) {
	m := systemdtest.Start(t) // skips when no real systemd can be booted here
	unit := systemdtest.UniqueName("echod") + ".service"
	m.Install(t, unit, `[Service]
Type=notify
ExecStart=/usr/local/bin/echod
ExecReload=/bin/kill -HUP $MAINPID
StandardOutput=append:`+m.RuntimeDir()+`/echod.log
`)
	// Tests that restart the unit often lift the start rate limit.
	m.DropIn(t, unit, "ratelimit", "[Unit]\nStartLimitIntervalSec=0\n")

	m.MustSystemctl(t, "start", unit)
	before := m.Show(t, unit, "MainPID")["MainPID"]
	m.MustSystemctl(t, "reload", unit)
	after := m.WaitFor(t, 10*time.Second, unit, func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running"
	}, "ActiveState", "SubState", "MainPID", "StatusText")
	if after["MainPID"] != before {
		t.Errorf("reload changed MainPID from %s to %s", before, after["MainPID"])
	}
	if strings.Contains(after["StatusText"], "error") {
		t.Errorf("status after reload: %s", after["StatusText"])
	}
	// No need to stop anything: cleanup stops the manager, which stops its
	// units, and removes m.RuntimeDir().
}

// Example shows the shape of a test using the harness (see testReload in
// this file). It needs a real manager and root, so it has no output check.
func Example() {
	_ = testReload
}
