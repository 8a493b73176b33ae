//go:build linux

package systemdtest_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/systemd/systemdtest"
)

// TestSystemManager boots a system manager with a sandboxed service the
// user manager cannot run (DynamicUser=, PrivateTmp=, ProtectSystem=),
// starts and stops it, and checks that Stop powers the manager off and
// removes its cgroups.
func TestSystemManager(t *testing.T) {
	var s *systemdtest.System
	t.Run("boot", func(t *testing.T) {
		s = systemdtest.StartSystem(t, systemdtest.SystemConfig{
			Units: map[string]string{
				"sdtest.service": "[Service]\nType=exec\nExecStart=/bin/sleep 600\n" +
					"DynamicUser=yes\nPrivateTmp=yes\nProtectSystem=strict\nPrivateDevices=yes\nNoNewPrivileges=yes\n",
			},
			Files: map[string]systemdtest.SystemFile{
				"/etc/sdtest/hello": {Data: []byte("hello\n")},
			},
		})
		if got := strings.TrimSpace(readProcFile(t, s.PID(), "comm")); got != "systemd" {
			t.Fatalf("manager pid %d runs %q, want systemd", s.PID(), got)
		}
		if got := string(s.ReadFile(t, "/etc/sdtest/hello")); got != "hello\n" {
			t.Errorf("payload file: %q, want %q", got, "hello\n")
		}
		if _, err := os.Stat("/etc/sdtest"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the payload reached the machine's root: stat /etc/sdtest: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := s.Command(ctx, "hostname").Output(); err != nil || strings.TrimSpace(string(out)) != s.Name() {
			t.Errorf("hostname inside: %q (%v), want %q", out, err, s.Name())
		}
		for _, cg := range s.Cgroups() {
			if _, err := os.Stat(cg); err != nil {
				t.Errorf("manager cgroup: %v", err)
			}
		}
		if out, err := s.Command(ctx, "pwd").Output(); err != nil || string(out) != "/\n" {
			t.Errorf("working directory inside: %q (%v), want /", out, err)
		}

		// Cancelling a command ends the program inside, not only nsenter.
		sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer scancel()
		begin := time.Now()
		err := s.Command(sctx, "sleep", "601").Run()
		if took := time.Since(begin); err == nil || took > 5*time.Second {
			t.Errorf("cancelled sleep 601 inside: err %v after %v, want an error at about 300ms", err, took)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(systemdtest.PollInterval) {
			out, err := s.Command(ctx, "pgrep", "-f", "sleep 601").CombinedOutput()
			if err != nil && len(out) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the cancelled sleep 601 still runs inside: %s", out)
				break
			}
		}

		s.MustSystemctl(t, "start", "sdtest.service")
		p := s.WaitFor(t, 10*time.Second, "sdtest.service", func(p map[string]string) bool {
			return active(p) && p["MainPID"] != "0"
		}, "ActiveState", "SubState", "MainPID")
		// The sandbox is applied: a dynamic user (61184–65519).
		status := string(s.ReadFile(t, "/proc/"+p["MainPID"]+"/status"))
		m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindStringSubmatch(status)
		if m == nil || m[1] < "61184" || m[1] > "65519" || len(m[1]) != 5 {
			t.Errorf("service runs as %q, want a dynamic user (61184–65519)\n%s", m, status)
		} else {
			t.Logf("sdtest.service runs as uid %s", m[1])
		}
		if !strings.Contains(s.Journal(t, "sdtest.service"), "Started sdtest.service") {
			t.Errorf("journal of sdtest.service lacks its start:\n%s", s.Journal(t, ""))
		}

		s.MustSystemctl(t, "stop", "sdtest.service")
		if p := s.Show(t, "sdtest.service", "ActiveState", "Result"); !inactive(p) || p["Result"] != "success" {
			t.Errorf("after stop: %v, want inactive, success", p)
		}
	})
	if t.Failed() {
		return
	}
	if s == nil {
		t.Skip("no system manager could be booted")
	}
	// The subtest's cleanup powered the manager off.
	waitGone(t, "manager", s.PID())
	for _, cg := range s.Cgroups() {
		if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still there after Stop (stat: %v)", cg, err)
		}
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := s.Systemctl(ctx, "is-system-running"); err == nil {
		t.Errorf("systemctl still answers after Stop: %q", out)
	}
}

func readProcFile(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
