//go:build linux

package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sockConn is a connection taken over from the previous generation: a
// net.Conn made straight of the received descriptor. net.FileConn would
// duplicate it, and set options the socket already has (keep-alive,
// TCP_NODELAY), a dozen system calls a socket and most of a hand-over's
// cost; this registers it with the runtime poller and nothing else (the
// socket keeps every option the previous generation set). Reads, writes
// and deadlines go through the poller as a *net.TCPConn's do; its errors
// are *net.OpError, net.ErrClosed once closed. It is not a *net.TCPConn:
// a handler that needs a socket option reaches the descriptor through
// syscall.Conn, and CloseRead and CloseWrite shut down one direction.
type sockConn struct {
	f      *os.File
	closed atomic.Bool

	addrOnce     sync.Once
	haveAddrs    atomic.Bool // addrOnce ran
	laddr, raddr net.Addr
	network      string
}

var (
	_ net.Conn     = (*sockConn)(nil)
	_ syscall.Conn = (*sockConn)(nil)
)

// newSockConn makes a connection of fd, a connected stream socket; the
// connection owns fd from then on. It fails, closing fd, for anything
// else.
func newSockConn(fd int) (net.Conn, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err == nil && typ != unix.SOCK_STREAM {
		err = errors.New("not a stream socket")
	}
	if err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "adopt", Net: "fd", Err: os.NewSyscallError("getsockopt", err)}
	}
	// Non-blocking already, as a rule (the previous generation's runtime
	// made it so: the flag belongs to the socket, not the descriptor), so
	// NewFile registers it with the poller; made so if not (a blocking one
	// would take no deadline, and a hand-over could not interrupt it).
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && flags&unix.O_NONBLOCK == 0 {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "adopt", Net: "fd", Err: os.NewSyscallError("fcntl", err)}
	}
	return &sockConn{f: os.NewFile(uintptr(fd), "handoff-conn")}, nil
}

func (c *sockConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	return n, c.opErr("read", err)
}

func (c *sockConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opErr("write", err)
}

// Close closes the descriptor (the socket lives on in any other
// process's).
func (c *sockConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opErr("close", net.ErrClosed)
	}
	if err := c.f.Close(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // close(2)'s own error, not "closed"
		}
		return &net.OpError{Op: "close", Net: "fd", Err: err}
	}
	return nil
}

func (c *sockConn) LocalAddr() net.Addr  { c.addrOnce.Do(c.addrs); return c.laddr }
func (c *sockConn) RemoteAddr() net.Addr { c.addrOnce.Do(c.addrs); return c.raddr }

func (c *sockConn) SetDeadline(t time.Time) error {
	return c.opErr("set deadline", c.f.SetDeadline(t))
}

func (c *sockConn) SetReadDeadline(t time.Time) error {
	return c.opErr("set deadline", c.f.SetReadDeadline(t))
}

func (c *sockConn) SetWriteDeadline(t time.Time) error {
	return c.opErr("set deadline", c.f.SetWriteDeadline(t))
}

// CloseRead shuts down the reading side, as (*net.TCPConn).CloseRead.
func (c *sockConn) CloseRead() error { return c.shutdown("close read", unix.SHUT_RD) }

// CloseWrite shuts down the writing side, as (*net.TCPConn).CloseWrite.
func (c *sockConn) CloseWrite() error { return c.shutdown("close write", unix.SHUT_WR) }

func (c *sockConn) shutdown(op string, how int) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.opErr(op, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), how) }); err != nil {
		return c.opErr(op, err)
	}
	if serr != nil {
		return c.opErr(op, os.NewSyscallError("shutdown", serr))
	}
	return nil
}

// SyscallConn gives the raw connection, whose errors are this
// connection's.
func (c *sockConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil, c.opErr("raw-conn", err)
	}
	return rawConn{rc, c}, nil
}

type rawConn struct {
	rc syscall.RawConn
	c  *sockConn
}

func (r rawConn) Control(f func(fd uintptr)) error { return r.c.opErr("raw-control", r.rc.Control(f)) }
func (r rawConn) Read(f func(fd uintptr) bool) error {
	return r.c.opErr("raw-read", r.rc.Read(f))
}
func (r rawConn) Write(f func(fd uintptr) bool) error {
	return r.c.opErr("raw-write", r.rc.Write(f))
}

// addrs reads the socket's addresses, once, when first asked.
func (c *sockConn) addrs() {
	defer c.haveAddrs.Store(true)
	_ = c.control(func(fd int) {
		if sa, err := unix.Getsockname(fd); err == nil {
			c.laddr, c.network = sockaddrAddr(sa)
		}
		if sa, err := unix.Getpeername(fd); err == nil {
			c.raddr, _ = sockaddrAddr(sa)
		}
	})
}

func (c *sockConn) control(f func(fd int)) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// sockaddrAddr converts a socket address and names its network.
func sockaddrAddr(sa unix.Sockaddr) (net.Addr, string) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}, "tcp"
	case *unix.SockaddrInet6:
		var zone string
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone}, "tcp"
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}, "unix"
	}
	return nil, "fd"
}

// opErr makes err what a net.Conn returns: nil and io.EOF as they are,
// anything else a *net.OpError, net.ErrClosed once the connection is
// closed (os.File says "file already closed"). It names the addresses
// only once somebody asked for them: a deadline that interrupts a read
// (every connection's, when it is handed over) costs no system call.
func (c *sockConn) opErr(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if c.closed.Load() || errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if !c.haveAddrs.Load() {
		return &net.OpError{Op: op, Net: "fd", Err: err}
	}
	return &net.OpError{Op: op, Net: c.network, Source: c.laddr, Addr: c.raddr, Err: err}
}
