//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	echoload "github.com/echod/echod/cmd/echoload/load"
	"github.com/echod/echod/systemd/systemdtest"
)

// The tests in this file run the shipped unit files, byte for byte, under
// a real systemd system manager (PID 1 of fresh namespaces, see
// systemdtest.StartSystem), where the hardening applies: unlike the
// user-manager tests (systemd_test.go) nothing is switched off. The units
// listen on 127.0.0.1:7007 and %t/echod.sock = /run/echod.sock as shipped,
// in the manager's own network and mount namespaces; the clients (echoload,
// "echod status", cat) run inside them through nsenter.

// Paths inside the system manager.
const (
	sysEchoload  = "/usr/local/bin/echoload"
	sysGoodEchod = "/usr/local/lib/echod-test/echod" // a spare good build, for TestSystemManagerFailedReload
	sysControl   = "/run/echod/control.sock"         // RuntimeDirectory=echod
	sysTCP       = "127.0.0.1:7007"
	sysUnix      = "unix:/run/echod.sock"
)

var (
	echoloadOnce sync.Once
	echoloadPath string
	echoloadErr  error
)

// echoloadBin builds ./cmd/echoload once into binDir and returns its path.
func echoloadBin(t testing.TB) string {
	t.Helper()
	echoloadOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		p := filepath.Join(binDir, "echoload")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", p, "../echoload").CombinedOutput(); err != nil {
			echoloadErr = fmt.Errorf("go build ../echoload: %w\n%s", err, out)
			return
		}
		echoloadPath = p
	})
	if echoloadErr != nil {
		t.Fatal(echoloadErr)
	}
	return echoloadPath
}

// shippedSystem is a system manager running the shipped units.
type shippedSystem struct {
	*systemdtest.System
}

// bootShipped boots a system manager with every unit of systemd/units
// (*.socket, *.service) installed unchanged in /etc/systemd/system, the test build of echod at
// /usr/local/bin/echod (the path they name), a spare copy of it at
// sysGoodEchod and echoload at /usr/local/bin/echoload. Nothing is started.
func bootShipped(t testing.TB) *shippedSystem {
	t.Helper()
	return bootShippedWith(t, systemdtest.Systemd{}, "")
}

// bootShippedWith is bootShipped with the given systemd (the zero value:
// the machine's) and, as make install picks them for it, the socket units
// of systemd/units with the service units of systemd/units/sub ("254":
// those for systemd 254 and later).
func bootShippedWith(t testing.TB, sd systemdtest.Systemd, sub string) *shippedSystem {
	t.Helper()
	units := map[string]string{}
	for _, pat := range []string{"*.socket", filepath.Join(sub, "*.service")} {
		m, err := filepath.Glob(filepath.Join("..", "..", "systemd", "units", pat))
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			t.Fatalf("no shipped unit files systemd/units/%s", pat)
		}
		for _, f := range m {
			units[filepath.Base(f)] = shippedUnit(t, filepath.Join(filepath.Dir(pat), filepath.Base(f)))
		}
	}
	s := systemdtest.StartSystem(t, systemdtest.SystemConfig{
		Systemd: sd,
		Binary:  echodBin(t),
		Units:   units,
		Files: map[string]systemdtest.SystemFile{
			sysEchoload:  {Source: echoloadBin(t), Mode: 0o755},
			sysGoodEchod: {Source: echodBin(t), Mode: 0o755},
		},
	})
	return &shippedSystem{System: s}
}

func (s *shippedSystem) show(t testing.TB) map[string]string {
	t.Helper()
	return s.Show(t, "echod.service", "ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText")
}

