package main

// Hostile clients (issue "Reliability and security"): clients that never
// read, that connect and reset as fast as they can, that half-close. Each
// test runs them beside well-behaved clients — long-lived streams and
// short-connection load — which must not notice.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// vmRSSKiB is process pid's resident set, from /proc/PID/status.
func vmRSSKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestClientsThatNeverRead: 100 clients send as fast as they can and
// never read. echod applies backpressure — it reads no more from a client
// than it can write back, so every one of them ends up blocked in its
// write (the kernel buffers full both ways) — its RSS stays within
// 64 MiB of what it was, and everyone else is served meanwhile: streams
// keep their bytes, short connections all succeed, a new client echoes.
// (What the kernel buffers for each — about 5 MiB here, mostly echod's
// autotuned receive buffer, the hostile clients' own being 64 KiB — is
// not in echod's RSS: the kernel bounds it, tcp_rmem and tcp_wmem.)
func TestClientsThatNeverRead(t *testing.T) {
	const hostile = 100
	const drained = 10 // of them, that finally read everything back
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0")
	addr, pid := in.addrs[0], in.cmd.Process.Pid
	st := mustStreams(t, "tcp", addr, 20, 20*time.Millisecond)
	rss0 := vmRSSKiB(t, pid)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var blocked, written atomic.Int64
	errc := make(chan error, hostile)
	chunk := make([]byte, 64<<10)
	rand.Read(chunk)
	for i := range hostile {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("hostile client %d: %v", i, err)
		}
		tc := c.(*net.TCPConn)
		tc.SetReadBuffer(64 << 10)
		tc.SetWriteBuffer(64 << 10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			counted := false
			sent := sha256.New() // what this client wrote, in order
			var sentN int64
			for {
				select {
				case <-stop:
					if i < drained {
						if err := drainEcho(tc, sentN, sent.Sum(nil)); err != nil {
							errc <- fmt.Errorf("hostile client %d, drained after the reload: %w", i, err)
						}
					}
					return
				default:
				}
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := c.Write(chunk)
				written.Add(int64(n))
				sent.Write(chunk[:n])
				sentN += int64(n)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if !counted {
						counted = true
						blocked.Add(1)
					}
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("hostile client %d: %w", i, err)
					return
				}
			}
		}()
	}
	var stopOnce sync.Once
	stopClients := func() {
		stopOnce.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	defer stopClients()
	ld := startLoad("tcp", addr, 4)
	// Every hostile client blocked: echod stopped reading from it.
	for deadline := time.Now().Add(20 * time.Second); blocked.Load() < hostile; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients that never read were ever blocked in a write within 20s (%d bytes written)", blocked.Load(), hostile, written.Load())
		}
	}
	// Send forever: they go on trying for a while; the rest is served.
	w0 := written.Load()
	waitRounds(t, st, 40)
	for range 10 {
		mustEcho(t, "tcp", addr, 32<<10).Close()
	}
	waitLoadProgress(t, "the load beside clients that never read", ld, ld.ok.Load()+100)
	rss1 := vmRSSKiB(t, pid)
	select {
	case err := <-errc:
		t.Fatalf("a client that never reads was cut off: %v", err)
	default:
	}
	if d := rss1 - rss0; d > 64<<10 {
		t.Fatalf("echod's RSS grew by %d KiB (from %d to %d) with %d clients that never read, want at most 64 MiB", d, rss0, rss1, hostile)
	}
	// A reload with every one of them blocked: each moves with the bytes
	// echod read and has not written back yet, none is cut off, and the
	// previous generation exits at once (nothing left to drain).
	ans, err := in.reload()
	if err != nil {
		t.Fatalf("reload with %d clients that never read: %v\n%s", hostile, err, in.log)
	}
	if m := movedRe.FindStringSubmatch(ans); m == nil || atoi(m[1]) < hostile+20 || m[2] != "0" {
		t.Fatalf("reload answered %q, want moved=%d or more draining=0", ans, hostile+20)
	}
	waitExit(t, pid, 10*time.Second)
	waitRounds(t, st, 40)
	// Now 10 of them stop writing, half-close, and read everything back:
	// the exact bytes each wrote, those generation 1 had read and not yet
	// written back included; and none of the others was cut off.
	stopClients()
	select {
	case err := <-errc:
		t.Fatalf("a client that never read, after the reload: %v", err)
	default:
	}
	stopLoad(t, addr, ld)
	st.closeIntact(t)
	t.Logf("%d clients that never read: %d bytes written in all (%d KiB each), %d since every one was blocked; echod RSS %d → %d KiB; reload: %s", hostile, written.Load(), written.Load()/hostile>>10, written.Load()-w0, rss0, rss1, ans)
}

