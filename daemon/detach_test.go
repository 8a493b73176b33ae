//go:build linux

package daemon_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

// detach calls srv.Detach with a bounded context and fails the test on an
// error.
func detach(t testing.TB, srv *daemon.Server) []daemon.DetachedConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conns, err := srv.Detach(ctx)
	if err != nil {
		closeDetached(conns)
		t.Fatalf("Detach = %d connections, %v", len(conns), err)
	}
	return conns
}

// stream is a client that writes 8-byte big-endian counters 0, 1, 2, ...
// without pause and checks that what comes back is exactly that sequence.
// The writer stays at most window chunks ahead of the reader, so that
// the bytes in flight stay few and the test finishes fast.
type stream struct {
	warm   chan struct{} // closed once warmCounters came back
	stop   chan struct{} // closed by the test: write a tail, then half-close
	result chan error    // the reader's verdict, once it saw EOF
	wrote  uint64        // counters written; valid once result arrived
}

const (
	warmCounters  = 1024 // echoed before the test detaches
	tailCounters  = 2048 // written after stop, through the adopting server
	chunkCounters = 128  // counters per write
	window        = 16   // chunks written and not yet read back, at most
)

func startStream(c net.Conn) *stream {
	s := &stream{warm: make(chan struct{}), stop: make(chan struct{}), result: make(chan error, 1)}
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	readerDone := make(chan struct{})
	wrote := make(chan uint64, 1)
	go func() {
		var n uint64
		defer func() { wrote <- n }()
		buf := make([]byte, 8*chunkCounters)
		write := func() bool {
			select {
			case <-credit:
			case <-readerDone:
				return false
			}
			for i := range chunkCounters {
				binary.BigEndian.PutUint64(buf[8*i:], n+uint64(i))
			}
			if err := c.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
				return false
			}
			if _, err := c.Write(buf); err != nil {
				return false // the reader reports the break
			}
			n += chunkCounters
			return true
		}
		for {
			select {
			case <-s.stop:
				for range tailCounters / chunkCounters {
					if !write() {
						return
					}
				}
				_ = c.(interface{ CloseWrite() error }).CloseWrite()
				return
			default:
				if !write() {
					return
				}
			}
		}
	}()
	go func() {
		stopWriter := sync.OnceFunc(func() { close(readerDone) })
		defer stopWriter()
		r := bufio.NewReaderSize(c, 16<<10)
		var want uint64
		var b [8]byte
		for {
			if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
				s.result <- err
				return
			}
			if _, err := io.ReadFull(r, b[:]); err != nil {
				stopWriter() // one blocked waiting for credit returns
				w := <-wrote
				s.wrote = w
				switch {
				case err != io.EOF:
					s.result <- fmt.Errorf("read after %d of %d counters: %w", want, w, err)
				case want != w:
					s.result <- fmt.Errorf("EOF after %d counters, %d written", want, w)
				default:
					s.result <- nil
				}
				return
			}
			if got := binary.BigEndian.Uint64(b[:]); got != want {
				s.result <- fmt.Errorf("counter %d came back as %d", want, got)
				return
			}
			want++
			if want%chunkCounters == 0 {
				credit <- struct{}{}
			}
			if want == warmCounters {
				close(s.warm)
			}
		}
	}()
	return s
}

// warmStreams dials n clients of ts (all first: running streams slow the
// dials down), starts a stream on each and waits until each had its first
// counters echoed.
func warmStreams(t *testing.T, ts *testServer, n int) []*stream {
	t.Helper()
	clients := make([]net.Conn, n)
	for i := range clients {
		clients[i] = ts.dial(t)
	}
	streams := make([]*stream, n)
	for i, c := range clients {
		streams[i] = startStream(c)
	}
	for i, s := range streams {
		select {
		case <-s.warm:
		case err := <-s.result:
			t.Fatalf("stream %d before the detach: %v", i, err)
		case <-time.After(ioTimeout):
			t.Fatalf("stream %d: no echo before the detach", i)
		}
	}
	return streams
}

