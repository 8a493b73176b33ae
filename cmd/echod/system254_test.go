//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/systemd/systemdtest"
)

// The tests in this file are those of system_test.go for systemd 254 and
// later: systemd 254 (Debian's bookworm-backports packages, extracted by
// systemdtest.Backports254; they skip, saying why, where it cannot be had)
// boots as PID 1 of fresh namespaces, its tree installed in the root over
// the machine's systemd, and runs the units of systemd/units/254
// (Type=notify-reload, FileDescriptorStorePreserve=yes) with the socket
// units of systemd/units, byte for byte as make install picks them for 254:
// hardened, at their shipped paths, on the manager's own loopback.

// sysFDStoreControl is the control socket of echod-fdstore.service inside
// (RuntimeDirectory=echod-fdstore).
const sysFDStoreControl = "/run/echod-fdstore/control.sock"

// bootShipped254 boots systemd 254 as the system manager with the units
// for 254 (see bootShippedWith).
func bootShipped254(t testing.TB) *shippedSystem {
	t.Helper()
	return bootShippedWith(t, systemdtest.Backports254(t), "254")
}

// show254 returns the properties of unit the 254 tests check, ReloadResult
// among them.
func (s *shippedSystem) show254(t testing.TB, unit string) map[string]string {
	t.Helper()
	return s.Show(t, unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ReloadResult", "StatusText", "NFileDescriptorStore")
}

// TestSystemManager254ReloadUnderLoad: under systemd 254 as PID 1, socket
// activation on the first connection, then 10 `systemctl reload`s
// (Type=notify-reload: ReloadSignal=SIGCONT, a no-op, and ExecReload=echod
// reload, which waits for the upgrade; RELOADING=1, the new generation's
// MAINPID= and READY=1) under load on both
// sockets with streams open: each returns once the new generation serves,
// with ReloadResult=success and MainPID the new generation's; no operation
// fails.
func TestSystemManager254ReloadUnderLoad(t *testing.T) {
	s := bootShipped254(t)
	if v := systemdtest.ParseShow(s.MustSystemctl(t, "show", "-p", "Version"))["Version"]; !strings.HasPrefix(v, "254") {
		t.Fatalf("the manager's Version = %q, want 254…", v)
	}
	pid := s.activate(t)
	if p := s.Show(t, "echod.service", "Type", "ReloadSignal"); p["Type"] != "notify-reload" || p["ReloadSignal"] != strconv.Itoa(int(unix.SIGCONT)) {
		t.Fatalf("echod.service: %v, want Type=notify-reload and ReloadSignal=SIGCONT (the unit for 254)", p)
	}
	lt := s.startEchoload(t, "-addr", sysTCP, "-concurrency", "2", "-rate", "300", "-streams", "8", "-stream-interval", "10ms", "-duration", "2m")
	lu := s.startEchoload(t, "-addr", sysUnix, "-concurrency", "1", "-rate", "100", "-streams", "2", "-stream-interval", "10ms", "-duration", "2m")
	s.waitConns(t, 10, 20*time.Second) // both loads run: their streams are connected

	seen := map[string]bool{pid: true}
	begin := time.Now()
	var took []time.Duration
	for i := 1; i <= 10; i++ {
		t0 := time.Now()
		out, err := s.Systemctl(context.Background(), "reload", "echod.service")
		took = append(took, time.Since(t0))
		if err != nil {
			t.Fatalf("reload %d: %v\n%s\n%s", i, err, out, s.Journal(t, "echod.service"))
		}
		p := s.show254(t, "echod.service")
		if p["ActiveState"] != "active" || p["SubState"] != "running" || seen[p["MainPID"]] || p["ReloadResult"] != "success" || p["NRestarts"] != "0" {
			t.Fatalf("after reload %d: %v, want active/running, ReloadResult=success, a new MainPID (was %s), no restart", i, p, pid)
		}
		pid = p["MainPID"]
		seen[pid] = true
		if st, want := s.status(t), fmt.Sprintf("generation %d pid %s ", i+1, pid); !strings.HasPrefix(st, want) {
			t.Fatalf("after reload %d: the serving generation says %q, want %q…", i, st, want)
		}
	}
	t.Logf("systemd 254: 10 reloads under load in %v; systemctl reload %s", time.Since(begin).Round(time.Millisecond), durations(took))
	rt, outT := lt.stop(t)
	ru, outU := lu.stop(t)
	checkReport(t, "tcp load", rt, outT)
	checkReport(t, "unix load", ru, outU)
	if rt.Short.OK == 0 || ru.Short.OK == 0 || rt.Streams.Messages == 0 || ru.Streams.Messages == 0 {
		t.Fatalf("some load did not run: tcp %+v %+v, unix %+v %+v", rt.Short, rt.Streams, ru.Short, ru.Streams)
	}
	if rt.Streams.Connections != 8 || ru.Streams.Connections != 2 {
		t.Fatalf("stream connections: tcp %d, unix %d; want 8 and 2 (none reconnected)", rt.Streams.Connections, ru.Streams.Connections)
	}
	t.Logf("tcp: %d short ok, %d stream echoes; unix: %d short ok, %d stream echoes; 0 failed",
		rt.Short.OK, rt.Streams.Messages, ru.Short.OK, ru.Streams.Messages)
}

// TestSystemManager254FailedReload: under systemd 254 as PID 1, with a
// broken build at /usr/local/bin/echod, the reload ends (READY=1) and
// ExecReload=echod reload, waiting for the outcome, fails it: `systemctl reload` exits
// non-zero, ReloadResult=exit-code, the unit stays active/running with the
// same MainPID, STATUS= and the journal say why, and everything is served
// on, the load running across it included. Repaired, reload works again.
func TestSystemManager254FailedReload(t *testing.T) {
	s := bootShipped254(t)
	pid := s.activate(t)
	l := s.startEchoload(t, "-addr", sysTCP, "-concurrency", "1", "-rate", "100", "-streams", "4", "-stream-interval", "10ms", "-duration", "2m")
	s.waitConns(t, 4, 20*time.Second)
	s.WriteFile(t, systemdtest.SystemBinary, []byte(brokenEchod), 0o755)
	out, err := s.Systemctl(context.Background(), "reload", "echod.service")
	if err == nil {
		t.Fatalf("systemctl reload with a broken binary succeeded:\n%s", out)
	}
	t.Logf("systemctl reload: %v", err)
	p := s.show254(t, "echod.service")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["MainPID"] != pid || p["ReloadResult"] != "exit-code" || p["NRestarts"] != "0" {
		t.Fatalf("after the failed reload: %v, want active/running, MainPID %s, ReloadResult=exit-code, no restart", p, pid)
	}
	if !strings.Contains(p["StatusText"], "last reload failed") {
		t.Errorf("StatusText %q does not report the failed reload", p["StatusText"])
	}
	j := s.Journal(t, "echod.service")
	for _, want := range []string{"echod: broken build (test)", "upgrade failed"} {
		if !strings.Contains(j, want) {
			t.Errorf("journal of echod.service lacks %q (the reason):\n%s", want, j)
		}
	}
	s.echoloadOK(t, "after the failed reload", "-addr", sysTCP, "-count", "50", "-concurrency", "2", "-duration", "30s")
	s.echoloadOK(t, "after the failed reload", "-addr", sysUnix, "-count", "50", "-concurrency", "2", "-duration", "30s")
	if st, want := s.status(t), fmt.Sprintf("generation 1 pid %s ", pid); !strings.HasPrefix(st, want) {
		t.Fatalf("after the failed reload the serving generation says %q, want %q…", st, want)
	}

	good, err := os.ReadFile(echodBin(t))
	if err != nil {
		t.Fatal(err)
	}
	s.WriteFile(t, systemdtest.SystemBinary, good, 0o755)
	s.MustSystemctl(t, "reload", "echod.service")
	if p := s.show254(t, "echod.service"); p["ActiveState"] != "active" || p["MainPID"] == pid || p["ReloadResult"] != "success" || strings.Contains(p["StatusText"], "failed") {
		t.Fatalf("after the repaired reload: %v, want active with a new MainPID and ReloadResult=success", p)
	}
	r, outL := l.stop(t)
	checkReport(t, "load across the failed and the repaired reload", r, outL)
	if r.Streams.Connections != 4 {
		t.Fatalf("stream connections %d, want 4 (none reconnected)", r.Streams.Connections)
	}
}

// TestSystemManager254Sandbox: under systemd 254 as PID 1, the hardening
// of the unit for 254 is applied to the first generation and to the one a
// reload starts (as TestSystemManagerSandbox checks for 252).
func TestSystemManager254Sandbox(t *testing.T) {
	s := bootShipped254(t)
	s.checkSandbox(t)
	if p := s.show254(t, "echod.service"); p["ReloadResult"] != "success" {
		t.Errorf("after the reload: %v, want ReloadResult=success", p)
	}
}

// TestSystemManager254FDStorePreserve: echod-fdstore.service for 254
// (FileDescriptorStorePreserve=yes), enabled as make install would (so
// that something refers to it: an inactive unit nothing refers to is
// unloaded, its store with it), sandboxed, under systemd 254 as PID 1.
// With streams open (the test's own connections, dialled into the
// manager's network namespace) and short connections running, twice:
// `systemctl stop` leaves the unit inactive with SubState
// dead-resources-pinned and the listener and the connections in the store
// (systemd-analyze fdstore lists them); a client connecting meanwhile
// waits in the kept listener's backlog; after `systemctl start` the same
// stream connections go on with their exact byte sequences, and the client
// is served. Nothing fails.
func TestSystemManager254FDStorePreserve(t *testing.T) {
	const (
		unit = "echod-fdstore.service"
		n    = 50
	)
	s := bootShipped254(t)
	t.Logf("systemctl enable %s: %s", unit, strings.TrimSpace(s.MustSystemctl(t, "enable", unit)))
	s.MustSystemctl(t, "start", unit)
	p := s.show254(t, unit)
	if p["ActiveState"] != "active" || p["NFileDescriptorStore"] == "0" {
		t.Fatalf("after start: %v, want active with its listener in the fd store\n%s", p, s.Journal(t, unit))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func() (net.Conn, error) { return s.Dial(ctx, "tcp", sysTCP) }
	st, err := startStreamsDial(dial, n, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	waitRounds(t, st, n)
	short := s.startEchoload(t, "-addr", sysTCP, "-concurrency", "1", "-rate", "100", "-duration", "2m")
	s.waitConnsAt(t, sysFDStoreControl, n, 20*time.Second)

	for i := 1; i <= 2; i++ {
		prev := p["MainPID"]
		s.MustSystemctl(t, "stop", unit)
		p = s.show254(t, unit)
		stored, _ := strconv.Atoi(p["NFileDescriptorStore"])
		if p["ActiveState"] != "inactive" || p["SubState"] != "dead-resources-pinned" || stored == 0 {
			t.Fatalf("stop %d: %v, want inactive, SubState dead-resources-pinned, the listener and the connections in the store\n%s", i, p, s.Journal(t, unit))
		}
		listed := s.fdstore(t, unit)
		if listed != stored {
			t.Errorf("stop %d: systemd-analyze fdstore lists %d fds, NFileDescriptorStore=%d", i, listed, stored)
		}
		// A client arriving meanwhile waits in the kept listener's
		// backlog.
		lc, err := dial()
		if err != nil {
			t.Fatalf("stop %d: connecting while stopped: %v", i, err)
		}
		late := &echoConn{Conn: lc, buf: make([]byte, 64<<10)}
		s.MustSystemctl(t, "start", unit)
		p = s.WaitFor(t, 20*time.Second, unit, func(p map[string]string) bool {
			return p["ActiveState"] == "active" && p["MainPID"] != "0" && p["MainPID"] != prev
		}, "ActiveState", "SubState", "MainPID", "NFileDescriptorStore")
		if err := late.roundTrip(64); err != nil {
			t.Fatalf("stop %d: the client that connected while stopped: %v", i, err)
		}
		late.Close()
		waitRounds(t, st, n) // the streams go on, on the same connections
		if f := st.failures(); len(f) > 0 {
			t.Fatalf("stop %d: %d streams failed: %v\n%s", i, len(f), f[:min(len(f), 5)], s.Journal(t, unit))
		}
	}
	r, out := short.stop(t)
	st.closeIntact(t)
	checkReport(t, "short connections across stop + start", r, out)
	if c := strings.Count(s.Journal(t, unit), "connections restored from the systemd fd store"); c != 2 {
		t.Fatalf("%d processes restored connections, want 2:\n%s", c, s.Journal(t, unit))
	}
	t.Logf("systemd 254: %d streams across 2 stop + start, %d verified round trips; %d short connections, 0 failed", n, st.rounds.Load(), r.Short.OK)
}

// fdstore logs what `systemd-analyze fdstore unit` (systemd 254's) says
// about unit's fd store and returns how many fds it lists.
func (s *shippedSystem) fdstore(t testing.TB, unit string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), systemdtest.SystemctlTimeout)
	defer cancel()
	out, err := s.SystemdCommand(ctx, s.Systemd().Analyze, "fdstore", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze fdstore %s: %v\n%s", unit, err, out)
	}
	t.Logf("systemd-analyze fdstore %s:\n%s", unit, out)
	var n int
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 && f[0] != "FDNAME" && (f[1] == "sock" || f[1] == "reg" || f[1] == "fifo" || f[1] == "dir" || f[1] == "chr" || f[1] == "blk" || f[1] == "lnk" || f[1] == "unknown") {
			n++
		}
	}
	return n
}
