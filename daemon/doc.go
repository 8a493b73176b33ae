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
// costs one file descriptor and one goroutine, and the echo handler holds
// no buffer while it waits for data (buffers come from a pool only while
// bytes are in flight; on Linux it reads through the raw fd). Running out
// of file descriptors makes the accept loop back off and retry.
//
// The package knows nothing of generations, tableflip or systemd; any
// daemon that needs a drainable TCP or Unix-socket server can use it.
package daemon