// endStreams stops the streams, checks each got exactly its counters
// back, and returns how many bytes they wrote in all.
func endStreams(t *testing.T, streams []*stream) (total uint64) {
	t.Helper()
	for _, s := range streams {
		close(s.stop)
	}
	for i, s := range streams {
		if err := recvWithin(t, s.result, "a stream to end"); err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
		total += 8 * s.wrote
	}
	return total
}

// TestDetachMigrate moves 200 busy client streams from one server to
// another: every client writes counters without pause, server a serves
// them, a.Detach takes them out at a safe point, server b adopts them and
// the clients go on. Each client must get back exactly its sequence (no
// gap, no duplicate, no reorder) and never see an EOF or a reset before
// its own half-close.
func TestDetachMigrate(t *testing.T) {
	const n = 200
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			a := start(t, daemon.Config{}, network)
			streams := warmStreams(t, a, n)

			begin := time.Now()
			conns := detach(t, a.srv)
			took := time.Since(begin)
			if err := recvWithin(t, a.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
				t.Fatalf("Serve after Detach = %v, want ErrServerClosed", err)
			}
			a.serveErr <- daemon.ErrServerClosed // for the cleanup
			if len(conns) != n {
				closeDetached(conns)
				t.Fatalf("Detach returned %d connections, want %d", len(conns), n)
			}
			withState, stateBytes := 0, 0
			for _, d := range conns {
				if len(d.State) > 0 {
					withState++
					stateBytes += len(d.State)
				}
			}
			t.Logf("Detach of %d busy streams took %v; %d carried state (%d bytes)", n, took, withState, stateBytes)
			if st := a.srv.Stats(); st.Detached != n || st.Active != 0 || st.Closed != 0 || st.Accepted != n {
				t.Errorf("old server Stats = %+v, want Accepted %d, Detached %d, Active 0, Closed 0", st, n, n)
			}

			b := daemon.New(daemon.Config{})
			t.Cleanup(func() { closeWithin(t, b) })
			adopt(t, b, conns)

			total := endStreams(t, streams)
			st := waitStats(t, b, "every stream to end", func(st daemon.Stats) bool { return st.Closed == n })
			if st.Adopted != n || st.Active != 0 {
				t.Errorf("new server Stats = %+v, want Adopted %d, Closed %d", st, n, n)
			}
			// What each server echoed adds up to what the clients wrote:
			// nothing was written twice.
			if got := a.srv.Stats().Bytes + st.Bytes; got != total {
				t.Errorf("servers echoed %d bytes (%d + %d), clients wrote %d", got, a.srv.Stats().Bytes, st.Bytes, total)
			}
		})
	}
}

// TestDetachNBatches moves 100 busy streams in batches of 16 with DetachN:
// each call takes at most 16, the streams not taken yet go on being served
// by the old server meanwhile (their handlers see the cancelled context
// and are resumed in place), and every client gets exactly its sequence
// back. DetachN returns nothing, and no error, once none is left.
func TestDetachNBatches(t *testing.T) {
	const n, batch = 100, 16
	a := start(t, daemon.Config{}, "tcp")
	streams := warmStreams(t, a, n)
	b := daemon.New(daemon.Config{})
	t.Cleanup(func() { closeWithin(t, b) })
	moved, calls := 0, 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		conns, err := a.srv.DetachN(ctx, batch)
		cancel()
		if err != nil {
			closeDetached(conns)
			t.Fatalf("DetachN after %d moved: %v", moved, err)
		}
		if len(conns) == 0 {
			break
		}
		calls++
		if len(conns) > batch {
			closeDetached(conns)
			t.Fatalf("DetachN(%d) returned %d connections", batch, len(conns))
		}
		if st := a.srv.Stats(); st.Active != n-moved-len(conns) {
			t.Fatalf("after taking %d: old server Active = %d, want %d", moved+len(conns), st.Active, n-moved-len(conns))
		}
		adopt(t, b, conns)
		moved += len(conns)
	}
	if moved != n || calls != (n+batch-1)/batch {
		t.Fatalf("moved %d in %d calls, want %d in %d", moved, calls, n, (n+batch-1)/batch)
	}
	total := endStreams(t, streams)
	st := waitStats(t, b, "every stream to end", func(st daemon.Stats) bool { return st.Closed == n })
	if got := a.srv.Stats().Bytes + st.Bytes; got != total {
		t.Errorf("servers echoed %d bytes (%d + %d), clients wrote %d", got, a.srv.Stats().Bytes, st.Bytes, total)
	}
	if old := a.srv.Stats(); old.Detached != n || old.Active != 0 {
		t.Errorf("old server Stats = %+v, want Detached %d, Active 0", old, n)
	}
}

