package daemon_test

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
)

var (
	_ daemon.Resumer = (*daemon.Echo)(nil)
	_ error          = (*daemon.Detached)(nil)
)

// adopt has srv adopt every detached connection through a new descriptor
// (net.FileConn), as a process that received it would, and closes the
// detached one.
func adopt(t testing.TB, srv *daemon.Server, conns []daemon.DetachedConn) {
	t.Helper()
	for i, d := range conns {
		c, err := moved(d.Conn)
		if err != nil {
			closeDetached(conns[i:])
			t.Fatalf("FileConn of detached connection %d (%s): %v", i, d.Conn.RemoteAddr(), err)
		}
		if err := srv.Adopt(c, d.State); err != nil {
			c.Close()
			closeDetached(conns[i+1:])
			t.Fatalf("Adopt of detached connection %d (%s): %v", i, c.RemoteAddr(), err)
		}
	}
}

// moved returns a new net.Conn for c's socket, through a duplicate of its
// descriptor, and closes c; c itself when it exposes no descriptor.
func moved(c net.Conn) (net.Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, nil
	}
	defer c.Close()
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	f := os.NewFile(uintptr(fd), "moved")
	defer f.Close()
	return net.FileConn(f)
}

func closeDetached(conns []daemon.DetachedConn) {
	for _, d := range conns {
		d.Conn.Close()
	}
}

// connPair returns both ends of a fresh connection on network, closed
// when the test ends.
func connPair(t testing.TB, network string) (client, server net.Conn) {
	t.Helper()
	ln := listen(t, network)
	defer ln.Close()
	client, err := net.DialTimeout(network, ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	if err := client.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	return client, server
}

func TestAdoptErrors(t *testing.T) {
	t.Run("not a Resumer", func(t *testing.T) {
		srv := daemon.New(daemon.Config{Handler: daemon.HandlerFunc(upper)})
		defer closeWithin(t, srv)
		_, sc := connPair(t, "tcp")
		if err := srv.Adopt(sc, nil); !errors.Is(err, daemon.ErrNotResumer) {
			t.Errorf("Adopt = %v, want ErrNotResumer", err)
		}
	})
	t.Run("full", func(t *testing.T) {
		ts := start(t, daemon.Config{MaxConns: 1}, "tcp")
		first := ts.dial(t)
		mustEcho(t, first, []byte("first"))
		cc, sc := connPair(t, "tcp")
		if err := ts.srv.Adopt(sc, []byte("state ")); !errors.Is(err, daemon.ErrFull) {
			t.Fatalf("Adopt with MaxConns served = %v, want ErrFull", err)
		}
		// The connection stayed the caller's, untouched.
		if _, err := sc.Write([]byte("x")); err != nil {
			t.Fatalf("write on the refused connection: %v", err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(cc, buf); err != nil || buf[0] != 'x' {
			t.Fatalf("refused connection: read %q, %v", buf, err)
		}
		first.Close()
		waitStats(t, ts.srv, "the first connection to end", func(st daemon.Stats) bool { return st.Active == 0 })
		if err := ts.srv.Adopt(sc, []byte("state ")); err != nil {
			t.Fatalf("Adopt with a free slot = %v", err)
		}
		got := make([]byte, len("state "))
		if _, err := io.ReadFull(cc, got); err != nil || string(got) != "state " {
			t.Fatalf("adopted connection: state read %q, %v", got, err)
		}
		mustEcho(t, cc, []byte("adopted"))
		if st := ts.srv.Stats(); st.Adopted != 1 || st.Active != 1 {
			t.Errorf("Stats = %+v, want Adopted 1, Active 1", st)
		}
	})
	t.Run("Shutdown", func(t *testing.T) {
		// During a Shutdown Adopt is accepted and Shutdown waits for the
		// connection; once Shutdown returned, Adopt refuses.
		ts := start(t, daemon.Config{}, "tcp")
		c := ts.dial(t)
		mustEcho(t, c, []byte("x"))
		shut := shutdownAsync(ts.srv, ioTimeout)
		recvWithin(t, ts.lnClosed, "Shutdown to close the listener")
		cc, sc := connPair(t, "unix")
		if err := ts.srv.Adopt(sc, nil); err != nil {
			t.Fatalf("Adopt during Shutdown = %v", err)
		}
		c.Close()
		waitStats(t, ts.srv, "the accepted connection to end", func(st daemon.Stats) bool { return st.Closed == 1 })
		mustEcho(t, cc, []byte("adopted while draining"))
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with an adopted connection open", err)
		default:
		}
		cc.Close()
		if err := recvWithin(t, shut, "Shutdown"); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		_, sc2 := connPair(t, "tcp")
		if err := ts.srv.Adopt(sc2, nil); !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Adopt after Shutdown returned = %v, want ErrServerClosed", err)
		}
	})
	t.Run("Close", func(t *testing.T) {
		srv := daemon.New(daemon.Config{})
		closeWithin(t, srv)
		_, sc := connPair(t, "tcp")
		if err := srv.Adopt(sc, nil); !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Adopt after Close = %v, want ErrServerClosed", err)
		}
	})
}

func TestRoom(t *testing.T) {
	if r := daemon.New(daemon.Config{}).Room(); r != math.MaxInt {
		t.Fatalf("Room without MaxConns = %d, want MaxInt", r)
	}
	s := daemon.New(daemon.Config{MaxConns: 3})
	defer s.Close()
	if r := s.Room(); r != 3 {
		t.Fatalf("Room = %d, want 3", r)
	}
	a, b := net.Pipe()
	defer b.Close()
	if err := s.Adopt(a, nil); err != nil {
		t.Fatal(err)
	}
	if r := s.Room(); r != 2 {
		t.Fatalf("Room after one Adopt = %d, want 2", r)
	}
}

// TestConnsByAge: Conns lists the connections served for at least minAge;
// an adopted one counts as old, a closed one is gone.
func TestConnsByAge(t *testing.T) {
	ts := start(t, daemon.Config{}, "tcp")
	c := ts.dial(t)
	mustEcho(t, c, []byte("x"))
	if got := ts.srv.Conns(0); len(got) != 1 {
		t.Fatalf("Conns(0) = %d connections, want 1", len(got))
	}
	if got := ts.srv.Conns(time.Hour); len(got) != 0 {
		t.Fatalf("Conns(1h) = %d connections, want 0 (one just accepted)", len(got))
	}
	client, server := connPair(t, "tcp")
	if err := ts.srv.Adopt(server, nil); err != nil {
		t.Fatal(err)
	}
	if got := ts.srv.Conns(time.Hour); len(got) != 1 || got[0] != server {
		t.Fatalf("Conns(1h) = %v, want the adopted connection", got)
	}
	client.Close()
	waitStats(t, ts.srv, "the adopted connection to end", func(st daemon.Stats) bool { return st.Closed == 1 })
	if got := ts.srv.Conns(time.Hour); len(got) != 0 {
		t.Fatalf("Conns(1h) = %d after the adopted one ended, want 0", len(got))
	}
}
