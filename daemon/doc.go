// Package daemon is a drainable server around a per-connection [Handler]:
// it accepts on one or more listeners, runs the handler for each
// connection in its own goroutine, and on shutdown stops accepting and
// waits for the connections to end. [Echo], the handler a server uses when
// none is given, writes every byte a client sends back, in order, on the
// same connection until the client closes; any other protocol is a
// [HandlerFunc] away.
//
// The lifecycle follows net/http: [Server.Serve] blocks accepting on a
// listener; [Server.Shutdown] stops accepting, waits for every accept loop
// to return and then for the open connections to finish (or the context to
// expire); [Server.Close] is the hard stop: it cancels the context given to
// the handlers and closes every connection. A connection is counted before
// its goroutine starts, so Shutdown never misses one that was accepted just
// before the listener closed. *Server has the Serve, Shutdown and Close
// methods of *http.Server, so code that stops either kind of server can
// take an interface of the three.
//
// [Config.MaxConns] bounds the connections served at once across all
// listeners. An accept loop waits for a free slot before it accepts but
// takes the slot only after, so a listener with no clients holds no slot
// and every listener keeps accepting, however many there are.
//
// The server is built for many long-lived, mostly idle connections: each
// costs one file descriptor and one goroutine (with a 2 KiB stack, adopted
// connections included), and the echo handler holds no buffer while it
// waits for data (buffers come from a pool only while bytes are in
// flight; on Linux it reads through the raw fd). Running out of file
// descriptors makes the accept loop back off and retry.
//
// # Moving live connections
//
// A daemon that reloads by starting a new generation of itself can hand
// its live connections over instead of draining them, when its handler is
// a [Resumer] (Echo is one). [Server.Detach] stops accepting and brings
// every connection to a safe point: it cancels the handlers' context with
// cause [ErrDetach] and sets each connection's deadlines to now, which
// interrupts a blocked read or write; the handler returns a [*Detached]
// holding its state (for the echo, the bytes it read and has not written
// back). The server then stops tracking the connection and returns it,
// open, with the state as a [DetachedConn]: the kernel keeps the
// connection, and every byte the client sent and nobody read yet, in its
// buffers. The caller passes its descriptor to the new generation
// (package handoff does, with SCM_RIGHTS), where a net.Conn made of the
// descriptor ([net.FileConn], say) and [Server.Adopt] resume it from its
// state ([Resumer.ResumeConn]), and
// closes its own: closing a descriptor does not shut the socket down. No
// byte is lost, duplicated or reordered, and the client notices nothing.
// A hand-over that fails is undone with Adopt in the old generation, which
// may also Serve again, or Shutdown to drain.
//
// [Server.DetachN] takes them out in batches of at most n, so that each
// connection pauses only while its batch moves; the others are served on
// meanwhile.
//
// Detach waits for every handler to answer, or for its context to end:
// the connections whose handler had not answered then are served on
// (their deadlines cleared), and one whose handler returns *Detached later
// is resumed in place. Handlers that are not Resumers are not interrupted:
// their connections are left to Shutdown.
//
// The package knows nothing of generations, tableflip or systemd; any
// daemon that needs a drainable TCP or Unix-socket server can use it.
package daemon
