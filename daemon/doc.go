// Package daemon is a drainable echo server: every byte a client sends is
// written back, in order, on the same connection until the client closes.
//
// The lifecycle follows net/http: [Server.Serve] blocks accepting on a
// listener; [Server.Shutdown] stops accepting, waits for every accept loop
// to return and then for the open connections to finish (or the context to
// expire); [Server.Close] is the hard stop. A connection is counted before
// its goroutine starts, so Shutdown never misses one that was accepted just
// before the listener closed.
//
// The server is built for many long-lived, mostly idle connections: each
// costs one file descriptor and one goroutine, and holds no buffer while it
// waits for data (buffers come from a pool only while bytes are in flight).
// Running out of file descriptors makes the accept loop back off and retry.
//
// The package knows nothing of generations, tableflip or systemd; any
// daemon that needs a drainable TCP or Unix-socket server can use it.
package daemon