// drainEcho half-closes c and reads the echo of everything sent to it (n
// bytes whose SHA-256 is sum) until EOF, bounded.
func drainEcho(c *net.TCPConn, n int64, sum []byte) error {
	if err := c.CloseWrite(); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := sha256.New()
	m, err := io.Copy(got, c)
	if err != nil {
		return fmt.Errorf("after %d of %d bytes: %w", m, n, err)
	}
	if m != n || !bytes.Equal(got.Sum(nil), sum) {
		return fmt.Errorf("%d bytes back (SHA-256 %x), want the %d sent (%x)", m, got.Sum(nil), n, sum)
	}
	return nil
}

// TestClientsThatNeverSend: 100 clients connect and stay silent beside
// streams and short-connection load. Two reloads move every one of them with the streams (the
// previous generation exits at once: nothing to drain), and afterwards
// each silent connection is open and echoes what it finally sends.
// (Closing them after a while is -idle-timeout's job: daemon's
// TestIdleTimeout.)
func TestClientsThatNeverSend(t *testing.T) {
	const silent, n = 100, 20
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0")
	addr := in.addrs[0]
	st, err := startStreams("tcp", addr, n, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ld := startLoad("tcp", addr, 2)
	defer ld.stop()
	quiet := make([]*echoConn, silent)
	for i := range quiet {
		if quiet[i], err = dialEcho("tcp", addr); err != nil {
			t.Fatalf("silent client %d: %v", i, err)
		}
		defer quiet[i].Close()
	}
	pid := in.cmd.Process.Pid
	for gen := 2; gen <= 3; gen++ {
		ans, err := in.reload()
		if err != nil {
			t.Fatalf("reload to generation %d: %v\n%s", gen, err, in.log)
		}
		if m := movedRe.FindStringSubmatch(ans); m == nil || atoi(m[1]) < silent+n || m[2] != "0" {
			t.Fatalf("reload to generation %d answered %q, want moved=%d or more draining=0", gen, ans, silent+n)
		}
		waitExit(t, pid, 10*time.Second)
		pid = in.readyPID(gen)
		waitRounds(t, st, n)
	}
	for i, c := range quiet {
		if err := c.roundTrip(1024); err != nil {
			t.Fatalf("silent client %d, after two reloads: %v", i, err)
		}
	}
	stopLoad(t, addr, ld)
	st.closeIntact(t)
}

// TestConnectResetFlood: for 10 s, 3 goroutines connect and at once close
// with SO_LINGER 0 (a reset), as fast as they can. Accepting keeps up —
// no connect of the flood or of the short-connection load fails, a client
// doing a round trip every 20 ms is served throughout, no accept error is
// logged — and nothing leaks: once the flood is over echod holds exactly
// the descriptors it held before.
func TestConnectResetFlood(t *testing.T) {
	const flooders, dur = 3, 10 * time.Second
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0")
	addr, pid := in.addrs[0], in.cmd.Process.Pid
	st := mustStreams(t, "tcp", addr, 20, 20*time.Millisecond)
	normal := mustEcho(t, "tcp", addr, 100)
	fds0 := fdCount(t, pid)

	ld := startLoad("tcp", addr, 2)
	var resets, dialErrs atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	for range flooders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				resets.Add(1)
			}
		}()
	}
	var worst time.Duration
	rounds := 0
	for time.Now().Before(end) {
		start := time.Now()
		if err := normal.roundTrip(100); err != nil {
			t.Fatalf("the normal client during the flood, after %d round trips: %v", rounds, err)
		}
		worst = max(worst, time.Since(start))
		rounds++
		time.Sleep(20 * time.Millisecond) // pacing
	}
	wg.Wait()
	stopLoad(t, addr, ld)
	if n := dialErrs.Load(); n > 0 {
		t.Fatalf("%d connects of the flood failed (of %d)", n, n+resets.Load())
	}
	if in.log.has(contains("accept failed")) {
		t.Fatalf("accept failed during the flood:\n%s", in.log)
	}
	// Every reset connection closed in echod (bounded polling: the last
	// ones may still be in its accept queue).
	fds := fdCount(t, pid)
	for deadline := time.Now().Add(5 * time.Second); fds != fds0 && time.Now().Before(deadline); fds = fdCount(t, pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if fds != fds0 {
		t.Fatalf("echod holds %d descriptors after the flood, %d before: %v", fds, fds0, fdTargets(t, pid))
	}
	if err := normal.roundTrip(100); err != nil {
		t.Fatalf("the normal client after the flood: %v", err)
	}
	st.closeIntact(t)
	t.Logf("%d connect-and-reset in %v (%.0f/s) from %d goroutines; the normal client: %d round trips, worst %v; echod fds %d before and after", resets.Load(), dur, float64(resets.Load())/dur.Seconds(), flooders, rounds, worst.Round(time.Microsecond), fds0)
}

