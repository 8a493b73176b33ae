package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/echod/echod/daemon"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every client socket operation; the tests normally finish
// in milliseconds, this only keeps a broken server from hanging the run.
const ioTimeout = 10 * time.Second

var networks = []string{"tcp", "unix"}

// notifyListener reports, by closing closed, that the server closed it.
type notifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *notifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

type testServer struct {
	srv      *daemon.Server
	network  string
	addr     string
	serveErr chan error    // receives Serve's result
	lnClosed chan struct{} // closed once the listener is closed
}

func listen(t testing.TB, network string) net.Listener {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	switch network {
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	case "unix":
		ln, err = net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	default:
		t.Fatalf("unknown network %q", network)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// start serves cfg on a fresh listener. The cleanup hard-stops the server
// and checks that Serve returned ErrServerClosed.
func start(t testing.TB, cfg daemon.Config, network string) *testServer {
	t.Helper()
	return startWrapped(t, cfg, network, nil)
}

// startWrapped is start with the listener wrapped by wrap (nil: none).
func startWrapped(t testing.TB, cfg daemon.Config, network string, wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	ln := listen(t, network)
	ts := &testServer{
		srv:      daemon.New(cfg),
		network:  network,
		addr:     ln.Addr().String(),
		serveErr: make(chan error, 1),
		lnClosed: make(chan struct{}),
	}
	var nl net.Listener = &notifyListener{Listener: ln, closed: ts.lnClosed}
	if wrap != nil {
		nl = wrap(nl)
	}
	go func() { ts.serveErr <- ts.srv.Serve(nl) }()
	t.Cleanup(func() {
		closeWithin(t, ts.srv)
		select {
		case err := <-ts.serveErr:
			if !errors.Is(err, daemon.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
			ts.serveErr <- err // leave it for anyone who checks later
		case <-time.After(ioTimeout):
			t.Errorf("Serve did not return after Close")
		}
	})
	return ts
}

// dial connects to the server, with a deadline on every operation; the
// connection is closed when the test ends.
func (ts *testServer) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(ts.network, ts.addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s %s: %v", ts.network, ts.addr, err)
	}
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo writes msg and reads it back concurrently (a large message would
// otherwise deadlock on full socket buffers) and checks the echo.
func echo(c net.Conn, msg []byte) error {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		werr <- err
	}()
	got := make([]byte, len(msg))
	n, rerr := io.ReadFull(c, got)
	if err := <-werr; err != nil {
		return fmt.Errorf("write %d bytes: %w", len(msg), err)
	}
	if rerr != nil {
		return fmt.Errorf("read echo: got %d of %d bytes: %w", n, len(msg), rerr)
	}
	if !bytes.Equal(got, msg) {
		i := 0
		for i < len(msg) && got[i] == msg[i] {
			i++
		}
		return fmt.Errorf("echo of %d bytes differs from byte %d on", len(msg), i)
	}
	return nil
}

func mustEcho(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if err := echo(c, msg); err != nil {
		t.Fatal(err)
	}
}

func payload(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// waitFor polls cond until it holds; it is used only for counters that
// change after the event a client can observe (Stats has no event).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func waitStats(t testing.TB, srv *daemon.Server, what string, ok func(daemon.Stats) bool) daemon.Stats {
	t.Helper()
	var st daemon.Stats
	waitFor(t, what, func() bool { st = srv.Stats(); return ok(st) })
	return st
}

// closeWithin calls Close, failing the test if it does not return nil in
// time, and returns how many connections it cut (Stats.ForceClosed grew by).
func closeWithin(t testing.TB, srv *daemon.Server) int {
	t.Helper()
	before := srv.Stats().ForceClosed
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close = %v, want nil", err)
		}
		return int(srv.Stats().ForceClosed - before)
	case <-time.After(ioTimeout):
		t.Errorf("Close did not return")
		return -1
	}
}

func shutdownAsync(srv *daemon.Server, timeout time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	return done
}

func recvWithin[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestEchoRoundTrip(t *testing.T) {
	sizes := []int{1, 1 << 10, 100 << 10, 1 << 20}
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{}, network)
			c := ts.dial(t)
			var total uint64
			// Twice through the sizes, each message distinct, all on one
			// connection: the echo must keep message boundaries in order.
			for round := range 2 {
				for i, n := range sizes {
					mustEcho(t, c, payload(uint64(round*len(sizes)+i), n))
					total += uint64(n)
				}
			}
			c.Close()
			st := waitStats(t, ts.srv, "connection to finish", func(st daemon.Stats) bool { return st.Closed == 1 })
			if st.Bytes != total || st.Accepted != 1 || st.Active != 0 {
				t.Errorf("Stats = %+v, want Accepted 1, Closed 1, Active 0, Bytes %d", st, total)
			}
		})
	}
}