// TestDetachConns: DetachConns takes out exactly the connections named
// that the server serves (one named twice once, one already taken out
// not at all), and leaves every other served: they go on echoing.
func TestDetachConns(t *testing.T) {
	const n = 40
	a := start(t, daemon.Config{}, "tcp")
	streams := warmStreams(t, a, n)
	b := daemon.New(daemon.Config{})
	t.Cleanup(func() { closeWithin(t, b) })
	live := a.srv.Conns(0)
	if len(live) != n {
		t.Fatalf("Conns(0) = %d connections, want %d", len(live), n)
	}
	pick := append(live[:10:10], live[3], live[5])
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	first, err := a.srv.DetachConns(ctx, pick)
	if err != nil || len(first) != 10 {
		closeDetached(first)
		t.Fatalf("DetachConns(10 named, 2 of them twice) = %d connections, %v; want 10", len(first), err)
	}
	want := map[net.Conn]bool{}
	for _, c := range live[:10] {
		want[c] = true
	}
	for _, d := range first {
		if !want[d.Conn] {
			t.Fatalf("DetachConns returned a connection it was not given")
		}
		delete(want, d.Conn)
	}
	again, err := a.srv.DetachConns(ctx, append(live[:10:10], live[10]))
	if err != nil || len(again) != 1 || again[0].Conn != live[10] {
		t.Fatalf("DetachConns of 10 taken out and 1 served = %d connections, %v; want the served one", len(again), err)
	}
	if st := a.srv.Stats(); st.Active != n-11 || st.Detached != 11 {
		t.Fatalf("old server Stats = %+v, want Active %d, Detached 11", st, n-11)
	}
	adopt(t, b, append(first, again...))
	// Every stream, moved or not, still echoes every byte.
	total := endStreams(t, streams)
	waitStats(t, b, "the moved streams to end", func(st daemon.Stats) bool { return st.Closed == 11 })
	if got := a.srv.Stats().Bytes + b.Stats().Bytes; got != total {
		t.Errorf("servers echoed %d bytes, clients wrote %d", got, total)
	}
}

// pattern returns n bytes of a sequence that does not repeat within 251
// bytes, from offset off on.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) % 251)
	}
	return b
}

