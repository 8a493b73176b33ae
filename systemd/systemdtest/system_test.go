//go:build linux

package systemdtest_test

import (
	"context"
	"errors"
	"io"
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
				// An echo service on the manager's loopback, for Dial.
				"sdecho.socket":   "[Socket]\nListenStream=127.0.0.1:7007\nAccept=yes\n",
				"sdecho@.service": "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n",
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

		// Dial reaches the manager's loopback from the test process.
		s.MustSystemctl(t, "start", "sdecho.socket")
		c, err := s.Dial(ctx, "tcp", "127.0.0.1:7007")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 6)
		if _, err := c.Write([]byte("hello\n")); err != nil {
			t.Errorf("writing to the manager's echo service: %v", err)
		} else if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello\n" {
			t.Errorf("echo through Dial: %q, %v; want %q", buf, err, "hello\n")
		}
		c.Close()
		if _, err := s.Dial(ctx, "tcp", "localhost:7007"); err == nil {
			t.Errorf("Dial accepted a host name")
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

// TestSystemManager254: systemd 254 (Debian's backports, extracted; see
// Backports254) boots as the system manager, its tree installed in the
// root over the machine's systemd: PID 1, systemctl, journald and the
// helpers are 254's, a Type=notify-reload unit (253 and later) loads and
// runs sandboxed, the journal is read (with 254's journalctl), and Stop
// powers it off cleanly (with 254's systemd-shutdown).
func TestSystemManager254(t *testing.T) {
	sd := systemdtest.Backports254(t)
	s := systemdtest.StartSystem(t, systemdtest.SystemConfig{
		Systemd: sd,
		Units: map[string]string{
			"sdtest.service": "[Service]\nType=notify-reload\nNotifyAccess=all\n" +
				"ExecStart=/bin/sh -c 'systemd-notify --ready && exec sleep 600'\n" +
				"DynamicUser=yes\nPrivateTmp=yes\nProtectSystem=strict\n",
		},
	})
	if got := s.Systemd(); got.Root != sd.Root {
		t.Errorf("System.Systemd() = %+v, want %+v", got, sd)
	}
	if v := systemdtest.ParseShow(s.MustSystemctl(t, "show", "-p", "Version"))["Version"]; !strings.HasPrefix(v, "254") {
		t.Fatalf("the manager's Version = %q, want 254…", v)
	}
	if out := s.MustSystemctl(t, "--version"); !strings.HasPrefix(out, "systemd 254 ") {
		t.Errorf("systemctl --version inside: %q, want systemd 254", out)
	}
	// The manager's helpers inside are 254's: journald runs the binary
	// of the tree, installed at /lib/systemd.
	p := s.WaitFor(t, 10*time.Second, "systemd-journald.service", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["MainPID"] != "0"
	}, "ActiveState", "MainPID")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range [][]string{
		{"cmp", sd.Root + "/lib/systemd/systemd-journald", "/proc/" + p["MainPID"] + "/exe"},
		{"cmp", sd.Root + "/lib/systemd/systemd-shutdown", "/lib/systemd/systemd-shutdown"},
		{"cmp", sd.Root + "/lib/systemd/systemd", "/proc/1/exe"},
	} {
		if out, err := s.Command(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s inside: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	s.MustSystemctl(t, "start", "sdtest.service")
	if p := s.Show(t, "sdtest.service", "ActiveState", "Type"); p["ActiveState"] != "active" || p["Type"] != "notify-reload" {
		t.Errorf("sdtest.service: %v, want active, Type=notify-reload", p)
	}
	if j := s.Journal(t, "sdtest.service"); !strings.Contains(j, "Started sdtest.service") {
		t.Errorf("journal of sdtest.service lacks its start:\n%s", s.Journal(t, ""))
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}
