package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadAddsAndRemovesListeners: listeners added to or removed from the
// config file take effect on reload, without a restart; the ones kept are
// the same sockets.
func TestReloadAddsAndRemovesListeners(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "echod.toml")
	sock := filepath.Join(dir, "b.sock")
	write := func(listen ...string) {
		var q []string
		for _, l := range listen {
			q = append(q, strconv.Quote(l))
		}
		if err := os.WriteFile(cfg, []byte("listen = ["+strings.Join(q, ", ")+"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("127.0.0.1:0")
	in := startEchod(t, echodBin(t), "-config", cfg)
	a := in.addrs[0]
	inodeA := listenInode(t, a)

	// Add a Unix listener.
	write("127.0.0.1:0", "unix:"+sock)
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, "unix", sock, 100).Close()
	mustEcho(t, "tcp", a, 100).Close()
	if got := listenInode(t, a); got != inodeA {
		t.Fatalf("kept listener changed: inode %s, was %s", got, inodeA)
	}

	// Remove the TCP listener: once the generation that still had it is
	// gone, its port refuses and the Unix one serves on.
	write("unix:" + sock)
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	pid2 := in.readyPID(2)
	in.readyPID(3)
	waitExit(t, pid2, 10*time.Second)
	if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
		c.Close()
		t.Fatalf("removed listener %s still accepts", a)
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("removed listener %s: %v, want connection refused", a, err)
	}
	mustEcho(t, "unix", sock, 100)
}

// TestIPv6Listener: a [::1] listener is served and survives a reload.
func TestIPv6Listener(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
	in := startEchod(t, echodBin(t), "-listen", "[::1]:0", "-listen", "tcp4:127.0.0.1:0")
	if len(in.addrs) != 2 || !strings.HasPrefix(in.addrs[0], "[::1]:") {
		t.Fatalf("listeners %v, want [::1] and 127.0.0.1", in.addrs)
	}
	c := mustEcho(t, "tcp6", in.addrs[0], 500)
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	if err := c.roundTrip(500); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, "tcp6", in.addrs[0], 500)
	mustEcho(t, "tcp4", in.addrs[1], 500)
}

// TestOutOfFDs: with a tiny RLIMIT_NOFILE, connections beyond it are not
// lost: accept backs off and retries, they wait in the backlog and are
// served as soon as descriptors are free; echod never exits or stops
// accepting.
func TestOutOfFDs(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `ulimit -n 64 && exec "$@"`, "sh", echodBin(t), "-listen", "127.0.0.1:0", "-control", dir+"/ctl.sock", "-log-level", "debug")
	cmd.Env = cleanEnv()
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	in := &instance{t: t, cmd: cmd, log: newLogWatcher(pr), control: dir + "/ctl.sock"}
	t.Cleanup(in.stopAll)
	l := in.log.waitFor(t, 10*time.Second, "listener", contains("msg=listener"))
	addr := field(addrRe, l)
	in.readyPID(1)

	// More connections than descriptors: the first ones are accepted, the
	// rest stay in the kernel backlog.
	const n = 100
	conns := make([]*echoConn, n)
	for i := range conns {
		c, err := dialEcho("tcp", addr)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	served := 0
	for _, c := range conns[:40] {
		if err := c.roundTrip(10); err != nil {
			t.Fatalf("connection %d: %v", served, err)
		}
		served++
	}
	in.log.waitFor(t, 10*time.Second, "accept back-off", contains("accept failed; retrying", "too many open files"))
	// Free descriptors: every waiting connection is then served.
	for _, c := range conns[:40] {
		c.Close()
	}
	for i, c := range conns[40:] {
		if err := c.roundTrip(10); err != nil {
			t.Fatalf("connection %d waiting for a descriptor: %v", 40+i, err)
		}
		c.Close()
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("echod is gone: %v", err)
	}
	mustEcho(t, "tcp", addr, 10)
}
