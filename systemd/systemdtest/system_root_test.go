//go:build linux

package systemdtest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBootSpec: how each kind of installation boots as the system
// manager, and the installations that cannot (paths the root hides).
func TestBootSpec(t *testing.T) {
	root := "/var/cache/x/root"
	for _, tc := range []struct {
		name string
		sd   Systemd
		want bootSpec
		err  string
	}{
		{"installed", Installed(), bootSpec{manager: SystemdPath}, ""},
		{"extracted tree", Systemd{Manager: root + "/lib/systemd/systemd", Systemctl: root + "/bin/systemctl", LibDir: root + "/usr/lib/x86_64-linux-gnu/systemd", Root: root},
			bootSpec{install: root, manager: "/lib/systemd/systemd"}, ""},
		{"manager and libraries", Systemd{Manager: "/opt/sd/systemd", Systemctl: "/opt/sd/systemctl", LibDir: "/opt/sd/lib"},
			bootSpec{manager: "/opt/sd/systemd", libDir: "/opt/sd/lib"}, ""},
		{"hidden", Systemd{Manager: "/tmp/sd/systemd", Systemctl: "systemctl"}, bootSpec{}, "hides"},
		{"hidden libraries", Systemd{Manager: "/opt/sd/systemd", LibDir: "/run/sd"}, bootSpec{}, "hides"},
		{"manager outside Root", Systemd{Manager: "/opt/sd/systemd", Root: root}, bootSpec{}, "not below"},
		{"relative manager", Systemd{Manager: "systemd"}, bootSpec{}, "absolute"},
	} {
		got, err := tc.sd.bootSpec()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: bootSpec() = %+v, %v; want an error with %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: bootSpec() = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// TestShellQuote: what shellQuote makes sh reads back unchanged.
func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "/var/cache/echod-test/systemd-254/root", "a b", "it's", `$HOME "x" \n` + "`id`"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh read back %q (%v), want %q", out, err, s)
		}
	}
}