// TestStatsSnapshot: while connections come and go as fast as 4 clients
// can make them, every Stats snapshot adds up: Accepted+Adopted =
// Active+Closed+Detached (a connection counted Closed is no longer
// Active).
func TestStatsSnapshot(t *testing.T) {
	const clients, each = 4, 500
	ts := start(t, daemon.Config{}, "tcp")
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for range each {
				c, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(ioTimeout))
				err = echo(c, []byte("x"))
				c.Close()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	snapshots := 0
	for running := true; running; snapshots++ {
		select {
		case <-done:
			running = false
		default:
		}
		st := ts.srv.Stats()
		if st.Accepted+st.Adopted != uint64(st.Active)+st.Closed+st.Detached {
			t.Fatalf("snapshot %d does not add up: %+v", snapshots, st)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d snapshots, all consistent", snapshots)
}

func TestEchoManyConcurrentConns(t *testing.T) {
	const conns = 200
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{}, network)
			errs := make(chan error, conns)
			var wg sync.WaitGroup
			var total uint64
			for i := range conns {
				size := 1 + (i*7919)%(48<<10) // distinct sizes, up to 48 KiB
				total += 3 * uint64(size)
				wg.Go(func() {
					c, err := net.DialTimeout(network, ts.addr, ioTimeout)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
						errs <- err
						return
					}
					for m := range 3 {
						msg := payload(uint64(i*3+m), size)
						copy(msg, fmt.Sprintf("conn %d msg %d|", i, m))
						if err := echo(c, msg); err != nil {
							errs <- fmt.Errorf("conn %d msg %d: %w", i, m, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				return
			}
			st := waitStats(t, ts.srv, "all connections to finish", func(st daemon.Stats) bool { return st.Closed == conns })
			if st.Accepted != conns || st.Active != 0 || st.Bytes != total {
				t.Errorf("Stats = %+v, want Accepted %d, Active 0, Bytes %d", st, conns, total)
			}
		})
	}
}

func TestShutdownDrains(t *testing.T) {
	const n = 5
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{}, network)
			conns := make([]net.Conn, n)
			for i := range conns {
				conns[i] = ts.dial(t)
				mustEcho(t, conns[i], payload(uint64(i), 100))
			}

			shut := shutdownAsync(ts.srv, ioTimeout)
			recvWithin(t, ts.lnClosed, "Shutdown to close the listener")

			// Serve returns as soon as its listener is closed, without
			// waiting for the connections.
			if err := recvWithin(t, ts.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
				t.Fatalf("Serve returned %v, want ErrServerClosed", err)
			}
			ts.serveErr <- daemon.ErrServerClosed // for the cleanup

			// New connections are refused ...
			if c, err := net.DialTimeout(network, ts.addr, time.Second); err == nil {
				c.Close()
				t.Fatal("dial succeeded after Shutdown closed the listener")
			} else {
				t.Logf("dial after Shutdown: %v", err)
			}
			// ... while the open ones keep echoing, several messages each.
			for i, c := range conns {
				for m := range 3 {
					mustEcho(t, c, payload(uint64(100+i*3+m), 20<<10))
				}
			}

			for _, c := range conns[:n-1] {
				c.Close()
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned %v with connections still open", err)
				default:
				}
			}
			waitStats(t, ts.srv, "the server to see n-1 closes", func(st daemon.Stats) bool {
				return st.Closed == n-1 && st.Active == 1
			})
			last := conns[n-1]
			mustEcho(t, last, []byte("still here"))
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v with one connection still open", err)
			default:
			}

			last.Close()
			if err := recvWithin(t, shut, "Shutdown to return after the last close"); err != nil {
				t.Fatalf("Shutdown = %v, want nil", err)
			}
			if st := ts.srv.Stats(); st.Active != 0 || st.Closed != n || st.Accepted != n {
				t.Errorf("Stats after Shutdown = %+v", st)
			}
			if got := closeWithin(t, ts.srv); got != 0 {
				t.Errorf("Close after a complete Shutdown closed %d connections, want 0", got)
			}
		})
	}
}