// activate starts both socket units, checks the service is not running yet,
// makes a first connection on the TCP socket (echoed intact) and returns
// the main pid of the service it started.
func (s *shippedSystem) activate(t testing.TB) string {
	t.Helper()
	s.MustSystemctl(t, "start", "echod.socket", "echod-unix.socket")
	for _, u := range []string{"echod.socket", "echod-unix.socket"} {
		if p := s.Show(t, u, "ActiveState", "SubState"); p["SubState"] != "listening" {
			t.Fatalf("%s: %v, want listening", u, p)
		}
	}
	if p := s.show(t); p["ActiveState"] != "inactive" {
		t.Fatalf("echod.service %v before the first connection, want inactive", p)
	}
	s.echoloadOK(t, "first connection", "-addr", sysTCP, "-count", "1", "-concurrency", "1", "-size", "1000")
	p := s.WaitFor(t, 10*time.Second, "echod.service", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["MainPID"] != "0"
	}, "ActiveState", "MainPID", "TriggeredBy")
	for _, u := range []string{"echod.socket", "echod-unix.socket"} {
		if !strings.Contains(p["TriggeredBy"], u) {
			t.Errorf("TriggeredBy = %q, want %s among them", p["TriggeredBy"], u)
		}
	}
	return p["MainPID"]
}

// echoload runs echoload inside the manager with args to completion
// (bounded) and returns its report (written with -json) and its output.
func (s *shippedSystem) echoload(t testing.TB, args ...string) (*echoload.Report, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := "/run/" + systemdtest.UniqueName("echoload") + ".json"
	out, err := s.Command(ctx, sysEchoload, append(args, "-json", js)...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) { // 1: something failed, see the report
		t.Fatalf("echoload %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return s.report(t, js, out), string(out)
}

// echoloadOK is echoload that fails the test unless every operation
// succeeded.
func (s *shippedSystem) echoloadOK(t testing.TB, what string, args ...string) *echoload.Report {
	t.Helper()
	r, out := s.echoload(t, args...)
	checkReport(t, what, r, out)
	return r
}

func (s *shippedSystem) report(t testing.TB, js string, out []byte) *echoload.Report {
	t.Helper()
	var r echoload.Report
	if err := json.Unmarshal(s.ReadFile(t, js), &r); err != nil {
		t.Fatalf("echoload report %s: %v\n%s", js, err, out)
	}
	return &r
}

// checkReport fails the test unless the run passed with no failure and
// some verified echo.
func checkReport(t testing.TB, what string, r *echoload.Report, out string) {
	t.Helper()
	if !r.Pass || r.Failures.All.Total > 0 || r.Messages == 0 {
		t.Fatalf("%s: echoload pass=%v, %d failures, %d verified echoes; first failures %+v\n%s",
			what, r.Pass, r.Failures.All.Total, r.Messages, r.FirstFailures, out)
	}
}

// backgroundLoad is an echoload running inside a manager until stopped.
type backgroundLoad struct {
	s      *shippedSystem
	cmd    *exec.Cmd
	cancel context.CancelFunc
	out    bytes.Buffer // written by cmd until Wait returns
	js     string
	once   sync.Once
	err    error // of cmd.Wait
}

// startEchoload starts echoload inside the manager; stop ends it (SIGTERM:
// it finishes the operations in flight and writes its report). Cleanup
// stops it too.
func (s *shippedSystem) startEchoload(t testing.TB, args ...string) *backgroundLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	l := &backgroundLoad{s: s, cancel: cancel, js: "/run/" + systemdtest.UniqueName("echoload") + ".json"}
	l.cmd = s.Command(ctx, sysEchoload, append(args, "-json", l.js)...)
	l.cmd.Stdout = &l.out
	l.cmd.Stderr = &l.out
	if err := l.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting echoload: %v", err)
	}
	t.Cleanup(func() {
		l.cancel()
		l.wait()
	})
	return l
}

func (l *backgroundLoad) wait() {
	l.once.Do(func() {
		l.err = l.cmd.Wait()
		l.cancel()
	})
}

// stop ends the load and returns its report.
func (l *backgroundLoad) stop(t testing.TB) (*echoload.Report, string) {
	t.Helper()
	l.cancel() // Wait returns an error then, whatever the outcome: the report tells
	l.wait()
	return l.s.report(t, l.js, l.out.Bytes()), l.out.String()
}

