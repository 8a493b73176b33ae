//go:build linux

package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dupFD returns a close-on-exec duplicate of c's descriptor, as a process
// receives it over SCM_RIGHTS.
func dupFD(t *testing.T, c net.Conn) int {
	t.Helper()
	fd, ok := connFD(c)
	if !ok {
		t.Fatalf("%T has no descriptor", c)
	}
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSockConn: a connection made of a received descriptor behaves as
// the net.Conn it replaces: same addresses, bytes both ways, deadlines
// that time out, CloseWrite that the peer reads as EOF, net.ErrClosed
// after Close, and the socket outlives the original descriptor.
func TestSockConn(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "s")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peer, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			orig, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c, err := newSockConn(dupFD(t, orig))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.LocalAddr().String() != orig.LocalAddr().String() || c.RemoteAddr().String() != orig.RemoteAddr().String() ||
				c.LocalAddr().Network() != network {
				t.Errorf("addresses %s %v → %v, want %v → %v", c.LocalAddr().Network(), c.LocalAddr(), c.RemoteAddr(), orig.LocalAddr(), orig.RemoteAddr())
			}
			orig.Close() // the socket lives on in c
			_ = peer.SetDeadline(time.Now().Add(10 * time.Second))
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))

			if _, err := peer.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
				t.Fatalf("read %q, %v", b, err)
			}
			if _, err := c.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(peer, b); err != nil || string(b) != "pong" {
				t.Fatalf("peer read %q, %v", b, err)
			}

			// A deadline in the past interrupts a read, as a hand-over's
			// does: a timeout, nothing consumed.
			_ = c.SetReadDeadline(time.Unix(1, 0))
			_, err = c.Read(b)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v, want a timeout", err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

			// The raw connection reads through the poller.
			rc, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := peer.Write([]byte("raw!")); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := rc.Read(func(fd uintptr) bool {
				var rerr error
				n, rerr = unix.Read(int(fd), b)
				return rerr != unix.EAGAIN
			}); err != nil || string(b[:n]) != "raw!" {
				t.Fatalf("raw read %q, %v", b[:n], err)
			}

			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n, err := peer.Read(b); n != 0 || err != io.EOF {
				t.Fatalf("peer after CloseWrite: %d, %v; want EOF", n, err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(b); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after Close: %v, want net.ErrClosed", err)
			}
			if err := rc.Read(func(uintptr) bool { return true }); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("raw read after Close: %v, want net.ErrClosed", err)
			}
			if err := c.Close(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("second Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestSockConnRefusesNonStream: a descriptor that is not a stream socket
// is refused, and closed.
func TestSockConnRefusesNonStream(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := newSockConn(fd); err == nil {
		c.Close()
		t.Fatal("a datagram socket became a connection")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		unix.Close(fd)
		t.Fatalf("the refused descriptor is still open (%v)", err)
	}
}