// TestDetachBlockedWrite: a client that writes and does not read blocks
// the server's write. Detach still returns at once, with the bytes not
// written back as the state, and the adopting server delivers them first.
func TestDetachBlockedWrite(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			a := start(t, daemon.Config{}, network)
			c := a.dial(t)
			mustEcho(t, c, []byte("hello"))

			// Write until a write makes no progress for 200ms: the socket
			// buffers are full both ways, so the server is blocked
			// writing its echo back.
			const chunk = 64 << 10
			written := 0
			for {
				if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				n, err := c.Write(pattern(written, chunk))
				written += n
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatalf("write after %d bytes: %v", written, err)
				}
				if written > 256<<20 {
					t.Fatalf("wrote %d bytes and the server still reads", written)
				}
			}

			begin := time.Now()
			conns := detach(t, a.srv)
			took := time.Since(begin)
			if len(conns) != 1 {
				closeDetached(conns)
				t.Fatalf("Detach returned %d connections, want 1", len(conns))
			}
			t.Logf("Detach with the server blocked writing took %v after the client wrote %d bytes; state: %d bytes", took, written, len(conns[0].State))
			if len(conns[0].State) == 0 {
				t.Errorf("no state: the server was blocked writing its echo, some of it unwritten")
			}

			b := daemon.New(daemon.Config{})
			t.Cleanup(func() { closeWithin(t, b) })
			adopt(t, b, conns)

			if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
				t.Fatal(err)
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read after the move: %v (%d bytes)", err, len(got))
			}
			want := pattern(0, written)
			if len(got) != len(want) {
				t.Fatalf("read %d bytes back, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("byte %d differs", i)
				}
			}
			st := waitStats(t, b, "the connection to end", func(st daemon.Stats) bool { return st.Closed == 1 })
			if sum := a.srv.Stats().Bytes + st.Bytes; sum != uint64(len("hello")+len(want)) {
				t.Errorf("servers echoed %d bytes, want %d", sum, len("hello")+len(want))
			}
		})
	}
}

// TestDetachNotResumer: with a handler that is not a Resumer, Detach stops
// accepting and takes nothing; the connections are served on.
func TestDetachNotResumer(t *testing.T) {
	ts := start(t, daemon.Config{Handler: daemon.HandlerFunc(upper)}, "tcp")
	c := ts.dial(t)
	r := bufio.NewReader(c)
	line := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if want := strings.ToUpper(msg) + "\n"; got != want || err != nil {
			t.Fatalf("reply = %q, %v; want %q", got, err, want)
		}
	}
	line("before")
	if conns := detach(t, ts.srv); len(conns) != 0 {
		closeDetached(conns)
		t.Fatalf("Detach returned %d connections, want none", len(conns))
	}
	if err := recvWithin(t, ts.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
		t.Fatalf("Serve after Detach = %v, want ErrServerClosed", err)
	}
	ts.serveErr <- daemon.ErrServerClosed
	line("after")
	if st := ts.srv.Stats(); st.Active != 1 || st.Detached != 0 {
		t.Errorf("Stats = %+v, want Active 1, Detached 0", st)
	}
}

// TestDetachTakeBack: connections detached and then adopted by the same
// server (a hand-over that failed) are served on, and Serve accepts again
// on a new listener after Detach stopped the old one.
func TestDetachTakeBack(t *testing.T) {
	ts := start(t, daemon.Config{}, "tcp")
	var clients []net.Conn
	for i := range 3 {
		c := ts.dial(t)
		mustEcho(t, c, payload(uint64(i), 100))
		clients = append(clients, c)
	}
	conns := detach(t, ts.srv)
	if len(conns) != 3 {
		closeDetached(conns)
		t.Fatalf("Detach returned %d connections, want 3", len(conns))
	}
	adopt(t, ts.srv, conns)
	for i, c := range clients {
		mustEcho(t, c, payload(uint64(10+i), 20<<10))
	}
	ln := listen(t, "tcp")
	serveErr := make(chan error, 1)
	go func() { serveErr <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		closeWithin(t, ts.srv)
		if err := recvWithin(t, serveErr, "second Serve"); !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("second Serve = %v", err)
		}
	})
	c, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, c, []byte("accepted after the detach"))
	st := ts.srv.Stats()
	if st.Accepted != 4 || st.Detached != 3 || st.Adopted != 3 || st.Active != 4 {
		t.Errorf("Stats = %+v, want Accepted 4, Detached 3, Adopted 3, Active 4", st)
	}
}

