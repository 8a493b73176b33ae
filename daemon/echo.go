package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
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
// handler of a [Server] whose [Config.Handler] is nil. It is a [Resumer]:
// its connections can be detached, with the bytes read and not yet
// written back as their state, and resumed elsewhere.
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
// that ended it. It does not close c. It checks ctx only where it would
// otherwise block, after it set its deadline: once ctx is cancelled with
// cause [ErrDetach] it returns a [*Detached] whose State holds the bytes
// read and not yet written back (a write interrupted half-way leaves the
// rest), or nothing; once ctx is cancelled otherwise it returns ctx.Err().
// A [Server] also closes c on [Server.Close], which ends ServeConn.
func (e *Echo) ServeConn(ctx context.Context, c net.Conn) error {
	return e.echo(ctx, c, e.IdleTimeout, e.writeTimeout())
}

// ResumeConn writes state to c first, the bytes a detached echo connection
// had read and not written back, and then echoes on as ServeConn does,
// with the same results. Nothing in state is written twice: if ctx is
// cancelled with cause [ErrDetach] while state is written, the [*Detached]
// returned holds the part not yet written.
func (e *Echo) ResumeConn(ctx context.Context, c net.Conn, state []byte) error {
	if err := e.writeState(ctx, c, state); err != nil {
		return err
	}
	return e.ServeConn(ctx, c)
}

// writeState writes a resumed connection's state. It returns before the
// echo starts, so that its frame is not under the echo loop's, which a
// Server calls from as shallow a stack as for an accepted connection.
func (e *Echo) writeState(ctx context.Context, c net.Conn, state []byte) error {
	if len(state) == 0 {
		return nil
	}
	return e.writeAll(ctx, c, state, e.writeTimeout())
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
func (e *Echo) echoBuffered(ctx context.Context, c net.Conn, idle, wt time.Duration) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		if idle > 0 {
			if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return stopped(ctx, nil)
			}
		}
		n, err := c.Read(*bp)
		if n > 0 {
			if werr := e.writeAll(ctx, c, (*bp)[:n], wt); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return readFailed(ctx, err)
		}
	}
}

// writeAll writes b to c within wt and counts what was written. When ctx
// is cancelled with cause ErrDetach before the write or while it blocks,
// it returns a *Detached with the bytes of b not written, copied.
//
// It is on the hot path and under the echo loop: what a detach needs is in
// stopped and writeFailed, not inlined, so that its frame stays small.
func (e *Echo) writeAll(ctx context.Context, c net.Conn, b []byte, wt time.Duration) error {
	if err := c.SetWriteDeadline(time.Now().Add(wt)); err != nil {
		return err
	}
	// Checked after the deadline is set: a Detach cancels ctx before it
	// sets the deadlines, so either this check sees the cancellation or
	// the Detach's deadline replaces this one and interrupts the write.
	if ctx.Err() != nil {
		return stopped(ctx, b)
	}
	n, err := c.Write(b) // net.Conn.Write writes everything or fails
	e.bytes.Add(uint64(n))
	if err != nil {
		return writeFailed(ctx, b[n:], err)
	}
	return nil
}

// writeFailed is the error a write that failed with err, leaving unwritten,
// ends the connection with: a *Detached with a copy of unwritten for a
// write a Detach interrupted, err otherwise.
//
//go:noinline
func writeFailed(ctx context.Context, unwritten []byte, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && detaching(ctx) {
		return &Detached{State: bytes.Clone(unwritten)}
	}
	return err
}

// readFailed is the error a read that failed with err ends the connection
// with: a *Detached for a read a Detach interrupted, err otherwise.
//
//go:noinline
func readFailed(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && detaching(ctx) {
		return &Detached{}
	}
	return err
}

// stopped is what a handler whose ctx is cancelled returns, unwritten
// holding the bytes it read and did not write back: a *Detached with a
// copy of them when a Detach cancelled it, ctx.Err() otherwise.
//
//go:noinline
func stopped(ctx context.Context, unwritten []byte) error {
	if detaching(ctx) {
		if len(unwritten) == 0 {
			return &Detached{}
		}
		return &Detached{State: bytes.Clone(unwritten)}
	}
	return ctx.Err()
}

// detaching reports whether ctx was cancelled by a Detach.
func detaching(ctx context.Context) bool { return context.Cause(ctx) == ErrDetach }
