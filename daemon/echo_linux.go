//go:build linux

package daemon

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// echo copies what c sends back to c. Between reads it holds no buffer:
// it waits for readability through the runtime poller (RawConn.Read) and
// borrows a pooled buffer only for the read that has data, so an idle
// connection costs a parked goroutine and one fd. It never splices through
// a pipe (io.Copy(c, c) would, at the cost of two more fds per connection).
//
// It looks at ctx only after it set a deadline, before it blocks (see
// ServeConn): an interrupted read has consumed nothing, and an interrupted
// write leaves the rest of its chunk as the state of the *Detached.
func (e *Echo) echo(ctx context.Context, c net.Conn, idle, wt time.Duration) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return e.echoBuffered(ctx, c, idle, wt)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return e.echoBuffered(ctx, c, idle, wt)
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
		if idle > 0 {
			if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return stopped(ctx, nil)
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
			return readFailed(ctx, err)
		}
		werr := e.writeAll(ctx, c, (*bp)[:n], wt)
		bufPool.Put(bp)
		if werr != nil {
			return werr
		}
	}
}
