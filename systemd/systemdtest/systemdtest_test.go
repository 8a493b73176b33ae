package systemdtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/echod/echod/systemd/systemdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func active(p map[string]string) bool   { return p["ActiveState"] == "active" }
func inactive(p map[string]string) bool { return p["ActiveState"] == "inactive" }

func mainPID(t testing.TB, p map[string]string) int {
	t.Helper()
	pid, err := strconv.Atoi(p["MainPID"])
	if err != nil {
		t.Fatalf("MainPID %q: %v", p["MainPID"], err)
	}
	return pid
}

// TestNotifyService starts a Type=notify service that reports readiness with
// systemd-notify, checks it is active with a main PID, stops it and checks
// it is inactive.
func TestNotifyService(t *testing.T) {
	t.Parallel()
	m := systemdtest.Start(t)
	unit := systemdtest.UniqueName("echod-notify") + ".service"

	content := "[Service]\nType=notify\nNotifyAccess=all\n" +
		"ExecStart=/bin/sh -c 'systemd-notify --ready --status=up; exec sleep 60'\n"
	wantStatus := "up"
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		t.Logf("systemd-notify not found (%v); using Type=simple", err)
		content = "[Service]\nType=simple\nExecStart=/bin/sleep 60\n"
		wantStatus = ""
	}
	m.Install(t, unit, content)
	if p := m.Show(t, unit, "LoadState"); p["LoadState"] != "loaded" {
		t.Fatalf("LoadState = %q, want loaded\n%s", p["LoadState"], m.Log())
	}

	start := time.Now()
	m.MustSystemctl(t, "start", unit) // for Type=notify, returns once READY=1 arrived
	t.Logf("start %s took %v", unit, time.Since(start))

	p := m.Show(t, unit, "ActiveState", "SubState", "MainPID", "StatusText")
	if p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Fatalf("after start: ActiveState=%q SubState=%q, want active/running\n%s", p["ActiveState"], p["SubState"], m.Log())
	}
	if pid := mainPID(t, p); pid <= 0 {
		t.Fatalf("MainPID = %d, want > 0", pid)
	}
	if p["StatusText"] != wantStatus {
		t.Errorf("StatusText = %q, want %q", p["StatusText"], wantStatus)
	}

	t.Run("WaitForTimesOut", func(t *testing.T) {
		// A condition that never holds must end in t.Fatal, within about
		// the timeout, reporting the last values seen.
		const timeout = 300 * time.Millisecond
		ft := &fatalTB{TB: t}
		begin := time.Now()
		ft.run(func() {
			m.WaitFor(ft, timeout, unit, func(map[string]string) bool { return false }, "ActiveState")
		})
		took := time.Since(begin)
		if !ft.failed {
			t.Fatal("WaitFor returned although the condition never held")
		}
		if took < timeout || took > timeout+5*time.Second {
			t.Errorf("WaitFor gave up after %v, want about %v", took, timeout)
		}
		if !strings.Contains(ft.msg, `ActiveState="active"`) {
			t.Errorf("failure message lacks the last values:\n%s", ft.msg)
		}
	})

	m.MustSystemctl(t, "stop", unit)
	if p := m.Show(t, unit, "ActiveState", "MainPID"); !inactive(p) || p["MainPID"] != "0" {
		t.Fatalf("after stop: %v, want ActiveState=inactive MainPID=0", p)
	}
}

// TestSocketActivation checks that a connection to a socket unit starts the
// matching service with the listening socket passed as LISTEN_FDS=1 named
// "web".
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	m := systemdtest.Start(t)
	name := systemdtest.UniqueName("echod-sock")
	port := freePort(t)
	out := filepath.Join(m.RuntimeDir(), name+".out")

	m.Install(t, name+".socket", fmt.Sprintf(
		"[Socket]\nListenStream=127.0.0.1:%d\nAccept=no\nFileDescriptorName=web\n", port))
	// $$ keeps systemd from expanding the variables itself.
	m.Install(t, name+".service", fmt.Sprintf(
		"[Service]\nExecStart=/bin/sh -c 'echo \"$$LISTEN_FDS $$LISTEN_FDNAMES\" > %s; exec sleep 60'\n", out))

	m.MustSystemctl(t, "start", name+".socket")
	m.WaitFor(t, 10*time.Second, name+".socket", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "listening"
	}, "ActiveState", "SubState")
	if p := m.Show(t, name+".service", "ActiveState"); !inactive(p) {
		t.Fatalf("service %v before any connection, want inactive", p)
	}

	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to the socket unit: %v\n%s", err, m.Log())
	}
	defer conn.Close()

	p := m.WaitFor(t, 10*time.Second, name+".service", func(p map[string]string) bool {
		return active(p) && p["MainPID"] != "0"
	}, "ActiveState", "SubState", "MainPID", "TriggeredBy")
	if !strings.Contains(p["TriggeredBy"], name+".socket") {
		t.Errorf("TriggeredBy = %q, want %s.socket", p["TriggeredBy"], name)
	}

	// The service is active as soon as sh is forked; its output follows.
	var got string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(out)
		got = string(b)
		if err == nil && strings.HasSuffix(got, "\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(systemdtest.PollInterval)
	}
	if got != "1 web\n" {
		t.Fatalf("service saw LISTEN_FDS/LISTEN_FDNAMES %q, want %q", got, "1 web\n")
	}

	conn.Close()
	// Stop both in one job: stopping only the service would let the
	// still-listening socket start it again.
	m.MustSystemctl(t, "stop", name+".socket", name+".service")
	for _, u := range []string{name + ".socket", name + ".service"} {
		if p := m.Show(t, u, "ActiveState"); !inactive(p) {
			t.Errorf("%s after stop: %v, want inactive", u, p)
		}
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after the socket unit was stopped", port)
	}
}

