package daemon

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bufSize is the size of the pooled buffers a connection borrows while
// bytes are in flight.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// serveConn echoes c until the client closes it, an I/O error occurs, the
// idle timeout expires, or the server is closed.
func (s *Server) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		s.finished.Add(1)
		s.trackConn(c, false)
		s.releaseSlot()
	}()
	if err := s.echo(c); err != nil && !isBenign(err) {
		s.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// echo copies what c sends back to c. Between reads it holds no buffer:
// it waits for readability through the runtime poller (RawConn.Read) and
// borrows a pooled buffer only for the read that has data, so an idle
// connection costs a parked goroutine and one fd. It never splices through
// a pipe (io.Copy(c, c) would, at the cost of two more fds per connection).
func (s *Server) echo(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return s.echoBuffered(c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return s.echoBuffered(c)
	}
	// One closure per connection, not per read: it is the hot path.
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	readOnce := func(fd uintptr) bool {
		bp = bufPool.Get().(*[]byte)
		n, rerr = unix.Read(int(fd), *bp)
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			bufPool.Put(bp)
			bp = nil
			return false // wait for readability, then call again
		}
		return true
	}
	for {
		if s.cfg.IdleTimeout > 0 {
			if err := c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout)); err != nil {
				return err
			}
		}
		bp, n, rerr = nil, 0, nil
		err := rc.Read(readOnce)
		if err == nil {
			err = rerr
		}
		if err != nil || n <= 0 {
			if bp != nil {
				bufPool.Put(bp)
			}
			if err == nil {
				return nil // EOF: the client closed
			}
			return err
		}
		werr := s.writeAll(c, (*bp)[:n])
		bufPool.Put(bp)
		if werr != nil {
			return werr
		}
	}
}

// echoBuffered is the fallback for connections that expose no raw fd.
func (s *Server) echoBuffered(c net.Conn) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		if s.cfg.IdleTimeout > 0 {
			if err := c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout)); err != nil {
				return err
			}
		}
		n, err := c.Read(*bp)
		if n > 0 {
			if werr := s.writeAll(c, (*bp)[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (s *Server) writeAll(c net.Conn, b []byte) error {
	if err := c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
		return err
	}
	n, err := c.Write(b) // net.Conn.Write writes everything or fails
	s.bytes.Add(uint64(n))
	return err
}

// isBenign reports errors that are the ordinary end of a connection.
func isBenign(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
