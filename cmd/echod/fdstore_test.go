package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/systemd/systemdtest"
)

// installFDStoreUnit installs the shipped echod-fdstore.service under a
// unique name, with its -listen replaced by a config file listing the
// given addresses.
func installFDStoreUnit(t testing.TB, m *systemdtest.Manager, listen ...string) *unitUnderTest {
	t.Helper()
	return installFDStoreUnitFrom(t, m, "", listen...)
}

// installFDStoreUnitFrom is installFDStoreUnit with the unit of
// systemd/units/dir.
func installFDStoreUnitFrom(t testing.TB, m *systemdtest.Manager, dir string, listen ...string) *unitUnderTest {
	t.Helper()
	u := newUnitUnderTest(t, m, "echod-fds")
	u.writeListen(t, listen...)
	if len(listen) > 0 {
		u.tcp = listen[0]
	}
	content := strings.NewReplacer(
		"/usr/local/bin/echod", u.bin,
		"RuntimeDirectory=echod-fdstore", "RuntimeDirectory="+u.name,
		"-listen 127.0.0.1:7007", "-config "+u.config,
	).Replace(shippedUnit(t, filepath.Join(dir, "echod-fdstore.service")))
	m.Install(t, u.service(), content)
	m.DropIn(t, u.service(), "test", testDropIn(u.logFile))
	return u
}