func TestShutdownDeadline(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{}, network)
			c := ts.dial(t)
			mustEcho(t, c, []byte("hello"))

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
			}
			// The connection survived the failed Shutdown.
			mustEcho(t, c, []byte("after deadline"))

			if got := closeWithin(t, ts.srv); got != 1 {
				t.Fatalf("Close = %d, want 1", got)
			}
			buf := make([]byte, 1)
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("client read after Close = %d, %v; want 0, EOF", n, err)
			}
			if err := recvWithin(t, ts.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
				t.Fatalf("Serve = %v, want ErrServerClosed", err)
			}
			ts.serveErr <- daemon.ErrServerClosed // for the cleanup
		})
	}
}

// TestCloseDuringShutdown: Close ends the connections a pending Shutdown is
// waiting for, so Shutdown returns nil.
func TestCloseDuringShutdown(t *testing.T) {
	ts := start(t, daemon.Config{}, "tcp")
	for range 3 {
		mustEcho(t, ts.dial(t), []byte("x"))
	}
	shut := shutdownAsync(ts.srv, ioTimeout)
	recvWithin(t, ts.lnClosed, "Shutdown to close the listener")
	if got := closeWithin(t, ts.srv); got != 3 {
		t.Errorf("Close = %d, want 3", got)
	}
	if err := recvWithin(t, shut, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

// TestShutdownRacesAccept dials and shuts down at once, without waiting for
// the server to accept, so a connection is sometimes still in the kernel
// backlog when the listener closes and sometimes just accepted. Each
// iteration dials a burst of connections and varies the order of Serve,
// Shutdown and the client's write. For every connection, either the whole
// message comes back, or the connection fails without a single byte echoed
// (the kernel resets a connection left in the backlog of a closed
// listener). A connection whose echo started must be served to the end,
// the server must count exactly the connections it echoed, and Shutdown
// must return nil once the clients close.
func TestShutdownRacesAccept(t *testing.T) {
	iterations := 200
	if testing.Short() {
		iterations = 20
	}
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			outcomes := map[string]int{}
			for i := range iterations {
				shutdownRaceOnce(t, network, i, outcomes)
				if t.Failed() {
					break
				}
			}
			t.Logf("%d iterations: %v", iterations, outcomes)
		})
	}
}