// finish waits for the load to end by itself (after its -duration, bounded
// by the 3 minutes its command may run) and returns its report.
func (l *backgroundLoad) finish(t testing.TB) (*echoload.Report, string) {
	t.Helper()
	l.wait()
	var ee *exec.ExitError
	if l.err != nil && !(errors.As(l.err, &ee) && ee.ExitCode() == 1) { // 1: something failed, see the report
		t.Fatalf("echoload: %v\n%s", l.err, l.out.String())
	}
	return l.s.report(t, l.js, l.out.Bytes()), l.out.String()
}

// status asks the serving generation of echod.service for its status line
// over the control socket, with the client of the shipped binary.
func (s *shippedSystem) status(t testing.TB) string {
	t.Helper()
	return s.statusAt(t, sysControl)
}

// statusAt is status over the control socket at control (inside).
func (s *shippedSystem) statusAt(t testing.TB, control string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := s.Command(ctx, sysGoodEchod, "status", "-control", control, "-timeout", "10s").CombinedOutput()
	if err != nil {
		t.Fatalf("echod status: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

var connsRe = regexp.MustCompile(`, (\d+) connections`)

// waitConns polls the status line until the serving generation of
// echod.service has at least n connections.
func (s *shippedSystem) waitConns(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	s.waitConnsAt(t, sysControl, n, timeout)
}

// waitConnsAt is waitConns over the control socket at control (inside).
func (s *shippedSystem) waitConnsAt(t testing.TB, control string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.statusAt(t, control)
		if m := connsRe.FindStringSubmatch(st); m != nil {
			if c, _ := strconv.Atoi(m[1]); c >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %d connections within %v: status %q", n, timeout, st)
		}
		time.Sleep(systemdtest.PollInterval)
	}
}

// procStatus returns the fields of /proc/PID/status inside the manager.
func (s *shippedSystem) procStatus(t testing.TB, pid string) map[string]string {
	t.Helper()
	st := map[string]string{}
	for line := range strings.Lines(string(s.ReadFile(t, "/proc/"+pid+"/status"))) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// TestSystemManagerSocketActivation: the first connection on either
// shipped socket starts the service, which echoes byte for byte on both.
func TestSystemManagerSocketActivation(t *testing.T) {
	s := bootShipped(t)
	s.MustSystemctl(t, "start", "echod-unix.socket") // Wants=, not Requires=: start it alone first
	s.MustSystemctl(t, "start", "echod.socket")
	if p := s.show(t); p["ActiveState"] != "inactive" {
		t.Fatalf("echod.service %v before any connection, want inactive", p)
	}
	// The first connection comes on the Unix socket.
	s.echoloadOK(t, "first connection (unix)", "-addr", sysUnix, "-count", "1", "-concurrency", "1", "-size", "4096")
	p := s.WaitFor(t, 10*time.Second, "echod.service", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["MainPID"] != "0"
	}, "ActiveState", "SubState", "MainPID", "TriggeredBy", "StatusText")
	t.Logf("activated: %v", p)
	if !strings.Contains(p["StatusText"], "generation 1 ") || !strings.Contains(p["StatusText"], "2 listeners") {
		t.Errorf("StatusText %q, want generation 1 with 2 listeners (both sockets passed)", p["StatusText"])
	}
	for _, addr := range []string{sysTCP, sysUnix} {
		r := s.echoloadOK(t, addr, "-addr", addr, "-count", "200", "-concurrency", "2", "-size", "8192", "-streams", "2", "-duration", "30s")
		if r.Short.OK != 200 {
			t.Errorf("%s: %d short connections echoed, want 200", addr, r.Short.OK)
		}
	}
	if got := s.show(t); got["MainPID"] != p["MainPID"] || got["NRestarts"] != "0" {
		t.Errorf("after the traffic: %v, want the same MainPID %s and no restart", got, p["MainPID"])
	}
	j := s.Journal(t, "echod.service")
	for _, want := range []string{"msg=listener", "127.0.0.1:7007", "/run/echod.sock"} {
		if !strings.Contains(j, want) {
			t.Errorf("journal of echod.service lacks %q:\n%s", want, j)
		}
	}
}

// TestSystemManagerReloadUnderLoad: 20 `systemctl reload`s under load on
// both sockets, with streams open: no operation fails, every reload moves
// MainPID to the new generation, which serves. Then the watchdog (30s as
// shipped) is still fed by the last generation.
func TestSystemManagerReloadUnderLoad(t *testing.T) {
	s := bootShipped(t)
	pid := s.activate(t)
	lt := s.startEchoload(t, "-addr", sysTCP, "-concurrency", "3", "-rate", "400", "-streams", "8", "-stream-interval", "10ms", "-duration", "2m")
	lu := s.startEchoload(t, "-addr", sysUnix, "-concurrency", "1", "-rate", "100", "-streams", "2", "-stream-interval", "10ms", "-duration", "2m")
	s.waitConns(t, 10, 20*time.Second) // both loads run: their streams are connected

	begin := time.Now()
	var took []time.Duration
	for i := 1; i <= 20; i++ {
		t0 := time.Now()
		out, err := s.Systemctl(context.Background(), "reload", "echod.service")
		took = append(took, time.Since(t0))
		if err != nil {
			t.Fatalf("reload %d: %v\n%s\n%s", i, err, out, s.Journal(t, "echod.service"))
		}
		p := s.show(t)
		if p["ActiveState"] != "active" || p["MainPID"] == pid || p["NRestarts"] != "0" {
			t.Fatalf("after reload %d: %v, want active, a MainPID other than %s, no restart", i, p, pid)
		}
		pid = p["MainPID"]
		if st, want := s.status(t), fmt.Sprintf("generation %d pid %s ", i+1, pid); !strings.HasPrefix(st, want) {
			t.Fatalf("after reload %d: the serving generation says %q, want %q…", i, st, want)
		}
	}
	t.Logf("20 reloads under load in %v; systemctl reload %s", time.Since(begin).Round(time.Millisecond), durations(took))
	rt, outT := lt.stop(t)
	ru, outU := lu.stop(t)
	checkReport(t, "tcp load", rt, outT)
	checkReport(t, "unix load", ru, outU)
	t.Logf("tcp: %d short ok, %d stream echoes; unix: %d short ok, %d stream echoes; 0 failed",
		rt.Short.OK, rt.Streams.Messages, ru.Short.OK, ru.Streams.Messages)
	if rt.Short.OK == 0 || ru.Short.OK == 0 || rt.Streams.Messages == 0 || ru.Streams.Messages == 0 {
		t.Fatalf("some load did not run: tcp %+v %+v, unix %+v %+v", rt.Short, rt.Streams, ru.Short, ru.Streams)
	}

	// The watchdog: the next WATCHDOG=1 (every 15s with WatchdogSec=30s)
	// comes from the last generation, which systemd then still supervises.
	w0 := s.Show(t, "echod.service", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
	p := s.WaitFor(t, 25*time.Second, "echod.service", func(p map[string]string) bool {
		return after(p["WatchdogTimestampMonotonic"], w0)
	}, "WatchdogTimestampMonotonic", "ActiveState", "MainPID", "NRestarts", "WatchdogUSec")
	if p["ActiveState"] != "active" || p["MainPID"] != pid || p["NRestarts"] != "0" || p["WatchdogUSec"] != "30s" {
		t.Fatalf("after a watchdog ping: %v, want active, MainPID %s, no restart, WatchdogUSec=30s", p, pid)
	}
}

// durations summarises how long each of ds took: median and max.
func durations(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return "none"
	}
	return fmt.Sprintf("median %v, max %v (%d)", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

// after reports whether the decimal a is greater than b.
func after(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x > y
}

// brokenEchod is a broken build of echod for /usr/local/bin/echod: it runs
// the client commands (ExecReload= and ExecStop= are "echod reload" or
// "echod reload-status" and "echod stop") with a good binary; as a daemon,
// it exits 1 at once.
const brokenEchod = `#!/bin/sh
case "$1" in reload|reload-status|status|stop) exec ` + sysGoodEchod + ` "$@" ;; esac
echo "echod: broken build (test)" >&2
exit 1
`

// TestSystemManagerFailedReload: with a broken build at
// /usr/local/bin/echod, `systemctl reload` fails and says why (in the
// journal and StatusText), the unit stays active with the same MainPID and
// still echoes; once the build is repaired, reload works again. The broken
// build still answers "echod reload|status|stop" (ExecReload= and ExecStop=
// run /usr/local/bin/echod too), so what fails is the daemon's upgrade,
// not the client: a build that exits 1 for everything would only show that
// systemd reports a failing ExecReload=.
func TestSystemManagerFailedReload(t *testing.T) {
	s := bootShipped(t)
	pid := s.activate(t)
	s.WriteFile(t, systemdtest.SystemBinary, []byte(brokenEchod), 0o755)
	out, err := s.Systemctl(context.Background(), "reload", "echod.service")
	if err == nil {
		t.Fatalf("systemctl reload with a broken binary succeeded:\n%s", out)
	}
	t.Logf("systemctl reload: %v", err)
	if !strings.Contains(out, "failed") {
		t.Errorf("systemctl reload does not say it failed: %q", out)
	}
	p := s.show(t)
	if p["ActiveState"] != "active" || p["MainPID"] != pid || p["NRestarts"] != "0" {
		t.Fatalf("after the failed reload: %v, want active with MainPID %s", p, pid)
	}
	if !strings.Contains(p["StatusText"], "last reload failed") {
		t.Errorf("StatusText %q does not report the failed reload", p["StatusText"])
	}
	j := s.Journal(t, "echod.service")
	for _, want := range []string{"echod: broken build (test)", "upgrade failed", "echod reload: "} {
		if !strings.Contains(j, want) {
			t.Errorf("journal of echod.service lacks %q (the reason):\n%s", want, j)
		}
	}
	s.echoloadOK(t, "after the failed reload", "-addr", sysTCP, "-count", "50", "-concurrency", "2", "-duration", "30s")
	s.echoloadOK(t, "after the failed reload", "-addr", sysUnix, "-count", "50", "-concurrency", "2", "-duration", "30s")

	good, err := os.ReadFile(echodBin(t))
	if err != nil {
		t.Fatal(err)
	}
	s.WriteFile(t, systemdtest.SystemBinary, good, 0o755)
	s.MustSystemctl(t, "reload", "echod.service")
	if p := s.show(t); p["ActiveState"] != "active" || p["MainPID"] == pid || strings.Contains(p["StatusText"], "failed") {
		t.Fatalf("after the repaired reload: %v, want active with a new MainPID", p)
	}
	s.echoloadOK(t, "after the repaired reload", "-addr", sysTCP, "-count", "50", "-concurrency", "2", "-duration", "30s")
}

// TestSystemManagerStopDrains: after a reload (the main pid is then a
// process systemd did not start), `systemctl stop` serves the open
// connections to their end, returns once they closed, with Result=success
// and no echod process left.
func TestSystemManagerStopDrains(t *testing.T) {
	s := bootShipped(t)
	pid := s.activate(t)
	s.MustSystemctl(t, "reload", "echod.service")
	if p := s.show(t); p["MainPID"] == pid {
		t.Fatalf("reload left MainPID at %s", pid)
	}
	// 4 connections, each echoes once, is held 5s, echoes again.
	hold := s.startEchoload(t, "-addr", sysTCP, "-hold", "4", "-concurrency", "4", "-duration", "5s")
	s.waitConns(t, 4, 20*time.Second)

	stopped := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := s.Systemctl(context.Background(), "stop", "echod.service") // bounded: SystemctlTimeout
		stopped <- err
	}()
	t.Cleanup(wg.Wait)
	s.WaitFor(t, 10*time.Second, "echod.service", func(p map[string]string) bool {
		return p["ActiveState"] == "deactivating"
	}, "ActiveState")
	select {
	case err := <-stopped:
		t.Fatalf("stop returned while 4 connections were open (err %v)", err)
	default:
	}
	r, out := hold.finish(t) // after the hold: the second echoes came while stopping
	checkReport(t, "held connections", r, out)
	if r.Hold == nil || r.Hold.StillEchoing != 4 {
		t.Fatalf("hold report %+v, want 4 connections still echoing while stopping\n%s", r.Hold, out)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("systemctl stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("systemctl stop did not return within 30s of the last connection closing\n%s", s.Journal(t, "echod.service"))
	}
	if p := s.show(t); p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Fatalf("after stop: %v, want inactive, Result=success\n%s", p, s.Journal(t, "echod.service"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := s.Command(ctx, "pgrep", "-a", "-x", "echod").CombinedOutput(); err == nil {
		t.Fatalf("echod processes left after stop:\n%s", out)
	}
	j := s.Journal(t, "echod.service")
	if !strings.Contains(j, "msg=drained") || !strings.Contains(j, "msg=exiting gen=2") {
		t.Errorf("journal of echod.service: generation 2 did not drain and exit by itself:\n%s", j)
	}
	// The sockets belong to systemd: still listening, they would start it
	// again.
	if p := s.Show(t, "echod.socket", "SubState"); p["SubState"] != "listening" {
		t.Errorf("echod.socket after the service stopped: %v, want listening", p)
	}
}

// TestSystemManagerRestartAfterKill: SIGKILL of the main pid restarts the
// service (Restart=on-failure), which serves again.
func TestSystemManagerRestartAfterKill(t *testing.T) {
	s := bootShipped(t)
	pid := s.activate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := s.Command(ctx, "kill", "-KILL", pid).CombinedOutput(); err != nil {
		t.Fatalf("kill -KILL %s: %v\n%s", pid, err, out)
	}
	p := s.WaitFor(t, 15*time.Second, "echod.service", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["NRestarts"] == "1" && p["MainPID"] != "0"
	}, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")
	if p["MainPID"] == pid {
		t.Fatalf("restarted with the killed MainPID %s: %v", pid, p)
	}
	s.echoloadOK(t, "after the restart", "-addr", sysTCP, "-count", "50", "-concurrency", "2", "-duration", "30s")
	s.echoloadOK(t, "after the restart", "-addr", sysUnix, "-count", "50", "-concurrency", "2", "-duration", "30s")
	if j := s.Journal(t, "echod.service"); !strings.Contains(j, "status=9/KILL") {
		t.Errorf("journal of echod.service does not record the SIGKILL:\n%s", j)
	}
}

// TestSystemManagerSandbox: the hardening of the shipped unit is really
// applied, to the first generation and to the one a reload starts: a
// dynamic user, no capabilities, no_new_privs, a seccomp filter, and a
// read-only root.
func TestSystemManagerSandbox(t *testing.T) {
	s := bootShipped(t)
	s.checkSandbox(t)
}

// checkSandbox activates echod.service and checks that the hardening of
// the unit is applied to the first generation and to the one a reload
// starts (see TestSystemManagerSandbox); they then echo.
func (s *shippedSystem) checkSandbox(t testing.TB) {
	t.Helper()
	pid := s.activate(t)
	for i := range 2 {
		if i > 0 {
			s.MustSystemctl(t, "reload", "echod.service")
			if pid == s.show(t)["MainPID"] {
				t.Fatalf("reload left MainPID at %s", pid)
			}
			pid = s.show(t)["MainPID"]
		}
		st := s.procStatus(t, pid)
		t.Logf("generation %d (pid %s): Uid %s, CapEff %s, NoNewPrivs %s, Seccomp %s", i+1, pid, st["Uid"], st["CapEff"], st["NoNewPrivs"], st["Seccomp"])
		uid := strings.Fields(st["Uid"])
		if len(uid) != 4 {
			t.Fatalf("pid %s: Uid %q", pid, st["Uid"])
		}
		for _, u := range uid { // real, effective, saved, fs
			if n, err := strconv.Atoi(u); err != nil || n < 61184 || n > 65519 { // systemd's dynamic range
				t.Errorf("generation %d: Uid %q, want a dynamic user (61184–65519)", i+1, st["Uid"])
				break
			}
		}
		for k, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
			if st[k] != want {
				t.Errorf("generation %d: %s %q, want %q", i+1, k, st[k], want)
			}
		}
		// In the service's mount namespace, even root cannot write
		// to / (ProtectSystem=strict).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := s.Command(ctx, "nsenter", "--target", pid, "--mount", "--", "touch", "/usr/local/bin/echod-probe").CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "Read-only file system") {
			t.Errorf("generation %d: writing to / in its mount namespace: %v %s, want Read-only file system", i+1, err, out)
		}
		var root string // the last mount on /, the one the service sees
		for line := range strings.Lines(string(s.ReadFile(t, "/proc/"+pid+"/mountinfo"))) {
			if f := strings.Fields(line); len(f) > 5 && f[4] == "/" {
				root = line
			}
		}
		if f := strings.Fields(root); len(f) < 6 || !slices.Contains(strings.Split(f[5], ","), "ro") {
			t.Errorf("generation %d: / is not mounted read-only: %q", i+1, root)
		}
	}
	s.echoloadOK(t, "sandboxed", "-addr", sysTCP, "-count", "20", "-concurrency", "2", "-duration", "30s")
}

// TestSystemManagerFDStoreRestart: echod-fdstore.service as shipped (echod
// binds 127.0.0.1:7007 itself and keeps its listener and, at a stop, its
// connections in systemd's fd store), sandboxed: three `systemctl
// restart`s under load with streams open fail nothing, and the store holds
// the listener across them.
func TestSystemManagerFDStoreRestart(t *testing.T) {
	s := bootShipped(t)
	s.MustSystemctl(t, "start", "echod-fdstore.service")
	p := s.Show(t, "echod-fdstore.service", "ActiveState", "MainPID", "NFileDescriptorStore")
	if p["ActiveState"] != "active" || p["NFileDescriptorStore"] == "0" {
		t.Fatalf("after start: %v, want active with its listener in the fd store\n%s", p, s.Journal(t, "echod-fdstore.service"))
	}
	pid := p["MainPID"]
	l := s.startEchoload(t, "-addr", sysTCP, "-concurrency", "2", "-rate", "200", "-streams", "8", "-stream-interval", "10ms", "-duration", "2m")
	for i := 1; i <= 3; i++ {
		s.MustSystemctl(t, "restart", "echod-fdstore.service")
		p := s.Show(t, "echod-fdstore.service", "ActiveState", "MainPID", "NRestarts", "NFileDescriptorStore")
		if p["ActiveState"] != "active" || p["MainPID"] == pid || p["NFileDescriptorStore"] == "0" {
			t.Fatalf("after restart %d: %v, want active with a new MainPID and a non-empty fd store\n%s", i, p, s.Journal(t, "echod-fdstore.service"))
		}
		pid = p["MainPID"]
	}
	r, out := l.stop(t)
	checkReport(t, "load across restarts", r, out)
	if r.Streams.Failed > 0 || r.Streams.Connections != 8 {
		t.Fatalf("streams %+v, want 8 connections served across every restart, none failed", r.Streams)
	}
	t.Logf("3 restarts: %d short ok, %d stream echoes on 8 connections, 0 failed", r.Short.OK, r.Streams.Messages)
	if j := s.Journal(t, "echod-fdstore.service"); !strings.Contains(j, "restored=true") {
		t.Errorf("no listener restored from the fd store in the journal:\n%s", j)
	}
}