func (u *unitUnderTest) writeListen(t testing.TB, listen ...string) {
	t.Helper()
	var q []string
	for _, l := range listen {
		q = append(q, strconv.Quote(l))
	}
	if err := os.WriteFile(u.config, []byte("listen = ["+strings.Join(q, ", ")+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (u *unitUnderTest) storeCount(t testing.TB) string {
	t.Helper()
	return u.m.Show(t, u.service(), "NFileDescriptorStore")["NFileDescriptorStore"]
}

func (u *unitUnderTest) mustSystemctl(t testing.TB, args ...string) {
	t.Helper()
	if out, err := u.systemctl(t, args...); err != nil {
		t.Fatalf("systemctl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, u.log(t))
	}
}

// start starts the service and returns its main pid once active.
func (u *unitUnderTest) start(t testing.TB) string {
	t.Helper()
	u.mustSystemctl(t, "start", u.service())
	return u.waitActive(t, "")
}

func (u *unitUnderTest) waitActive(t testing.TB, notPID string) string {
	t.Helper()
	st := u.m.WaitFor(t, 20*time.Second, u.service(), func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["MainPID"] != "0" && p["MainPID"] != notPID
	}, "ActiveState", "MainPID")
	return st["MainPID"]
}

// TestFDStoreRestartRefusesNothing: with the listeners in systemd's fd
// store, ten restarts under load refuse and reset nothing, and the socket
// is the same in every process; reloads and restarts do not grow the store.
func TestFDStoreRestartRefusesNothing(t *testing.T) {
	m := systemdtest.Start(t)
	tcp := freePort(t)
	sock := filepath.Join(t.TempDir(), "echo.sock")
	u := installFDStoreUnit(t, m, tcp, "unix:"+sock)
	u.start(t)
	if n := u.storeCount(t); n != "2" {
		t.Fatalf("NFileDescriptorStore=%s after start, want 2 (one per listener)\n%s", n, u.log(t))
	}
	inode := listenInode(t, tcp)

	for i := 1; i <= 10; i++ {
		u.mustSystemctl(t, "reload", u.service())
	}
	if n := u.storeCount(t); n != "2" {
		t.Fatalf("NFileDescriptorStore=%s after 10 reloads, want 2", n)
	}

	lt := startLoad("tcp", tcp, 3)
	lu := startLoad("unix", sock, 1)
	for i := 1; i <= 10; i++ {
		prev := u.show(t)["MainPID"]
		if out, err := u.systemctl(t, "restart", u.service()); err != nil {
			lt.stop()
			lu.stop()
			t.Fatalf("restart %d: %v\n%s\n%s", i, err, out, u.log(t))
		}
		pid := u.waitActive(t, prev)
		if got := listenInode(t, tcp); got != inode {
			t.Fatalf("restart %d: listening socket inode %s, was %s", i, got, inode)
		}
		p, _ := strconv.Atoi(pid)
		if !holdsSocket(t, p, inode) {
			t.Fatalf("restart %d: the new process does not hold the stored socket", i)
		}
	}
	okT, failT, errsT := lt.stop()
	okU, failU, errsU := lu.stop()
	t.Logf("10 restarts under load: tcp %d ok %d failed, unix %d ok %d failed", okT, failT, okU, failU)
	if failT+failU > 0 || okT == 0 || okU == 0 {
		t.Fatalf("connections failed across restarts: tcp %d %v; unix %d %v\n%s\nmanager:\n%s", failT, errsT, failU, errsU, u.log(t), m.Log())
	}
	if n := u.storeCount(t); n != "2" {
		t.Fatalf("NFileDescriptorStore=%s after 10 restarts, want 2", n)
	}
	if !strings.Contains(u.log(t), "restored=true") {
		t.Fatalf("no listener came back from the store:\n%s", u.log(t))
	}
}

// TestFDStoreRestartKeepsStreams: 500 long-lived streams, each sending
// its numbered byte sequence all along, across 10 restarts under
// short-connection load: each stopping process leaves its connections in
// the fd store and the next one serves them, so every stream gets exactly
// its bytes back, with no EOF or reset, and nothing is refused; the store
// holds the listener again once the connections came back.
func TestFDStoreRestartKeepsStreams(t *testing.T) {
	const n = 500
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	u.start(t)
	st := mustStreams(t, "tcp", tcp, n, 20*time.Millisecond)
	lt := startLoad("tcp", tcp, 2)
	for i := 1; i <= 10; i++ {
		prev := u.show(t)["MainPID"]
		if out, err := u.systemctl(t, "restart", u.service()); err != nil {
			lt.stop()
			t.Fatalf("restart %d: %v\n%s\n%s", i, err, out, u.log(t))
		}
		u.waitActive(t, prev)
		if f := st.failures(); len(f) > 0 {
			lt.stop()
			t.Fatalf("restart %d: %d streams failed: %v\n%s", i, len(f), f[:min(len(f), 5)], u.log(t))
		}
		waitRounds(t, st, n) // every stream goes on, served by the new process
	}
	ok, failed, errs := lt.stop()
	st.closeIntact(t)
	if failed > 0 || lt.refused.Load() > 0 || ok == 0 {
		t.Fatalf("short connections across restarts: %d ok, %d failed (%d refused): %v", ok, failed, lt.refused.Load(), errs)
	}
	log := u.log(t)
	if c := strings.Count(log, "connections restored from the systemd fd store"); c != 10 {
		t.Fatalf("%d processes restored connections, want 10:\n%s", c, log)
	}
	// Once the streams are closed, the copy kept against a crash goes too
	// (at the next look, within a second).
	deadline := time.Now().Add(10 * time.Second)
	for u.storeCount(t) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("NFileDescriptorStore=%s after the restarts, want 1 (the listener)", u.storeCount(t))
		}
		time.Sleep(50 * time.Millisecond) // polling the manager's count, bounded
	}
	t.Logf("%d streams across 10 restarts: %d verified round trips; short connections %d ok", n, st.rounds.Load(), ok)
}

// TestFDStoreStopClosesStoredConnections: systemctl stop with 500
// connections open ends at once (they go to the store, not through a
// drain), the manager flushes the store when the unit is inactive, and
// every client sees its connection closed (EOF): nothing hangs in the
// store.
func TestFDStoreStopClosesStoredConnections(t *testing.T) {
	const n = 500
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	u.start(t)
	conns := make([]*echoConn, n)
	for i := range conns {
		conns[i] = mustEcho(t, "tcp", tcp, 16)
	}
	start := time.Now()
	u.mustSystemctl(t, "stop", u.service())
	took := time.Since(start)
	if st := u.show(t)["ActiveState"]; st != "inactive" {
		t.Fatalf("ActiveState=%s after stop", st)
	}
	if !strings.Contains(u.log(t), "connections stored in the systemd fd store") {
		t.Fatalf("the stopping process did not store its connections:\n%s", u.log(t))
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("connection %d after stop: read %d, %v; want EOF", i, n, err)
		}
	}
	if sn := u.storeCount(t); sn != "0" {
		t.Fatalf("NFileDescriptorStore=%s once inactive, want 0", sn)
	}
	t.Logf("systemctl stop with %d connections open took %v; every client saw EOF", n, took)
}