func shutdownRaceOnce(t *testing.T, network string, i int, outcomes map[string]int) {
	t.Helper()
	const burst = 3
	srv := daemon.New(daemon.Config{})
	ln := listen(t, network)
	serveErr := make(chan error, 1)
	mode := i % 3
	if mode != 2 {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	conns := make([]net.Conn, burst)
	for k := range conns {
		c, err := net.DialTimeout(network, ln.Addr().String(), ioTimeout)
		if err != nil {
			t.Fatalf("iteration %d: dial: %v", i, err)
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		conns[k] = c
	}

	var shut <-chan error
	switch mode {
	case 0: // Shutdown before the clients write
		shut = shutdownAsync(srv, ioTimeout)
	case 2: // Serve starts only now, racing Shutdown
		go func() { serveErr <- srv.Serve(ln) }()
		shut = shutdownAsync(srv, ioTimeout)
	}
	// 40 KiB: more than two pooled buffers, so a partial echo is possible.
	msgs := make([][]byte, burst)
	werrs := make([]chan error, burst)
	for k, c := range conns {
		msgs[k] = payload(uint64(i*burst+k), 40<<10)
		werrs[k] = make(chan error, 1)
		go func() { _, err := c.Write(msgs[k]); werrs[k] <- err }()
	}
	if shut == nil { // mode 1: Shutdown after the clients wrote
		shut = shutdownAsync(srv, ioTimeout)
	}

	echoed := 0
	for k, c := range conns {
		got := make([]byte, len(msgs[k]))
		n, rerr := io.ReadFull(c, got)
		var outcome string
		switch {
		case rerr == nil:
			if !bytes.Equal(got, msgs[k]) {
				t.Errorf("iteration %d conn %d: echo differs from message", i, k)
			}
			outcome = "echoed"
			echoed++
		case n > 0:
			t.Errorf("iteration %d conn %d: echo started but broke after %d of %d bytes: %v", i, k, n, len(msgs[k]), rerr)
			outcome = "partial"
		case errors.Is(rerr, syscall.ECONNRESET) || rerr == io.EOF:
			// The write may consume the reset first; the read then sees
			// EOF. Stats below proves the server never accepted it.
			outcome = "not accepted: read " + errName(rerr)
		default:
			t.Errorf("iteration %d conn %d: unexpected read error %v", i, k, rerr)
			outcome = "other"
		}
		c.Close()
		werr := <-werrs[k]
		if werr != nil && rerr == nil {
			t.Errorf("iteration %d conn %d: write failed although the echo arrived: %v", i, k, werr)
		}
		if rerr != nil {
			outcome += ", write " + errName(werr)
		}
		outcomes[outcome]++
	}
	if err := recvWithin(t, shut, "Shutdown"); err != nil {
		t.Errorf("iteration %d: Shutdown = %v, want nil", i, err)
	}
	if err := recvWithin(t, serveErr, "Serve"); !errors.Is(err, daemon.ErrServerClosed) {
		t.Errorf("iteration %d: Serve = %v, want ErrServerClosed", i, err)
	}
	st := srv.Stats()
	if st.Active != 0 || st.Accepted != st.Closed || st.Accepted != uint64(echoed) {
		t.Errorf("iteration %d: %d connections echoed; Stats after Shutdown = %+v", i, echoed, st)
	}
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, syscall.EPIPE) {
		return "EPIPE"
	}
	if errors.Is(err, net.ErrClosed) {
		return "interrupted by client close"
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return "ECONNRESET"
	}
	if err == io.EOF {
		return "EOF"
	}
	return err.Error()
}

func TestMaxConns(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{MaxConns: 2}, network)

			// Sample Active for the whole test.
			stop := make(chan struct{})
			maxActive := make(chan int, 1)
			go func() {
				hi := 0
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					hi = max(hi, ts.srv.Stats().Active)
					select {
					case <-stop:
						maxActive <- max(hi, ts.srv.Stats().Active)
						return
					case <-tick.C:
					}
				}
			}()

			c1 := ts.dial(t)
			mustEcho(t, c1, []byte("one"))
			c2 := ts.dial(t)
			mustEcho(t, c2, []byte("two"))

			// The third connection completes in the kernel backlog and
			// its write is buffered, but nobody echoes it.
			c3 := ts.dial(t)
			if _, err := c3.Write([]byte("three")); err != nil {
				t.Fatalf("write on the waiting connection: %v", err)
			}
			if err := c3.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if n, err := c3.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("third connection read = %d, %v; want a timeout (MaxConns 2)", n, err)
			}
			if st := ts.srv.Stats(); st.Active != 2 || st.Accepted != 2 {
				t.Fatalf("Stats with the third waiting = %+v, want Active 2, Accepted 2", st)
			}
			// The two served ones still work.
			mustEcho(t, c2, []byte("two again"))

			c1.Close()
			if err := c3.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c3, buf); err != nil || string(buf) != "three" {
				t.Fatalf("third connection after a slot freed: %q, %v", buf, err)
			}
			mustEcho(t, c3, []byte("three again"))
			mustEcho(t, c2, []byte("two still"))

			// A fourth waits again.
			c4 := ts.dial(t)
			if _, err := c4.Write([]byte("four")); err != nil {
				t.Fatal(err)
			}
			if err := c4.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if n, err := c4.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("fourth connection read = %d, %v; want a timeout", n, err)
			}

			close(stop)
			if hi := <-maxActive; hi > 2 {
				t.Errorf("Stats().Active reached %d, MaxConns is 2", hi)
			}
			if st := ts.srv.Stats(); st.Accepted != 3 || st.Active != 2 || st.Closed != 1 {
				t.Errorf("Stats = %+v, want Accepted 3, Active 2, Closed 1", st)
			}
		})
	}
}