// TestCleanup checks that the cleanup registered by Start stops the manager
// and the services it ran and removes the runtime directory.
func TestCleanup(t *testing.T) {
	t.Parallel()
	var mgrPID, svcPID int
	var rt string
	t.Run("manager", func(t *testing.T) {
		m := systemdtest.Start(t)
		mgrPID, rt = m.PID(), m.RuntimeDir()
		unit := systemdtest.UniqueName("echod-cleanup") + ".service"
		m.Install(t, unit, "[Service]\nExecStart=/bin/sleep 600\n")
		m.MustSystemctl(t, "start", unit)
		p := m.WaitFor(t, 10*time.Second, unit, func(p map[string]string) bool {
			return active(p) && p["MainPID"] != "0"
		}, "ActiveState", "MainPID")
		svcPID = mainPID(t, p)
		// The unit runs in the manager's private cgroup tree, not in a
		// /app.slice shared with other managers.
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", svcPID))
		if err != nil {
			t.Fatal(err)
		}
		if want := "/" + filepath.Base(rt) + "/app.slice/" + unit; !strings.Contains(string(cg), want) {
			t.Errorf("service cgroups:\n%s\nwant them below %s", cg, want)
		}
		if err := syscall.Kill(mgrPID, 0); err != nil {
			t.Fatalf("manager pid %d not alive while in use: %v", mgrPID, err)
		}
		// Cleanup runs when this subtest returns.
	})
	if mgrPID == 0 || svcPID == 0 {
		if t.Failed() {
			return
		}
		t.Skip("no manager was started")
	}
	waitGone(t, "manager", mgrPID)
	waitGone(t, "service", svcPID)
	if _, err := os.Stat(rt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runtime dir %s still there after cleanup (stat: %v)", rt, err)
	}
}

// TestStop checks that Stop is idempotent and ends the manager promptly.
func TestStop(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	m := systemdtest.Start(t)
	t.Logf("boot took %v", time.Since(begin))
	begin = time.Now()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop took %v", time.Since(begin))
	if err := m.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	waitGone(t, "manager", m.PID())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := m.Systemctl(ctx, "show", "-p", "SystemState"); err == nil {
		t.Errorf("systemctl still answers after Stop: %q", out)
	}
}

// TestLog checks that the manager's own messages (which it writes to
// /dev/console) end up in Log, and that the distribution's default user
// units are not started.
func TestLog(t *testing.T) {
	t.Parallel()
	m := systemdtest.Start(t)
	unit := systemdtest.UniqueName("echod-fail") + ".service"
	m.Install(t, unit, "[Service]\nType=oneshot\nExecStart=/bin/false\n")
	if out, err := m.Systemctl(context.Background(), "start", unit); err == nil {
		t.Fatalf("starting a service running /bin/false succeeded: %s", out)
	}
	want := unit + ": Main process exited, code=exited, status=1/FAILURE"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.Log(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("manager log lacks %q:\n%s", want, m.Log())
		}
		time.Sleep(systemdtest.PollInterval)
	}
	if p := m.Show(t, "dbus.socket", "ActiveState"); p["ActiveState"] != "inactive" {
		t.Errorf("dbus.socket is %q, want inactive (default units must not run)", p["ActiveState"])
	}
}

func TestUniqueName(t *testing.T) {
	a, b := systemdtest.UniqueName("echod"), systemdtest.UniqueName("echod")
	if a == b {
		t.Fatalf("UniqueName returned %q twice", a)
	}
	if !strings.HasPrefix(a, "echod-") || len(a) != len("echod-")+16 {
		t.Fatalf("UniqueName = %q, want echod- followed by 16 hex digits", a)
	}
}

func TestParseShow(t *testing.T) {
	got := systemdtest.ParseShow("MainPID=42\nExecStart={ path=/bin/sh ; argv[]=/bin/sh -c a=b }\nStatusText=\nnoise\n")
	want := map[string]string{
		"MainPID":    "42",
		"ExecStart":  "{ path=/bin/sh ; argv[]=/bin/sh -c a=b }",
		"StatusText": "",
	}
	if len(got) != len(want) {
		t.Fatalf("ParseShow = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("ParseShow[%q] = %q, want %q", k, got[k], v)
		}
	}
}

// waitGone waits (bounded) until pid no longer exists, or exists only as a
// zombie that is not ours to reap.
func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s pid %d still exists after cleanup (kill 0: %v, state %s)", what, pid, err, procState(pid))
			return
		}
		time.Sleep(systemdtest.PollInterval)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return s
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fatalTB records a Fatal instead of failing the real test.
type fatalTB struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msg    string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

// run calls fn in its own goroutine, so that Fatal can end it.
func (f *fatalTB) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}