// TestFDStoreCrashKeepsConnections: 500 idle connections; 3 SIGKILLs of
// the main pid with Restart=always. The serving process keeps a copy of
// its connections in the fd store, so each next process serves them:
// after every crash, every connection still echoes. 10 clients hang up
// just before the second crash: the next process drops them (its copy in
// the store holds the 490 left).
func TestFDStoreCrashKeepsConnections(t *testing.T) {
	const n = 500
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	// Debug: the snapshots are logged.
	if err := os.WriteFile(u.config, []byte(fmt.Sprintf("listen = [%q]\nlog-level = \"debug\"\n", tcp)), 0o644); err != nil {
		t.Fatal(err)
	}
	u.start(t)
	conns := make([]*echoConn, n)
	for i := range conns {
		conns[i] = mustEcho(t, "tcp", tcp, 16)
	}
	// A copy of every open connection in the store, by the process
	// serving now.
	open := n
	waitStore := func(what string) {
		t.Helper()
		want := fmt.Sprintf(`msg="live connections kept in the fd store against a crash" gen=1 pid=%s connections=%d `, u.show(t)["MainPID"], open)
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(u.log(t), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no snapshot of the %d connections (NFileDescriptorStore=%s)\n%s", what, n, u.storeCount(t), u.log(t))
			}
			time.Sleep(50 * time.Millisecond) // polling the log, bounded
		}
	}
	waitStore("before the first crash")
	lost := 0
	for k := 1; k <= 3; k++ {
		if k == 2 {
			// Peers that hang up while their connection sits in the
			// store: the next process reads their EOF and closes them.
			for i := range 10 {
				conns[i].Close()
				conns[i] = nil
			}
			open -= 10
		}
		pid := u.show(t)["MainPID"]
		u.mustSystemctl(t, "kill", "--signal=KILL", u.service())
		u.waitActive(t, pid)
		for i, c := range conns {
			if c == nil {
				continue
			}
			if err := c.roundTrip(64); err != nil {
				t.Errorf("crash %d: connection %d: %v", k, i, err)
				conns[i] = nil
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("crash %d: %d of %d idle connections lost\n%s", k, lost, n, u.log(t))
		}
		waitStore(fmt.Sprintf("after crash %d", k))
	}
	if got := u.show(t)["NRestarts"]; got != "3" {
		t.Fatalf("NRestarts=%s, want 3", got)
	}
	t.Logf("%d idle connections across 3 SIGKILLs: 0 lost, every one echoed after each", n)
}