// TestMaxConnsShutdown: an accept loop blocked on MaxConns still returns on
// Shutdown, and the backlogged connection is not served.
func TestMaxConnsShutdown(t *testing.T) {
	ts := start(t, daemon.Config{MaxConns: 1}, "tcp")
	c1 := ts.dial(t)
	mustEcho(t, c1, []byte("one"))
	c2 := ts.dial(t) // waits in the backlog
	shut := shutdownAsync(ts.srv, ioTimeout)
	if err := recvWithin(t, ts.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	ts.serveErr <- daemon.ErrServerClosed // for the cleanup
	mustEcho(t, c1, []byte("drain"))
	buf := make([]byte, 1)
	if n, err := c2.Read(buf); n != 0 || err == nil {
		t.Errorf("backlogged connection read = %d, %v; want an error", n, err)
	} else {
		t.Logf("backlogged connection after Shutdown: %v", err)
	}
	c1.Close()
	if err := recvWithin(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if st := ts.srv.Stats(); st.Accepted != 1 {
		t.Errorf("Stats = %+v, want Accepted 1", st)
	}
}

// TestMaxConnsEveryListenerAccepts: with MaxConns below the number of
// listeners every listener still accepts, because an accept loop holds no
// slot while it waits in Accept. Clients come one at a time, each on the
// next listener, forward and then back (so one listener is also asked twice
// in a row), and each must be served while the others' loops sit idle.
func TestMaxConnsEveryListenerAccepts(t *testing.T) {
	const listeners = 3
	srv := daemon.New(daemon.Config{MaxConns: 1})
	serveErr := make(chan error, listeners)
	addrs := make([]net.Addr, listeners)
	for i := range addrs {
		ln := listen(t, "tcp")
		addrs[i] = ln.Addr()
		go func() { serveErr <- srv.Serve(ln) }()
	}
	t.Cleanup(func() {
		closeWithin(t, srv)
		for range listeners {
			if err := recvWithin(t, serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		}
	})

	order := []int{0, 1, 2, 2, 1, 0}
	for k, i := range order {
		c, err := net.DialTimeout("tcp", addrs[i].String(), ioTimeout)
		if err != nil {
			t.Fatalf("client %d: dial listener %d: %v", k, i, err)
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		if err := echo(c, fmt.Appendf(nil, "client %d on listener %d", k, i)); err != nil {
			t.Fatalf("client %d on listener %d not served (MaxConns 1, %d listeners): %v", k, i, listeners, err)
		}
		c.Close()
		waitStats(t, srv, "the connection to finish", func(st daemon.Stats) bool {
			return st.Closed == uint64(k+1) && st.Active == 0
		})
	}
	if st := srv.Stats(); st.Accepted != uint64(len(order)) {
		t.Errorf("Stats = %+v, want Accepted %d", st, len(order))
	}
}

// TestMaxConnsTwoListeners: MaxConns 1 with two listeners whose loops both
// wait in Accept. A client on the second listener while the first one's
// client is served is not served (its loop may have accepted it, but holds
// it unserved) until the first client leaves. On Shutdown a client waiting
// that way is closed unserved, whether its loop accepted it or it sat in
// the backlog, and the served one drains.
func TestMaxConnsTwoListeners(t *testing.T) {
	srv := daemon.New(daemon.Config{MaxConns: 1})
	serveErr := make(chan error, 2)
	var addrs [2]string
	for i := range addrs {
		ln := listen(t, "tcp")
		addrs[i] = ln.Addr().String()
		go func() { serveErr <- srv.Serve(ln) }()
	}
	t.Cleanup(func() { closeWithin(t, srv) })
	dial := func(i int) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addrs[i], ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// notServed checks that c's message is not echoed within 200ms.
	notServed := func(c net.Conn, what string) {
		t.Helper()
		if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if n, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: read = %d, %v; want a timeout (MaxConns 1)", what, n, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
	}

	a := dial(0)
	mustEcho(t, a, []byte("a"))
	b := dial(1)
	if _, err := b.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	notServed(b, "client on the second listener while the first is served")
	if st := srv.Stats(); st.Active != 1 || st.Accepted != 1 {
		t.Fatalf("Stats = %+v, want Active 1, Accepted 1", st)
	}
	a.Close()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(b, buf); err != nil || buf[0] != 'b' {
		t.Fatalf("second client after the first left: %q, %v", buf, err)
	}
	mustEcho(t, b, []byte("b again"))

	// b holds the slot; c waits on the first listener.
	c := dial(0)
	if _, err := c.Write([]byte("c")); err != nil {
		t.Fatal(err)
	}
	notServed(c, "client on the first listener while the second is served")
	shut := shutdownAsync(srv, ioTimeout)
	for range 2 {
		if err := recvWithin(t, serveErr, "Serve"); !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	}
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Errorf("waiting client after Shutdown: read = %d, %v; want an error and no byte", n, err)
	} else {
		t.Logf("waiting client after Shutdown: %v", err)
	}
	mustEcho(t, b, []byte("draining"))
	b.Close()
	if err := recvWithin(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	const echoed = uint64(len("a" + "b" + "b again" + "draining"))
	if st := srv.Stats(); st != (daemon.Stats{Accepted: 2, Closed: 2, Bytes: echoed}) {
		t.Errorf("Stats = %+v, want Accepted 2, Closed 2, Bytes %d", st, echoed)
	}
}

// TestIdleTimeout: a silent connection is closed after IdleTimeout while
// one that sends every 20ms stays open past 3×IdleTimeout. A client that
// pings every 20ms can still look idle for 100ms when the machine stalls
// this process (tests share a loaded machine), so the active half is tried
// up to three times; a server that closes active connections fails every
// attempt. The silent half asserts only lower bounds and a generous upper
// one, and is checked every time.
func TestIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			const attempts = 3
			for attempt := 1; ; attempt++ {
				err := idleAttempt(t, network, idle)
				if err == nil {
					break
				}
				if attempt == attempts {
					t.Fatalf("active connection closed in all %d attempts; last: %v", attempts, err)
				}
				t.Logf("attempt %d: active connection: %v; retrying", attempt, err)
			}
		})
	}
}

