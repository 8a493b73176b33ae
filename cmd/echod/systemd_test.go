package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/handoff/control"

	"github.com/echod/echod/systemd/systemdtest"
)

// unitUnderTest is the shipped echod units installed in a throwaway user
// manager under unique names, on a free port, running a test binary.
type unitUnderTest struct {
	m       *systemdtest.Manager
	name    string // service name without .service
	bin     string // the binary ExecStart= and ExecReload= run
	tcp     string // 127.0.0.1:port of the .socket unit
	unix    string // path of the -unix.socket unit
	config  string // the -config file ExecStart= names
	logFile string // the service's stdout and stderr
}

func (u *unitUnderTest) service() string { return u.name + ".service" }
func (u *unitUnderTest) control() string {
	return filepath.Join(u.m.RuntimeDir(), u.name, "control.sock")
}

// freePort returns a free TCP port on 127.0.0.1 for a unit file to bind
// later. It is taken below the kernel's ephemeral range (read from
// /proc/sys/net/ipv4/ip_local_port_range), so that the outgoing
// connections of load tests running meanwhile cannot take it.
func freePort(t testing.TB) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 2048 {
				low = v
			}
		}
	}
	for range 100 {
		port := 1024 + mrand.IntN(low-1024)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// newUnitUnderTest prepares what every unit test needs: a unique unit
// name, a copy of the test binary, an empty config file and a log file.
func newUnitUnderTest(t testing.TB, m *systemdtest.Manager, prefix string) *unitUnderTest {
	t.Helper()
	dir := t.TempDir()
	u := &unitUnderTest{
		m:       m,
		name:    systemdtest.UniqueName(prefix),
		bin:     filepath.Join(dir, "echod"),
		config:  filepath.Join(dir, "echod.toml"),
		logFile: filepath.Join(dir, "echod.log"),
	}
	good, err := os.ReadFile(echodBin(t))
	if err != nil {
		t.Fatal(err)
	}
	writeExec(t, u.bin, good)
	if err := os.WriteFile(u.config, []byte("# empty: defaults\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return u
}

// shippedUnit returns the content of systemd/units/name.
func shippedUnit(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "systemd", "units", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// installShippedUnits copies systemd/units/* into the manager with unique
// names, the test binary, a free port and a log file. The only other
// change is the sandbox drop-in below.
func installShippedUnits(t testing.TB, m *systemdtest.Manager, extra string) *unitUnderTest {
	t.Helper()
	return installShippedUnitsFrom(t, m, "", extra)
}

// installShippedUnitsFrom is installShippedUnits with the service unit of
// systemd/units/dir (dir "254": the units for systemd 254 and later).
func installShippedUnitsFrom(t testing.TB, m *systemdtest.Manager, dir, extra string) *unitUnderTest {
	t.Helper()
	u := newUnitUnderTest(t, m, "echod")
	u.tcp = freePort(t)
	u.unix = filepath.Join(m.RuntimeDir(), u.name+".sock")
	rename := strings.NewReplacer(
		"/usr/local/bin/echod", "@BIN@",
		"echod-unix.socket", u.name+"-unix.socket",
		"echod.socket", u.name+".socket",
		"echod.service", u.name+".service",
		"RuntimeDirectory=echod", "RuntimeDirectory="+u.name,
		"%t/echod.sock", "%t/"+u.name+".sock",
		"127.0.0.1:7007", u.tcp,
		"-drain-timeout 30s", "-drain-timeout 30s -config "+u.config+extra,
	)
	for _, f := range []string{"echod.socket", "echod-unix.socket", "echod.service"} {
		src := f
		if strings.HasSuffix(f, ".service") {
			src = filepath.Join(dir, f)
		}
		content := strings.ReplaceAll(rename.Replace(shippedUnit(t, src)), "@BIN@", u.bin)
		m.Install(t, strings.Replace(f, "echod", u.name, 1), content)
	}
	// A user manager cannot set up the mount namespaces and dynamic users
	// the hardening asks for (exit 226/NAMESPACE), and PrivateTmp= would
	// hide the test binary in /tmp; the tests turn those off. Everything
	// else in the shipped unit is exercised as shipped.
	m.DropIn(t, u.service(), "test", testDropIn(u.logFile))
	return u
}

// testDropIn sends the service's output to logFile and lifts the start
// rate limit for tests that restart often. A user manager cannot set up the
// mount namespaces and dynamic users the hardening asks for (exit
// 226/NAMESPACE), and PrivateTmp= would hide the test binary in /tmp; the
// tests turn those off. Everything else in the shipped units runs as
// shipped.
func testDropIn(logFile string) string {
	return fmt.Sprintf(`[Unit]
StartLimitIntervalSec=0
[Service]
StandardOutput=append:%[1]s
StandardError=append:%[1]s
DynamicUser=no
PrivateTmp=no
ProtectSystem=no
ProtectHome=no
PrivateDevices=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
ProcSubset=all
`, logFile)
}

func (u *unitUnderTest) systemctl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return u.m.Systemctl(ctx, args...)
}

func (u *unitUnderTest) show(t testing.TB) map[string]string {
	t.Helper()
	return u.m.Show(t, u.service(), "MainPID", "ActiveState", "SubState", "NRestarts", "StatusText", "Result")
}

func (u *unitUnderTest) log(t testing.TB) string {
	b, _ := os.ReadFile(u.logFile)
	return string(b)
}

var statusPIDRe = regexp.MustCompile(`pid (\d+)`)

// servingPID asks the running generation for its pid over the control
// socket.
func (u *unitUnderTest) servingPID(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := control.Request(ctx, u.control(), "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, u.log(t))
	}
	p, _ := strconv.Atoi(field(statusPIDRe, s))
	return p
}

// startByActivation starts the socket units and makes the first
// connection, which starts the service.
func (u *unitUnderTest) startByActivation(t testing.TB) {
	t.Helper()
	if out, err := u.systemctl(t, "start", u.name+".socket", u.name+"-unix.socket"); err != nil {
		t.Fatalf("start sockets: %v\n%s", err, out)
	}
	if st := u.show(t); st["ActiveState"] != "inactive" {
		t.Fatalf("service %s before the first connection; want inactive", st["ActiveState"])
	}
	c, err := dialEcho("tcp", u.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.roundTrip(1234); err != nil {
		t.Fatalf("first connection (socket activation): %v\n%s", err, u.log(t))
	}
	st := u.m.WaitFor(t, 10*time.Second, u.service(), func(p map[string]string) bool { return p["ActiveState"] == "active" }, "ActiveState", "MainPID")
	if st["MainPID"] == "0" {
		t.Fatal("active without a MainPID")
	}
}

func TestSystemdSocketActivationAndReload(t *testing.T) {
	m := systemdtest.Start(t)
	u := installShippedUnits(t, m, "")
	u.startByActivation(t)

	uc, err := dialEcho("unix", u.unix)
	if err != nil {
		t.Fatalf("unix socket of the socket unit: %v", err)
	}
	if err := uc.roundTrip(100); err != nil {
		t.Fatal(err)
	}
	uc.Close()
	inode := listenInode(t, u.tcp)
	if !strings.Contains(u.show(t)["StatusText"], "generation 1") {
		t.Fatalf("StatusText %q, want generation 1", u.show(t)["StatusText"])
	}

	// 20 reloads under load, with long-lived streams open: MainPID follows
	// every generation, the unit stays active, no connection fails, every
	// stream moves to each new generation (the old one exits at once).
	lt := startLoad("tcp", u.tcp, 3)
	lu := startLoad("unix", u.unix, 1)
	ts, err := startStreams("tcp", u.tcp, 200, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.close()
	su, err := startStreams("unix", u.unix, 50, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer su.close()
	prev := u.show(t)["MainPID"]
	for i := 1; i <= 20; i++ {
		if out, err := u.systemctl(t, "reload", u.service()); err != nil {
			lt.stop()
			lu.stop()
			t.Fatalf("reload %d: %v\n%s\n%s", i, err, out, u.log(t))
		}
		st := u.show(t)
		if st["ActiveState"] != "active" {
			t.Fatalf("after reload %d: ActiveState=%s", i, st["ActiveState"])
		}
		if st["MainPID"] == prev {
			t.Fatalf("after reload %d: MainPID still %s", i, prev)
		}
		if got := strconv.Itoa(u.servingPID(t)); got != st["MainPID"] {
			t.Fatalf("after reload %d: MainPID=%s but the serving generation is pid %s", i, st["MainPID"], got)
		}
		old, _ := strconv.Atoi(prev)
		waitExit(t, old, 10*time.Second) // handed everything over: no drain
		prev = st["MainPID"]
		noHandOverLeftIn(t, atoi(prev))
	}
	ts.close()
	su.close()
	if f := append(ts.failures(), su.failures()...); len(f) > 0 {
		t.Fatalf("%d streams failed across 20 reloads: %v", len(f), f[:min(len(f), 5)])
	}
	t.Logf("250 streams: %d round trips verified across 20 reloads", ts.rounds.Load()+su.rounds.Load())
	okT, failT, errsT := lt.stop()
	okU, failU, errsU := lu.stop()
	t.Logf("20 reloads under load: tcp %d ok %d failed, unix %d ok %d failed", okT, failT, okU, failU)
	if failT+failU > 0 || okT == 0 || okU == 0 {
		t.Fatalf("connections failed: tcp %d %v; unix %d %v", failT, errsT, failU, errsU)
	}
	if got := listenInode(t, u.tcp); got != inode {
		t.Fatalf("listening socket changed: %s, was %s", got, inode)
	}

	// 200 back-to-back reloads: the main pid hand-over never loses the unit.
	for i := 1; i <= 200; i++ {
		if out, err := u.systemctl(t, "reload", u.service()); err != nil {
			t.Fatalf("back-to-back reload %d: %v\n%s\n%s", i, err, out, u.log(t))
		}
	}
	st := u.show(t)
	if st["ActiveState"] != "active" || st["NRestarts"] != "0" {
		t.Fatalf("after 200 reloads: %v", st)
	}
	if !strings.Contains(st["StatusText"], "generation 221") {
		t.Fatalf("StatusText %q, want generation 221", st["StatusText"])
	}
	mustEcho(t, "tcp", u.tcp, 5000)
}

// noHandOverLeftIn checks what a generation started by a reload under
// systemd was exec'd with and holds: no LISTEN_* (systemd set them for the
// first generation only) and no hand-over variable in its environment, and
// no pipe among its descriptors (tableflip's readiness and names pipes
// are closed).
func noHandOverLeftIn(t *testing.T, pid int) {
	t.Helper()
	if env := handOverEnv(t, pid); len(env) > 0 {
		t.Errorf("generation pid %d was exec'd with %v", pid, env)
	}
	if p := pipesOf(t, pid); len(p) > 0 {
		t.Errorf("generation pid %d holds pipes: %v", pid, p)
	}
}

func TestSystemdFailedReload(t *testing.T) {
	m := systemdtest.Start(t)
	u := installShippedUnits(t, m, "")
	u.startByActivation(t)
	c, err := dialEcho("tcp", u.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := u.show(t)["MainPID"]

	check := func(what string) {
		t.Helper()
		out, err := u.systemctl(t, "reload", u.service())
		if err == nil {
			t.Fatalf("%s: systemctl reload succeeded:\n%s", what, out)
		}
		st := u.show(t)
		if st["ActiveState"] != "active" || st["MainPID"] != before {
			t.Fatalf("%s: after the failed reload %v, want active with MainPID %s", what, st, before)
		}
		if !strings.Contains(st["StatusText"], "last reload failed") {
			t.Fatalf("%s: StatusText %q does not report the failure", what, st["StatusText"])
		}
		if err := c.roundTrip(300); err != nil {
			t.Fatalf("%s: open connection after the failed reload: %v", what, err)
		}
		n, err := dialEcho("tcp", u.tcp)
		if err != nil {
			t.Fatalf("%s: new connection: %v", what, err)
		}
		defer n.Close()
		if err := n.roundTrip(300); err != nil {
			t.Fatalf("%s: new connection: %v", what, err)
		}
	}

	// A configuration that does not validate: the binary (and so the
	// ExecReload= client) is fine, the new generation refuses to start.
	if err := os.WriteFile(u.config, []byte("max-conns = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("bad config")
	if !strings.Contains(u.log(t), "max-conns: -1 is negative") {
		t.Fatalf("the daemon's log does not give the reason:\n%s", u.log(t))
	}
	os.WriteFile(u.config, nil, 0o644)

	// A broken binary at the path: ExecReload= runs a good copy elsewhere,
	// so what fails is the daemon's upgrade, not the client.
	client := filepath.Join(t.TempDir(), "echod-client")
	good, _ := os.ReadFile(echodBin(t))
	writeExec(t, client, good)
	m.DropIn(t, u.service(), "reload-client", "[Service]\nExecReload=\nExecReload="+client+" reload\n")
	writeExec(t, u.bin, []byte("#!/bin/sh\nexit 1\n"))
	check("broken binary")
	if !strings.Contains(u.log(t), "upgrade failed") {
		t.Fatalf("the daemon's log does not report the failed upgrade:\n%s", u.log(t))
	}

	// Repaired, reload works again.
	writeExec(t, u.bin, good)
	if out, err := u.systemctl(t, "reload", u.service()); err != nil {
		t.Fatalf("reload after repair: %v\n%s", err, out)
	}
	if u.show(t)["MainPID"] == before {
		t.Fatal("MainPID unchanged after a successful reload")
	}
}

// TestSystemdStopDrains: after a reload (the main pid is then a process
// systemd did not start, which it does not wait for on stop everywhere),
// `systemctl stop` lets both the main and the still-draining previous
// generation serve their open connections to the end, and returns once
// they closed.
func TestSystemdStopDrains(t *testing.T) {
	m := systemdtest.Start(t)
	u := installShippedUnits(t, m, " -migrate=false") // the old generation drains
	u.startByActivation(t)
	old := mustEcho(t, "tcp", u.tcp, 10)
	oldPID, _ := strconv.Atoi(u.show(t)["MainPID"])
	if out, err := u.systemctl(t, "reload", u.service()); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	c := mustEcho(t, "tcp", u.tcp, 10)
	pid, _ := strconv.Atoi(u.show(t)["MainPID"])
	if pid == oldPID || !alive(oldPID) {
		t.Fatalf("after the reload: main pid %d, old pid %d alive=%v; want a new main and the old one draining", pid, oldPID, alive(oldPID))
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := m.Systemctl(ctx, "stop", u.service())
		stopped <- err
	}()
	m.WaitFor(t, 10*time.Second, u.service(), func(p map[string]string) bool { return p["ActiveState"] == "deactivating" }, "ActiveState")
	// Draining: both open connections are still served.
	for i := range 3 {
		if err := c.roundTrip(1000 * (i + 1)); err != nil {
			t.Fatalf("connection to the main generation while stopping: %v\n%s\n%s", err, u.log(t), m.Log())
		}
		if err := old.roundTrip(1000 * (i + 1)); err != nil {
			t.Fatalf("connection to the previous generation while stopping: %v\n%s\n%s", err, u.log(t), m.Log())
		}
	}
	c.Close()
	select {
	case err := <-stopped:
		t.Fatalf("stop finished while a connection was open (err %v)", err)
	default:
	}
	if err := old.roundTrip(100); err != nil {
		t.Fatalf("previous generation after the main one closed its last connection: %v", err)
	}
	old.Close()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stop did not finish after the last connection closed")
	}
	waitExit(t, pid, 10*time.Second)
	waitExit(t, oldPID, 10*time.Second)
	st := u.show(t)
	if st["ActiveState"] != "inactive" || st["Result"] != "success" {
		t.Fatalf("after stop: %v", st)
	}
	// Both ran their stop path to the end (systemd may still log a
	// SIGKILL sweep for a main pid it did not see exit: harmless then).
	for _, exit := range []string{
		fmt.Sprintf("msg=exiting gen=1 pid=%d", oldPID),
		fmt.Sprintf("msg=exiting gen=2 pid=%d", pid),
	} {
		if !strings.Contains(u.log(t), exit) {
			t.Fatalf("no %q: a generation did not stop by itself:\n%s\n%s", exit, u.log(t), m.Log())
		}
	}
	// The socket unit's Unix socket belongs to systemd: still there.
	if _, err := os.Stat(u.unix); err != nil {
		t.Fatalf("socket-activated Unix socket after stop: %v", err)
	}
	if n := strings.Count(u.log(t), "msg=drained"); n < 2 {
		t.Fatalf("want both generations drained, log has %d drains:\n%s", n, u.log(t))
	}
}

// TestSystemdWatchdog: with WatchdogSec= short, every generation keeps
// the watchdog fed — also after reloads, when WATCHDOG_PID names the first
// generation — so systemd never kills the service.
func TestSystemdWatchdog(t *testing.T) {
	m := systemdtest.Start(t)
	u := installShippedUnits(t, m, "")
	m.DropIn(t, u.service(), "watchdog", "[Service]\nWatchdogSec=600ms\n")
	u.startByActivation(t)
	for range 2 {
		if out, err := u.systemctl(t, "reload", u.service()); err != nil {
			t.Fatalf("reload: %v\n%s", err, out)
		}
	}
	pid := u.show(t)["MainPID"]
	// Watch for 3 watchdog periods: a starved watchdog makes systemd kill
	// the main process (Result=watchdog) and restart it.
	deadline := time.Now().Add(1800 * time.Millisecond)
	for time.Now().Before(deadline) {
		st := u.show(t)
		if st["ActiveState"] != "active" || st["MainPID"] != pid || st["NRestarts"] != "0" {
			t.Fatalf("watchdog fired: %v\n%s", st, u.log(t))
		}
	}
	mustEcho(t, "tcp", u.tcp, 10)
}
