package daemon

import (
	"context"
	"net"
)

// Handler serves one connection until it is done. The server closes c
// after ServeConn returns, whatever it returns; the error is only logged
// (at debug level, and not at all for the ordinary ends of a connection:
// net.ErrClosed, ECONNRESET, EPIPE, context.Canceled).
//
// ctx is cancelled by [Server.Close], the hard stop, never by
// [Server.Shutdown]: a handler drains by finishing on its own. Close also
// closes c, which unblocks a handler waiting in c.Read or c.Write even if
// it never looks at ctx. A handler that is a [Resumer] also sees ctx
// cancelled with cause [ErrDetach] by [Server.Detach], and c's deadlines
// set to now: it is to stop at a safe point and return a [*Detached].
// Any other handler is never interrupted by Detach.
type Handler interface {
	ServeConn(ctx context.Context, c net.Conn) error
}

// HandlerFunc lets an ordinary function be a [Handler].
type HandlerFunc func(ctx context.Context, c net.Conn) error

// ServeConn calls f(ctx, c).
func (f HandlerFunc) ServeConn(ctx context.Context, c net.Conn) error {
	return f(ctx, c)
}