// idleAttempt fails the test if the silent connection is not closed as it
// should be, and returns an error if the active one was closed.
func idleAttempt(t *testing.T, network string, idle time.Duration) error {
	t.Helper()
	ts := start(t, daemon.Config{IdleTimeout: idle}, network)

	begin := time.Now()
	silent := ts.dial(t)
	active := ts.dial(t)

	// The active connection sends every 20ms for 4×idle; every message
	// must come back. maxGap is the longest the server could have seen
	// it silent: from before one ping's write to after the next one's.
	type result struct {
		err    error
		maxGap time.Duration
	}
	activeRes := make(chan result, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var maxGap time.Duration
		prev := time.Now()
		for i := 0; time.Since(begin) < 4*idle; i++ {
			msg := fmt.Appendf(nil, "ping %d", i)
			start := time.Now()
			_, err := active.Write(msg)
			maxGap = max(maxGap, time.Since(prev))
			prev = start
			if err == nil {
				got := make([]byte, len(msg))
				if _, err = io.ReadFull(active, got); err == nil && !bytes.Equal(got, msg) {
					err = fmt.Errorf("echo %q, want %q", got, msg)
				}
			}
			if err != nil {
				activeRes <- result{fmt.Errorf("ping %d at %v (longest silence %v): %w", i, time.Since(begin), maxGap, err), maxGap}
				return
			}
			<-tick.C
		}
		activeRes <- result{nil, maxGap}
	}()

	buf := make([]byte, 1)
	n, err := silent.Read(buf)
	elapsed := time.Since(begin)
	if n != 0 || err != io.EOF {
		t.Fatalf("silent connection read = %d, %v; want EOF from the idle timeout", n, err)
	}
	if elapsed < idle {
		t.Fatalf("silent connection closed after %v, before the %v idle timeout", elapsed, idle)
	}
	t.Logf("silent connection closed after %v", elapsed)

	res := recvWithin(t, activeRes, "active connection")
	if res.err != nil {
		return res.err
	}
	t.Logf("active connection: longest silence %v", res.maxGap)
	mustEcho(t, active, []byte("still open"))
	if st := ts.srv.Stats(); st.Active != 1 || st.Closed != 1 {
		t.Fatalf("Stats = %+v, want Active 1, Closed 1", st)
	}
	return nil
}