// holdingEcho is an Echo whose connections start serving only once hold is
// closed: until then a handler ignores its context and its deadlines,
// like one busy elsewhere.
type holdingEcho struct {
	daemon.Echo
	started chan struct{} // receives one value per connection served
	hold    chan struct{}
}

func (h *holdingEcho) ServeConn(ctx context.Context, c net.Conn) error {
	h.started <- struct{}{}
	<-h.hold
	return h.Echo.ServeConn(ctx, c)
}

// interruptedConn reports every deadline set in the past, the way Detach
// interrupts a connection's I/O. It keeps the descriptor reachable
// (SyscallConn), so the connection can still be detached.
type interruptedConn struct {
	net.Conn
	interrupted chan<- struct{}
}

func (c interruptedConn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	if !t.IsZero() && t.Before(time.Now()) {
		c.interrupted <- struct{}{}
	}
	return err
}

func (c interruptedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

type interruptedListener struct {
	net.Listener
	interrupted chan struct{}
}

func (l interruptedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return interruptedConn{c, l.interrupted}, nil
}

// TestDetachLate: a handler that has not answered when Detach's context
// ends keeps its connection, served on. When it answers later it is
// resumed in place; or, once a second Detach started, taken out by it.
func TestDetachLate(t *testing.T) {
	for _, second := range []bool{false, true} {
		t.Run(fmt.Sprintf("second detach %v", second), func(t *testing.T) {
			h := &holdingEcho{started: make(chan struct{}, 1), hold: make(chan struct{})}
			interrupted := make(chan struct{}, 2)
			ts := startWrapped(t, daemon.Config{Handler: h}, "tcp", func(ln net.Listener) net.Listener {
				return interruptedListener{ln, interrupted}
			})
			c := ts.dial(t)
			recvWithin(t, h.started, "the handler to start")
			if _, err := c.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			conns, err := ts.srv.Detach(ctx)
			if !errors.Is(err, context.DeadlineExceeded) || len(conns) != 0 {
				closeDetached(conns)
				t.Fatalf("Detach = %d connections, %v; want none, DeadlineExceeded", len(conns), err)
			}
			t.Logf("Detach: %v", err)
			recvWithin(t, interrupted, "the first Detach to interrupt the connection")

			var detached chan []daemon.DetachedConn
			if second {
				detached = make(chan []daemon.DetachedConn, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
					defer cancel()
					conns, err := ts.srv.Detach(ctx)
					if err != nil {
						t.Errorf("second Detach: %v", err)
					}
					detached <- conns
				}()
				// The connection left over from the first Detach is
				// part of the second one before its handler answers.
				recvWithin(t, interrupted, "the second Detach to interrupt the connection")
			}
			close(h.hold)
			if second {
				conns := recvWithin(t, detached, "the second Detach")
				if len(conns) != 1 {
					closeDetached(conns)
					t.Fatalf("second Detach returned %d connections, want 1", len(conns))
				}
				t.Logf("second Detach: state %q", conns[0].State)
				b := daemon.New(daemon.Config{})
				t.Cleanup(func() { closeWithin(t, b) })
				adopt(t, b, conns)
			}
			got := make([]byte, 3)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "abc" {
				t.Fatalf("echo of the bytes sent before the detach: %q, %v", got, err)
			}
			mustEcho(t, c, []byte("served on"))
			st := ts.srv.Stats()
			if second {
				if st.Detached != 1 || st.Active != 0 {
					t.Errorf("Stats = %+v, want Detached 1, Active 0", st)
				}
			} else if st.Detached != 0 || st.Active != 1 || st.Closed != 0 {
				t.Errorf("Stats = %+v, want Detached 0, Active 1, Closed 0", st)
			}
		})
	}
}

// resumerFunc is a Resumer made of two functions.
type resumerFunc struct {
	serve  func(ctx context.Context, c net.Conn) error
	resume func(ctx context.Context, c net.Conn, state []byte) error
}

func (r resumerFunc) ServeConn(ctx context.Context, c net.Conn) error { return r.serve(ctx, c) }
func (r resumerFunc) ResumeConn(ctx context.Context, c net.Conn, state []byte) error {
	return r.resume(ctx, c, state)
}

// TestDetachEndedMeanwhile: a connection whose handler ends otherwise
// during the Detach is closed, not returned; a handler that wraps its
// *Detached is understood.
func TestDetachEndedMeanwhile(t *testing.T) {
	h := resumerFunc{
		serve: func(ctx context.Context, c net.Conn) error {
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return err
			}
			if _, err := c.Write(b); err != nil {
				return err
			}
			<-ctx.Done()
			if b[0] == 'e' {
				return nil // ended: the peer said goodbye, say
			}
			return fmt.Errorf("stopped: %w", &daemon.Detached{State: []byte("state of " + string(b))})
		},
		resume: func(context.Context, net.Conn, []byte) error { return errors.New("not here") },
	}
	ts := start(t, daemon.Config{Handler: h}, "unix")
	ended, moved := ts.dial(t), ts.dial(t)
	mustEcho(t, ended, []byte("e"))
	mustEcho(t, moved, []byte("m"))
	conns := detach(t, ts.srv)
	defer closeDetached(conns)
	if len(conns) != 1 || string(conns[0].State) != "state of m" {
		t.Fatalf("Detach returned %d connections (%+v), want 1 with the state of m", len(conns), conns)
	}
	buf := make([]byte, 1)
	if n, err := ended.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("ended connection: read %d, %v; want EOF", n, err)
	}
	if st := ts.srv.Stats(); st.Detached != 1 || st.Closed != 1 || st.Active != 0 {
		t.Errorf("Stats = %+v, want Detached 1, Closed 1, Active 0", st)
	}
	// The moved client got no EOF: the detached connection is open.
	if err := moved.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, err := moved.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("moved connection: read %d, %v; want a timeout", n, err)
	}
}

