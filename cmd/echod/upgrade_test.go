package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/handoff/control"
)

// copyExec copies the file at src to dst (mode 0755) through a temporary
// file and an atomic rename, as a package manager replaces a binary.
func copyExec(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeExec(t, dst, b)
}

func writeExec(t testing.TB, dst string, b []byte) {
	t.Helper()
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// status asks the running generation for its status line.
func (in *instance) status(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := control.Request(ctx, in.control, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return s
}

// TestBinaryUpgradeInPlace: v1 runs; the file at its path is replaced by v2
// (atomic rename); a reload runs v2 with the same socket.
func TestBinaryUpgradeInPlace(t *testing.T) {
	dir := t.TempDir()
	v1, err := buildEchod(dir, "echod-v1", "v1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := buildEchod(dir, "echod-v2", "v2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "echod")
	copyExec(t, v1, bin)
	in := startEchod(t, bin, "-listen", "127.0.0.1:0")
	if s := in.status(t); !strings.Contains(s, "version v1.0.0") {
		t.Fatalf("status %q, want version v1.0.0", s)
	}
	c, err := dialEcho("tcp", in.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inode := listenInode(t, in.addrs[0])

	copyExec(t, v2, bin)
	if _, err := in.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if s := in.status(t); !strings.Contains(s, "version v2.0.0") || !strings.Contains(s, "generation 2") {
		t.Fatalf("status after upgrade %q, want generation 2 version v2.0.0", s)
	}
	if got := listenInode(t, in.addrs[0]); got != inode {
		t.Fatalf("listening socket changed: %s, was %s", got, inode)
	}
	if err := c.roundTrip(4096); err != nil {
		t.Fatalf("connection opened under v1, after the upgrade: %v", err)
	}
	n, err := dialEcho("tcp", in.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.roundTrip(4096); err != nil {
		t.Fatalf("new connection under v2: %v", err)
	}
}

// TestFailedUpgradeKeepsServing: a reload whose new generation cannot
// start fails with the reason, and the old generation serves on as before:
// each case runs with 50 streams open and short-connection load (the
// faultRig), and checks that no stream and no short connection noticed.
// The reload client is a separate copy of the binary, so the daemon's own
// failure path is what answers. Repaired, the next reload moves every
// stream.
func TestFailedUpgradeKeepsServing(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		breakIt func(r *faultRig)
		want    string // in the reload error and the log; %BIN% is the binary's path
		also    string // in the reload error too (the log quotes '"')
		killed  bool   // the new process was killed at the upgrade timeout
	}{
		{
			name:    "binary exits 1",
			breakIt: func(r *faultRig) { writeExec(r.t, r.bin, []byte("#!/bin/sh\necho broken >&2\nexit 1\n")) },
			want:    "the new process exited before it spoke the hand-over protocol (version 2)",
		},
		{
			name: "binary is not executable",
			breakIt: func(r *faultRig) {
				writeExec(r.t, r.bin, []byte("garbage"))
				if err := os.Chmod(r.bin, 0o644); err != nil {
					r.t.Fatal(err)
				}
			},
			want: "handoff: the new process could not be started: can't start child: can't start process %BIN%: exec: ",
			also: ": permission denied",
		},
		{
			name:    "binary never ready",
			args:    []string{"-upgrade-timeout", "500ms"},
			breakIt: func(r *faultRig) { writeExec(r.t, r.bin, []byte("#!/bin/sh\nexec sleep 30\n")) },
			want:    "nor became ready within the upgrade timeout, and was killed",
			killed:  true,
		},
		{
			name:    "config does not validate",
			breakIt: func(r *faultRig) { r.writeConfig(rigConfig + "max-conns = -5\n") },
			want:    "max-conns: -5 is negative",
			also:    "max-conns: -5 is negative (child pid=",
		},
		{
			name:    "config unparsable",
			breakIt: func(r *faultRig) { r.writeConfig("listen = [\n") },
			want:    "echod.toml: toml: line 1",
			also:    "unexpected EOF; expected value (child pid=",
		},
		{
			name:    "listen address invalid",
			breakIt: func(r *faultRig) { r.writeConfig(`listen = ["127.0.0.1:99999"]` + "\n") },
			want:    "is not a number from 0 to 65535",
			also:    `bad listen address "127.0.0.1:99999": port "99999" is not a number from 0 to 65535 (child pid=`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := startRig(t, 50, 20*time.Millisecond, tc.args...)
			tc.breakIt(r)
			out := r.reloadFails(strings.ReplaceAll(tc.want, "%BIN%", r.bin))
			if !strings.Contains(out, tc.also) {
				t.Fatalf("echod reload: %q, want it to say %q too", out, tc.also)
			}
			if tc.killed {
				// tableflip killed it at the timeout: nothing of it is left.
				m := regexp.MustCompile(`new child pid=(\d+) timed out`).FindStringSubmatch(out)
				if m == nil {
					t.Fatalf("echod reload: %q, want the pid of the child killed at the timeout", out)
				}
				waitExit(t, atoi(m[1]), 5*time.Second)
			}
			r.servesOnThenRepaired()
			t.Logf("echod reload: %s", out)
		})
	}
}

// TestReloadQueuedWhileDraining: a reload requested while the previous
// generation still drains long-lived connections is not lost: it waits and
// runs once that generation has exited. Several requests meanwhile coalesce.
func TestReloadQueuedWhileDraining(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-migrate=false")
	addr := in.addrs[0]
	streams := make([]*echoConn, 50)
	for i := range streams {
		c := mustEcho(t, "tcp", addr, 32)
		streams[i] = c
	}
	pid1 := in.cmd.Process.Pid
	signalPID(t, pid1, unix.SIGHUP)
	pid2 := in.readyPID(2)
	// Generation 1 drains 50 streams; ask generation 2 three times (over
	// the control socket: three SIGHUPs sent at once may arrive as one).
	answers := make(chan string, 3)
	for range 3 {
		go func() {
			ans, err := in.reload()
			if err != nil {
				ans = "error: " + err.Error()
			}
			answers <- ans
		}()
	}
	// All three are queued behind generation 1's drain (the library says
	// so for each), so they must coalesce into one upgrade.
	in.log.waitFor(t, 10*time.Second, "three queued requests", contains("joins the one waiting", "gen=2 ", "waiting=3"))
	if in.log.has(contains("msg=ready", "gen=3 ")) {
		t.Fatal("generation 3 started while generation 1 still drained")
	}
	for i, c := range streams {
		if err := c.roundTrip(100); err != nil {
			t.Fatalf("stream %d while reload queued: %v", i, err)
		}
		c.Close()
	}
	waitExit(t, pid1, 10*time.Second)
	pid3 := in.readyPID(3)
	if pid3 == pid2 {
		t.Fatal("generation 3 has generation 2's pid")
	}
	// The three requests got the one upgrade's answer.
	for range 3 {
		if ans := <-answers; ans != fmt.Sprintf("pid=%d generation=3", pid3) {
			t.Fatalf("queued reload answered %q, want pid=%d generation=3", ans, pid3)
		}
	}
	waitExit(t, pid2, 10*time.Second)
	var started int
	for _, l := range strings.Split(in.log.String(), "\n") {
		if strings.Contains(l, "upgrade started") && strings.Contains(l, "gen=2 ") {
			started++
		}
	}
	if started != 1 || in.log.has(contains("gen=4 ")) {
		t.Fatalf("three queued SIGHUPs made %d upgrades from generation 2 (want 1, coalesced):\n%s", started, in.log)
	}
	if in.log.has(contains("upgrade failed")) {
		t.Fatalf("an upgrade failed:\n%s", in.log)
	}
}

// TestDrainTimeoutClosesTheRest: at the drain deadline the old generation
// closes what is left, says how many, and exits 0.
func TestDrainTimeoutClosesTheRest(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "300ms")
	var conns []*echoConn
	for range 3 {
		c := mustEcho(t, "tcp", in.addrs[0], 10)
		conns = append(conns, c)
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.log.waitFor(t, 10*time.Second, "drain timeout line", contains("drain timeout", `closed="3 connections"`))
	if err := in.cmd.Wait(); err != nil {
		t.Fatalf("exit after drain timeout: %v, want 0", err)
	}
	for i, c := range conns {
		if err := c.roundTrip(10); err == nil {
			t.Fatalf("connection %d still echoes after the drain deadline", i)
		}
	}
}

// TestLateFailedUpgradeKeepsUnixSocket: a new generation that fails after
// it claimed the inherited listeners (here: a new address that is taken)
// must not remove the Unix socket file the old generation still serves.
func TestLateFailedUpgradeKeepsUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "echo.sock")
	cfg := filepath.Join(dir, "echod.toml")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := os.WriteFile(cfg, []byte(`listen = ["unix:`+sock+`"]`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := startEchod(t, echodBin(t), "-config", cfg)
	if err := os.WriteFile(cfg, []byte(`listen = ["unix:`+sock+`", "`+busy.Addr().String()+`"]`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := in.reload(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("reload: %v, want the new generation's 'address already in use'", err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the failed generation removed the serving Unix socket: %v", err)
	}
	mustEcho(t, "unix", sock, 100)
}