// TestFDStoreClosedConnectionLeavesTheStore: a connection echod closes
// (here its idle timeout) while a copy of it is kept in the fd store
// against a crash reaches its peer as a close all the same: the copy goes
// with the next snapshot, and nothing stays in the store.
func TestFDStoreClosedConnectionLeavesTheStore(t *testing.T) {
	const n = 20
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	if err := os.WriteFile(u.config, []byte(fmt.Sprintf("listen = [%q]\nidle-timeout = \"3s\"\n", tcp)), 0o644); err != nil {
		t.Fatal(err)
	}
	u.start(t)
	conns := make([]*echoConn, n)
	for i := range conns {
		conns[i] = mustEcho(t, "tcp", tcp, 16)
	}
	last := time.Now()
	// Kept against a crash once a second old.
	deadline := time.Now().Add(20 * time.Second)
	for u.storeCount(t) != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("NFileDescriptorStore=%s, want 2 (the listener and the connections)", u.storeCount(t))
		}
		time.Sleep(50 * time.Millisecond) // polling the manager's count, bounded
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(last.Add(15 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("connection %d, idle past its timeout: read %d, %v; want EOF", i, n, err)
		}
	}
	t.Logf("every idle connection closed %v after its last echo (idle timeout 3s)", time.Since(last).Round(time.Millisecond))
	deadline = time.Now().Add(10 * time.Second)
	for u.storeCount(t) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("NFileDescriptorStore=%s with no connection left, want 1 (the listener)", u.storeCount(t))
		}
		time.Sleep(50 * time.Millisecond) // polling the manager's count, bounded
	}
}

// TestFDStoreConnectionsOverTheLimit: with FileDescriptorStoreMax= too
// low for the queue of connections (room for the listener only), systemd
// drops it without a word; the next process says so, naming the setting.
func TestFDStoreConnectionsOverTheLimit(t *testing.T) {
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	m.DropIn(t, u.service(), "zz-max", "[Service]\nFileDescriptorStoreMax=1\n")
	u.start(t)
	c := mustEcho(t, "tcp", tcp, 16)
	prev := u.show(t)["MainPID"]
	u.mustSystemctl(t, "restart", u.service())
	u.waitActive(t, prev)
	log := u.log(t)
	if !strings.Contains(log, "connections kept in the systemd fd store by the previous process did not come back: is FileDescriptorStoreMax= high enough?") {
		t.Fatalf("no warning naming FileDescriptorStoreMax=:\n%s", log)
	}
	// The connection went with the queue: its client sees it closed.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the dropped connection read %d, %v; want it closed", n, err)
	}
}

// TestFDStoreCrashRefusesNothing: SIGKILL of the main process under load;
// Restart=always starts the next one with the stored socket. Connections
// in flight inside the killed process are lost (reset); none is refused.
func TestFDStoreCrashRefusesNothing(t *testing.T) {
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	u.start(t)
	inode := listenInode(t, tcp)
	// A reload first: the main process is then one systemd did not start.
	u.mustSystemctl(t, "reload", u.service())
	lt := startLoad("tcp", tcp, 3)
	for i := 1; i <= 3; i++ {
		pid := u.show(t)["MainPID"]
		u.mustSystemctl(t, "kill", "--signal=KILL", u.service())
		u.waitActive(t, pid)
		if got := listenInode(t, tcp); got != inode {
			t.Fatalf("crash %d: listening socket inode %s, was %s", i, got, inode)
		}
	}
	ok, failed, errs := lt.stop()
	refused := lt.refused.Load()
	t.Logf("3 crashes under load: %d ok, %d failed (%d refused): %v", ok, failed, refused, errs)
	if refused > 0 {
		t.Fatalf("%d connections refused across crashes: %v", refused, errs)
	}
	if ok == 0 {
		t.Fatal("the load made no connection")
	}
	if n := u.show(t)["NRestarts"]; n != "3" {
		t.Fatalf("NRestarts=%s, want 3", n)
	}
}

