package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// defaultWriteTimeout is the [Echo] write timeout when none is set.
const defaultWriteTimeout = 30 * time.Second

// bufSize is the size of the pooled buffers a connection borrows while
// bytes are in flight.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Echo is the echo [Handler]: every byte a client sends is written back,
// in order, on the same connection until the client closes. It is the
// handler of a [Server] whose [Config.Handler] is nil.
//
// An idle connection costs a parked goroutine and its file descriptor, no
// buffer: buffers come from a pool only while bytes are in flight. On Linux
// a TCP or Unix connection is read through its raw fd (the runtime poller
// waits for readability); other connections, and other systems, read into
// a pooled buffer held for the connection's life.
//
// The zero value is ready to use. One Echo may serve many connections at
// once, also for several servers; its fields must not change once it
// serves, and it must not be copied after first use.
type Echo struct {
	// IdleTimeout closes a connection that sent nothing for this long.
	// Zero means never.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one echoed chunk back to a client that
	// does not read. Zero means 30s.
	WriteTimeout time.Duration

	bytes atomic.Uint64
}

// ServeConn echoes c until the client closes it (it then returns nil), an
// I/O error occurs, a timeout expires, or c is closed: it returns the error
// that ended it. It does not close c and does not watch ctx: a [Server]
// closes c on [Server.Close], which ends ServeConn.
func (e *Echo) ServeConn(_ context.Context, c net.Conn) error {
	return e.echo(c, e.IdleTimeout, e.writeTimeout())
}

// Bytes returns the number of bytes echoed so far, by every connection
// this Echo served.
func (e *Echo) Bytes() uint64 { return e.bytes.Load() }

func (e *Echo) writeTimeout() time.Duration {
	if e.WriteTimeout <= 0 {
		return defaultWriteTimeout
	}
	return e.WriteTimeout
}

// echoBuffered echoes through a pooled buffer it holds for the
// connection's life. It is the fallback for connections that expose no
// raw fd, and the only path off Linux.
func (e *Echo) echoBuffered(c net.Conn, idle, wt time.Duration) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		if idle > 0 {
			if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
				return err
			}
		}
		n, err := c.Read(*bp)
		if n > 0 {
			if werr := e.writeAll(c, (*bp)[:n], wt); werr != nil {
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

// writeAll writes b to c within wt and counts what was written.
func (e *Echo) writeAll(c net.Conn, b []byte, wt time.Duration) error {
	if err := c.SetWriteDeadline(time.Now().Add(wt)); err != nil {
		return err
	}
	n, err := c.Write(b) // net.Conn.Write writes everything or fails
	e.bytes.Add(uint64(n))
	return err
}