// halfClose sends msg on c, closes its write side (FIN) and checks that
// exactly msg comes back, then EOF. It closes wrote once it has written
// min(len(msg), 128 KiB), and starts reading only once release is closed,
// so the echo can be left in flight.
func halfClose(c net.Conn, msg []byte, wrote chan<- struct{}, release <-chan struct{}) error {
	werr := make(chan error, 1)
	go func() {
		mark := min(len(msg), 128<<10)
		for off := 0; ; {
			if off >= mark && wrote != nil {
				close(wrote)
				wrote = nil
			}
			if off == len(msg) {
				break
			}
			n, err := c.Write(msg[off:min(off+32<<10, len(msg))])
			off += n
			if err != nil {
				werr <- fmt.Errorf("write: %w", err)
				return
			}
		}
		werr <- c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	<-release
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c) // until EOF
	if err != nil {
		return fmt.Errorf("read after %d of %d bytes: %w", len(got), len(msg), err)
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%d bytes came back for %d sent, not the same", len(got), len(msg))
	}
	return nil
}

// TestHalfCloseEchoesEverything: a client that sends and then closes its
// write side gets every byte back, then EOF — on TCP and on a Unix socket,
// from 0 bytes to 8 MiB; and the same across a reload for clients whose
// echo is still in flight (32 MiB on TCP, 4 MiB on the Unix socket: more
// than the socket buffers hold, and they read nothing until the new
// generation serves them): the bytes echod read and could not write back
// move with the connection, and the EOF after them is read by the new
// generation.
func TestHalfCloseEchoesEverything(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "echo.sock")
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-listen", "unix:"+sock)
	addr := in.addrs[0]
	st, err := startStreams("tcp", addr, 20, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ld := startLoad("tcp", addr, 2)
	defer ld.stop()
	type client struct {
		network, addr string
		size          int
	}
	clients := func(sizes map[string][]int) []client {
		var cs []client
		for _, nw := range []struct{ network, addr string }{{"tcp", addr}, {"unix", sock}} {
			for _, size := range sizes[nw.network] {
				cs = append(cs, client{nw.network, nw.addr, size})
			}
		}
		return cs
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseAll() // no client is left waiting if the test fails
	// run starts every client, each reading once release is closed; it
	// returns once each has written its first 128 KiB (or all of it).
	run := func(cs []client, release <-chan struct{}) <-chan error {
		errc := make(chan error, len(cs))
		var wrote []chan struct{}
		for _, cl := range cs {
			c, err := net.DialTimeout(cl.network, cl.addr, 5*time.Second)
			if err != nil {
				t.Fatalf("%s %d bytes: %v", cl.network, cl.size, err)
			}
			msg := make([]byte, cl.size)
			rand.Read(msg)
			w := make(chan struct{})
			wrote = append(wrote, w)
			go func() {
				defer c.Close()
				if err := halfClose(c, msg, w, release); err != nil {
					errc <- fmt.Errorf("%s %d bytes: %w", cl.network, cl.size, err)
					return
				}
				errc <- nil
			}()
		}
		for i, w := range wrote {
			select {
			case <-w:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s %d bytes: could not write its first 128 KiB within 10s", cs[i].network, cs[i].size)
			}
		}
		return errc
	}
	wait := func(what string, n int, errc <-chan error) {
		t.Helper()
		for range n {
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("%s: a half-closed client still waiting after 60s", what)
			}
		}
	}

	now := make(chan struct{})
	close(now)
	plain := clients(map[string][]int{"tcp": {0, 1, 100, 64 << 10, 1 << 20, 8 << 20}, "unix": {0, 1, 100, 64 << 10, 1 << 20, 8 << 20}})
	wait("half-close", len(plain), run(plain, now))

	// In flight across a reload.
	moving := clients(map[string][]int{"tcp": {0, 100, 64 << 10, 32 << 20}, "unix": {0, 100, 64 << 10, 4 << 20}})
	errc := run(moving, release)
	ans, err := in.reload()
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The streams, and the two echoes that cannot have ended.
	if m := movedRe.FindStringSubmatch(ans); m == nil || atoi(m[1]) < 20+2 || m[2] != "0" {
		t.Fatalf("reload answered %q, want moved=22 or more (20 streams, 2 echoes in flight) draining=0", ans)
	}
	in.readyPID(2)
	releaseAll()
	wait("half-close across a reload", len(moving), errc)

	stopLoad(t, addr, ld)
	st.closeIntact(t)
	t.Logf("%d half-closed clients echoed in full; %d more across a reload (%s)", len(plain), len(moving), ans)
}