// hiddenConn hides the connection's file descriptor (it has no
// SyscallConn method), as a connection wrapped in user space (TLS) does.
type hiddenConn struct{ net.Conn }

type hidingListener struct{ net.Listener }

func (l hidingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hiddenConn{c}, nil
}

// TestDetachNoDescriptor: Detach needs no descriptor: a connection that
// exposes none is taken out as it is, and another server in the process
// adopts it; the client notices nothing. (Moving it to another process
// takes a descriptor: package handoff keeps such connections.)
func TestDetachNoDescriptor(t *testing.T) {
	srv := daemon.New(daemon.Config{})
	ln := listen(t, "tcp")
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(hidingListener{ln}) }()
	t.Cleanup(func() {
		closeWithin(t, srv)
		recvWithin(t, serveErr, "Serve")
	})
	c, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, c, []byte("before"))
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conns, err := srv.Detach(ctx)
	if err != nil || len(conns) != 1 {
		closeDetached(conns)
		t.Fatalf("Detach = %d connections, %v; want 1", len(conns), err)
	}
	if _, ok := conns[0].Conn.(hiddenConn); !ok {
		closeDetached(conns)
		t.Fatalf("Detach returned a %T, want the server's hiddenConn", conns[0].Conn)
	}
	next := daemon.New(daemon.Config{})
	defer closeWithin(t, next)
	if err := next.Adopt(conns[0].Conn, conns[0].State); err != nil {
		closeDetached(conns)
		t.Fatal(err)
	}
	mustEcho(t, c, []byte("served on by the next server"))
	if st := srv.Stats(); st.Active != 0 || st.Detached != 1 || st.Closed != 0 {
		t.Errorf("old server: Stats = %+v, want Detached 1", st)
	}
	if st := next.Stats(); st.Active != 1 || st.Adopted != 1 {
		t.Errorf("next server: Stats = %+v, want Active 1, Adopted 1", st)
	}
}

