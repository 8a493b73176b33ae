// Package control is a daemon's control socket: a Unix socket on which
// commands such as reload, status and stop are answered synchronously and
// truthfully. A client ([Request]) returns when the daemon has done the
// work, and fails with the daemon's reason when it could not, so systemd's
// ExecReload= and ExecStop= mean what they say:
//
//	[Service]
//	Type=notify
//	RuntimeDirectory=echod
//	ExecStart=/usr/local/bin/echod -control /run/echod/control
//	ExecReload=/usr/local/bin/echod reload -control /run/echod/control
//	ExecStop=/usr/local/bin/echod stop -control /run/echod/control
//
// The server ([Server]) is a [daemon.Server] with a per-connection handler
// that speaks the protocol below and passes each command to a [Handler].
// Requests run concurrently: a status request is answered while a reload is
// in flight. [Listen] creates the socket of the first generation; later
// generations inherit it (see package handoff), and every generation serves
// the same socket until it stops accepting.
//
// # Control protocol version 1
//
// A client connects to the Unix stream socket, sends one request line and
// reads one answer line; the server closes the connection after the answer.
//
//	request: <command> "\n"
//	answer:  "ok" [" " <text>] "\n"
//	       | "error" [" " <reason>] "\n"
//	       | "retry" [" " <reason>] "\n"
//
// The commands of echod are reload, reload-status, status and stop. A request line is at
// most 4096 bytes before its newline, valid UTF-8 without control
// characters; white space around the command (a "\r" before the newline,
// say) is ignored. The line must end within 5 seconds of the connection.
// Anything else is answered "error <reason>" and the connection closed.
//
// "ok" carries the command's result, "error" why it failed. "retry" means
// the generation that took the request cannot serve it: it was just
// replaced by a new generation, or is not ready yet. The client then sends
// the same request on a new connection 10 ms later, which reaches the
// generation now accepting, and so on until its own deadline. Answers are
// one line of UTF-8 text without control characters.
//
// A request runs until it is answered or the client hangs up (closes its
// socket): the hang-up cancels the request's context. Bytes the client sends
// after its request line are read and ignored; they cancel nothing. A client
// that shuts down only its writing side (shutdown(2) SHUT_WR, "half-close")
// still gets its answer.
//
// Only root and the user the daemon runs as may use the socket: the server
// checks the peer's credentials (SO_PEERCRED) and answers anyone else
// "error permission denied". [Listen] also creates the socket with mode 0600.
//
// Later versions of the protocol only add commands. A server answers a
// command it does not know "error unknown command ..." ([UnknownCommand]),
// so a newer client talking to an older daemon (or the other way round,
// after the binary was upgraded in place) gets a clear error, never a
// misunderstanding.
package control