func TestStats(t *testing.T) {
	ts := start(t, daemon.Config{}, "tcp")
	if st := ts.srv.Stats(); st != (daemon.Stats{}) {
		t.Fatalf("fresh Stats = %+v", st)
	}
	conns := []net.Conn{ts.dial(t), ts.dial(t), ts.dial(t)}
	var want uint64
	for i, c := range conns {
		for m := range i + 1 {
			n := 1000*(i+1) + m
			mustEcho(t, c, payload(uint64(10*i+m), n))
			want += uint64(n)
		}
	}
	// A client sees its echo just before the server adds it to Bytes.
	st := waitStats(t, ts.srv, "Bytes", func(st daemon.Stats) bool { return st.Bytes >= want })
	if st != (daemon.Stats{Active: 3, Accepted: 3, Closed: 0, Bytes: want}) {
		t.Fatalf("Stats = %+v, want Active 3, Accepted 3, Closed 0, Bytes %d", st, want)
	}

	conns[0].Close()
	st = waitStats(t, ts.srv, "one close", func(st daemon.Stats) bool { return st.Closed >= 1 })
	if st != (daemon.Stats{Active: 2, Accepted: 3, Closed: 1, Bytes: want}) {
		t.Fatalf("Stats after one close = %+v", st)
	}

	c := ts.dial(t)
	mustEcho(t, c, []byte("12345"))
	want += 5
	conns = append(conns[1:], c)
	for _, c := range conns {
		c.Close()
	}
	st = waitStats(t, ts.srv, "all closes", func(st daemon.Stats) bool { return st.Closed >= 4 && st.Bytes >= want })
	if st != (daemon.Stats{Active: 0, Accepted: 4, Closed: 4, Bytes: want}) {
		t.Fatalf("Stats after all closed = %+v, want Accepted 4, Closed 4, Bytes %d", st, want)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	for _, stop := range []string{"Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			srv := daemon.New(daemon.Config{})
			if stop == "Shutdown" {
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				defer cancel()
				if err := srv.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown of an idle server = %v", err)
				}
			} else if n := closeWithin(t, srv); n != 0 {
				t.Fatalf("Close of an idle server = %d", n)
			}
			ln := listen(t, "tcp")
			serveErr := make(chan error, 1)
			go func() { serveErr <- srv.Serve(ln) }()
			if err := recvWithin(t, serveErr, "Serve"); !errors.Is(err, daemon.ErrServerClosed) {
				t.Fatalf("Serve after %s = %v, want ErrServerClosed", stop, err)
			}
			// Serve owns the listener and closed it.
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept on the listener after Serve returned: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestSeveralListeners: one server on a TCP and a Unix listener; Shutdown
// closes both and both Serve calls return.
func TestSeveralListeners(t *testing.T) {
	srv := daemon.New(daemon.Config{MaxConns: 4})
	var (
		addrs    []net.Addr
		serveErr = make(chan error, 2)
	)
	for _, network := range networks {
		ln := listen(t, network)
		addrs = append(addrs, ln.Addr())
		go func() { serveErr <- srv.Serve(ln) }()
	}
	t.Cleanup(func() { closeWithin(t, srv) })
	var conns []net.Conn
	for _, a := range addrs {
		c, err := net.DialTimeout(a.Network(), a.String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		mustEcho(t, c, []byte(a.Network()))
		conns = append(conns, c)
	}
	shut := shutdownAsync(srv, ioTimeout)
	for range 2 {
		if err := recvWithin(t, serveErr, "Serve"); !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	}
	for _, c := range conns {
		mustEcho(t, c, []byte("draining"))
		c.Close()
	}
	if err := recvWithin(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

// TestWriteTimeout: a client that sends a lot and never reads fills the
// socket buffers; the server's write times out after WriteTimeout and the
// connection is closed.
func TestWriteTimeout(t *testing.T) {
	const wt = 200 * time.Millisecond
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{WriteTimeout: wt}, network)
			other := ts.dial(t)
			mustEcho(t, other, []byte("bystander"))

			c := ts.dial(t)
			begin := time.Now()
			written := make(chan int64, 1)
			go func() {
				// Write until the server gives up on us (the write then
				// fails) or the deadline.
				chunk := payload(1, 256<<10)
				var total int64
				for {
					n, err := c.Write(chunk)
					total += int64(n)
					if err != nil {
						written <- total
						return
					}
				}
			}()
			waitStats(t, ts.srv, "the stuck connection to be closed", func(st daemon.Stats) bool {
				return st.Closed == 1
			})
			elapsed := time.Since(begin)
			if elapsed < wt {
				t.Errorf("stuck connection closed after %v, before WriteTimeout %v", elapsed, wt)
			}
			st := ts.srv.Stats()
			if st.Active != 1 || st.Accepted != 2 {
				t.Errorf("Stats = %+v, want Active 1 (the bystander), Accepted 2", st)
			}
			t.Logf("stuck connection closed after %v; client wrote %d bytes before it saw the close", elapsed, recvWithin(t, written, "the writer to fail"))
			// The other connection is unaffected.
			mustEcho(t, other, []byte("still fine"))
		})
	}
}

// TestHalfClose: a client that sends everything, shuts down its write side
// and then reads gets the whole echo followed by EOF.
func TestHalfClose(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{}, network)
			c := ts.dial(t)
			msg := payload(7, 1<<20)
			werr := make(chan error, 1)
			go func() {
				if _, err := c.Write(msg); err != nil {
					werr <- err
					return
				}
				werr <- c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read after half-close: %v (got %d bytes)", err, len(got))
			}
			if err := recvWithin(t, werr, "writer"); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo of %d bytes: got %d bytes, equal prefix: %v", len(msg), len(got), bytes.HasPrefix(msg, got))
			}
			waitStats(t, ts.srv, "the server to close", func(st daemon.Stats) bool { return st.Closed == 1 && st.Active == 0 })
		})
	}
}