// TestDetachClose: Close makes a Detach under way return; Detach after
// Close refuses.
func TestDetachClose(t *testing.T) {
	h := &holdingEcho{started: make(chan struct{}, 1), hold: make(chan struct{})}
	ts := start(t, daemon.Config{Handler: h}, "tcp")
	c := ts.dial(t)
	recvWithin(t, h.started, "the handler to start")
	res := make(chan error, 1)
	go func() {
		conns, err := ts.srv.Detach(context.Background())
		closeDetached(conns)
		res <- err
	}()
	recvWithin(t, ts.lnClosed, "Detach to stop accepting")
	closed := make(chan int, 1)
	go func() { closed <- closeWithin(t, ts.srv) }()
	if err := recvWithin(t, res, "Detach to return after Close"); !errors.Is(err, daemon.ErrServerClosed) {
		t.Errorf("Detach during Close = %v, want ErrServerClosed", err)
	}
	close(h.hold) // the handler then finds its connection closed
	if n := recvWithin(t, closed, "Close"); n != 1 {
		t.Errorf("Close cut %d connections, want 1", n)
	}
	buf := make([]byte, 1)
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("client after Close: read %d, %v; want EOF", n, err)
	}
	if _, err := ts.srv.Detach(context.Background()); !errors.Is(err, daemon.ErrServerClosed) {
		t.Errorf("Detach after Close = %v, want ErrServerClosed", err)
	}
}

// TestDetachIdleTimeout: with an IdleTimeout the echo sets a read deadline
// before every read; a Detach still interrupts it, and the adopter keeps
// the timeout.
func TestDetachIdleTimeout(t *testing.T) {
	const idle = time.Minute
	a := start(t, daemon.Config{IdleTimeout: idle}, "tcp")
	var clients []net.Conn
	for i := range 20 {
		c := a.dial(t)
		mustEcho(t, c, payload(uint64(i), 1000))
		clients = append(clients, c)
	}
	conns := detach(t, a.srv)
	if len(conns) != len(clients) {
		closeDetached(conns)
		t.Fatalf("Detach returned %d connections, want %d", len(conns), len(clients))
	}
	b := daemon.New(daemon.Config{IdleTimeout: idle})
	t.Cleanup(func() { closeWithin(t, b) })
	adopt(t, b, conns)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			if err := echo(c, payload(uint64(100+i), 30<<10)); err != nil {
				t.Errorf("client %d after the move: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// TestDetachRacesClose: clients hang up while Detach runs. Every
// connection is either handed over or closed, never both nor neither, and
// the clients that stay are served on by the adopting server.
func TestDetachRacesClose(t *testing.T) {
	const n = 100
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			a := start(t, daemon.Config{}, network)
			clients := make([]net.Conn, n)
			for i := range clients {
				clients[i] = a.dial(t)
				mustEcho(t, clients[i], payload(uint64(i), 64))
			}
			var wg sync.WaitGroup
			release := make(chan struct{})
			for i, c := range clients {
				if i%2 == 0 {
					wg.Go(func() { <-release; c.Close() })
				}
			}
			close(release)
			conns := detach(t, a.srv)
			wg.Wait()
			st := waitStats(t, a.srv, "every connection to be closed or detached", func(st daemon.Stats) bool {
				return st.Active == 0
			})
			if st.Detached != uint64(len(conns)) || st.Detached+st.Closed != n {
				closeDetached(conns)
				t.Fatalf("Detach returned %d connections; Stats = %+v, want Detached+Closed = %d", len(conns), st, n)
			}
			t.Logf("%d detached, %d closed", st.Detached, st.Closed)
			b := daemon.New(daemon.Config{})
			t.Cleanup(func() { closeWithin(t, b) })
			adopt(t, b, conns)
			for i, c := range clients {
				if i%2 == 1 {
					mustEcho(t, c, payload(uint64(1000+i), 4<<10))
				}
			}
		})
	}
}
