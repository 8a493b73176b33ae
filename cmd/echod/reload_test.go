package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadKeepsConnections: 50 connections open mid-conversation survive a
// SIGHUP; the new generation has a new pid and the very same listening
// socket; new connections go to it; the old one exits after its last
// connection closes.
func TestReloadKeepsConnections(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "60s", "-migrate=false")
	addr := in.addrs[0]
	pid1 := in.cmd.Process.Pid
	inode := listenInode(t, addr)
	if !holdsSocket(t, pid1, inode) {
		t.Fatalf("generation 1 (pid %d) does not hold listening socket %s", pid1, inode)
	}

	conns := make([]*echoConn, 50)
	for i := range conns {
		c, err := dialEcho("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.roundTrip(100 + i); err != nil {
			t.Fatalf("conn %d before reload: %v", i, err)
		}
		conns[i] = c
	}

	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pid2 := in.readyPID(2)
	if pid2 == pid1 || pid2 == 0 {
		t.Fatalf("new generation pid %d, old %d: want a new process", pid2, pid1)
	}
	in.log.waitFor(t, 10*time.Second, "generation 1 stopped accepting", contains("stopped accepting", "gen=1 "))
	if got := listenInode(t, addr); got != inode {
		t.Fatalf("listening socket changed across the reload: inode %s, was %s", got, inode)
	}
	if !holdsSocket(t, pid2, inode) {
		t.Fatalf("generation 2 (pid %d) does not hold listening socket %s", pid2, inode)
	}
	// The old generation stopped accepting: it holds the socket no more, so
	// every new connection is the new generation's.
	if holdsSocket(t, pid1, inode) {
		t.Fatalf("draining generation 1 still holds the listening socket")
	}
	if b, err := os.ReadFile(in.pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid2) {
		t.Fatalf("pid file = %q (%v), want %d", b, err, pid2)
	}
	for i := range 20 {
		c, err := dialEcho("tcp", addr)
		if err != nil {
			t.Fatalf("new connection %d after reload: %v", i, err)
		}
		if err := c.roundTrip(1000); err != nil {
			t.Fatalf("new connection %d after reload: %v", i, err)
		}
		c.Close()
	}

	// Every old connection still echoes, several times, until closed.
	for round := range 3 {
		for i, c := range conns {
			if err := c.roundTrip(10 + round*100 + i); err != nil {
				t.Fatalf("old connection %d, round %d after reload: %v", i, round, err)
			}
		}
	}
	if !alive(pid1) {
		t.Fatal("generation 1 exited while its connections were open")
	}
	for _, c := range conns {
		c.Close()
	}
	waitExit(t, pid1, 10*time.Second)
	in.log.waitFor(t, 5*time.Second, "generation 1 draining 50", contains("msg=draining", "gen=1 ", `connections="50 connections"`))
	in.log.waitFor(t, 5*time.Second, "generation 1 drained", contains("msg=drained", "gen=1 "))
	if err := in.cmd.Wait(); err != nil {
		t.Fatalf("generation 1 exit: %v, want status 0", err)
	}
}

// TestReloadStormUnderLoad: 20 reloads in a row while clients connect, echo
// and close without pause: no connection refused, reset or corrupted.
// (Long-lived connections are the next tests' subject: with one open, a
// reload waits for the previous generation's drain.)
func TestReloadStormUnderLoad(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "echo.sock")
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-listen", "unix:"+sock)
	tcp := in.addrs[0]
	inode := listenInode(t, tcp)
	fds1 := fdCount(t, in.cmd.Process.Pid)

	lt := startLoad("tcp", tcp, 4)
	lu := startLoad("unix", sock, 2)
	prev := in.cmd.Process.Pid
	for gen := 2; gen <= 21; gen++ {
		ans, err := in.reload()
		if err != nil {
			t.Fatalf("reload to generation %d: %v\n%s", gen, err, in.log)
		}
		if !strings.Contains(ans, "generation="+strconv.Itoa(gen)) {
			t.Fatalf("reload answer %q, want generation=%d", ans, gen)
		}
		pid := in.readyPID(gen)
		if pid == prev {
			t.Fatalf("generation %d has the pid of its predecessor", gen)
		}
		prev = pid
	}
	okT, failT, errsT := lt.stop()
	okU, failU, errsU := lu.stop()
	t.Logf("tcp: %d ok, %d failed; unix: %d ok, %d failed", okT, failT, okU, failU)
	if failT+failU > 0 {
		t.Fatalf("connections failed across 20 reloads: tcp %d %v, unix %d %v", failT, errsT, failU, errsU)
	}
	if okT == 0 || okU == 0 {
		t.Fatalf("the load made no connection (tcp %d, unix %d)", okT, okU)
	}
	if got := listenInode(t, tcp); got != inode {
		t.Fatalf("listening socket changed: inode %s, was %s", got, inode)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("unix socket file gone after reloads: %v", err)
	}
	// Nothing leaks across generations: once its predecessor is gone, an
	// idle generation 23 holds exactly the descriptors generation 22 held
	// (and at most one more than generation 1: tableflip keeps the
	// hand-over channel it passed until the next upgrade).
	fds := map[int]int{}
	for gen := 22; gen <= 23; gen++ {
		if _, err := in.reload(); err != nil {
			t.Fatal(err)
		}
		waitExit(t, prev, 10*time.Second)
		prev = in.readyPID(gen)
		fds[gen] = settledFDCount(t, prev)
	}
	if fds[23] != fds[22] || fds[22] > fds1+1 {
		t.Fatalf("generation 23 holds %d fds, generation 22 %d, generation 1 %d: %v", fds[23], fds[22], fds1, fdTargets(t, prev))
	}
	// Final stop: the socket file echod bound is removed.
	in.stopAll()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("unix socket file after the final stop: %v, want it removed", err)
	}
}