// TestFDStoreDropsUnconfiguredListener: a listener removed from the config
// is gone from the store after a restart, and its port refuses.
func TestFDStoreDropsUnconfiguredListener(t *testing.T) {
	m := systemdtest.Start(t)
	a, b := freePort(t), freePort(t)
	u := installFDStoreUnit(t, m, a, b)
	u.start(t)
	if n := u.storeCount(t); n != "2" {
		t.Fatalf("NFileDescriptorStore=%s, want 2", n)
	}
	u.writeListen(t, a)
	pid := u.show(t)["MainPID"]
	u.mustSystemctl(t, "restart", u.service())
	u.waitActive(t, pid)
	if n := u.storeCount(t); n != "1" {
		t.Fatalf("NFileDescriptorStore=%s after dropping a listener, want 1\n%s", n, u.log(t))
	}
	if !strings.Contains(u.log(t), "removed from the systemd fd store") {
		t.Fatalf("no log line for the removed listener:\n%s", u.log(t))
	}
	if c, err := dialEcho("tcp", b); err == nil {
		c.Close()
		t.Fatalf("the dropped listener %s still accepts", b)
	}
	mustEcho(t, "tcp", a, 100)
}

// TestFDStoreWarnsWhenNothingCameBack: without FileDescriptorStoreMax=
// systemd drops the stored fds silently; after a restart echod says so.
func TestFDStoreWarnsWhenNothingCameBack(t *testing.T) {
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	m.DropIn(t, u.service(), "nostore", "[Service]\nFileDescriptorStoreMax=0\n")
	pid := u.start(t)
	if n := u.storeCount(t); n != "0" {
		t.Fatalf("NFileDescriptorStore=%s with FileDescriptorStoreMax=0", n)
	}
	u.mustSystemctl(t, "restart", u.service())
	u.waitActive(t, pid)
	if !strings.Contains(u.log(t), "did not come back from the systemd fd store") {
		t.Fatalf("no warning about the lost fd store:\n%s", u.log(t))
	}
}

// TestFDStoreToggledByReload: turning the fd store on and off in the
// config takes effect on reload, with the same socket throughout.
func TestFDStoreToggledByReload(t *testing.T) {
	m := systemdtest.Start(t)
	tcp := freePort(t)
	u := installFDStoreUnit(t, m, tcp)
	m.DropIn(t, u.service(), "noflag", "[Service]\nExecStart=\nExecStart="+u.bin+" -config "+u.config+"\n")
	u.start(t)
	if n := u.storeCount(t); n != "0" {
		t.Fatalf("NFileDescriptorStore=%s without fdstore", n)
	}
	inode := listenInode(t, tcp)
	for i, want := range []string{"1", "0", "1"} {
		on := want == "1"
		if err := os.WriteFile(u.config, []byte(fmt.Sprintf("listen = [%q]\nfdstore = %v\n", tcp, on)), 0o644); err != nil {
			t.Fatal(err)
		}
		u.mustSystemctl(t, "reload", u.service())
		if n := u.storeCount(t); n != want {
			t.Fatalf("reload %d (fdstore=%v): NFileDescriptorStore=%s, want %s\n%s", i+1, on, n, want, u.log(t))
		}
		if got := listenInode(t, tcp); got != inode {
			t.Fatalf("reload %d: listening socket changed", i+1)
		}
		mustEcho(t, "tcp", tcp, 10).Close()
	}
}

// TestFDStoreNeverStoresActivatedSockets: with -fdstore under socket
// activation, the socket units' fds are systemd's already: nothing is
// stored, before or after a reload.
func TestFDStoreNeverStoresActivatedSockets(t *testing.T) {
	m := systemdtest.Start(t)
	u := installShippedUnits(t, m, " -fdstore")
	u.startByActivation(t)
	u.mustSystemctl(t, "reload", u.service())
	if n := u.storeCount(t); n != "0" {
		t.Fatalf("NFileDescriptorStore=%s with only socket-activated listeners, want 0\n%s", n, u.log(t))
	}
	if log := u.log(t); !strings.Contains(log, "origin=systemd") || strings.Contains(log, "stored in the systemd fd store") {
		t.Fatalf("want socket-activated listeners, none stored:\n%s", log)
	}
	mustEcho(t, "tcp", u.tcp, 10).Close()
}
