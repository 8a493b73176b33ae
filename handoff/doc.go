// Package handoff runs a daemon as a chain of generations that hand their
// listening sockets to each other, so the daemon can be reloaded or
// upgraded in place without refusing a connection. Linux only: on other
// systems the package holds just [ParseSpec] and [Spec].
//
// [Run] is the whole lifecycle, for any server with Serve(net.Listener),
// Shutdown(ctx) and Close() (package daemon's, or net/http's): it takes the
// listeners, builds the server, becomes ready and only then serves; it
// turns SIGHUP and control-socket requests (package control) into
// upgrades, one at a time; it tells systemd (RELOADING, then MAINPID of the
// new generation + READY + BARRIER, or READY + STATUS on failure); once
// replaced or stopped it drains, and a second stop request forces it.
//
// Underneath, a [Generation] is one process of the daemon, over
// github.com/cloudflare/tableflip:
//
//  1. [New] starts it. If it was exec'd by an earlier generation, it reads
//     what that generation passed over their channel (see the protocol in
//     proto.go) and greets it.
//  2. [Generation.Listeners] takes the listening sockets in this order:
//     inherited from the previous generation, then passed by systemd socket
//     activation (first generation only), then — with Options.FDStore — kept
//     for it in systemd's fd store, then bound from the configured [Spec]s.
//     Every socket is registered, so the next generation gets the very same
//     socket (same inode, same accept queue).
//  3. [Generation.Ready] is the commit: the previous generation is told,
//     stops accepting and drains. Inherited sockets nobody claimed are
//     closed then. Serve only after it returned nil.
//  4. [Generation.Upgrade] execs the binary at the daemon's path afresh,
//     with a new channel, and waits until the new generation is ready or
//     has failed. Requests are queued and carried out one at a time: while
//     an upgrade is in flight, or while the previous generation is still
//     draining (tableflip refuses to upgrade until it has exited), a
//     request waits instead of failing. A failed upgrade leaves this
//     generation serving; the new generation's own reason
//     ([Generation.Fail]) is part of the error. A binary of a release that
//     does not speak this release's protocol is refused before the exec
//     ([ErrIncompatible]).
//  5. After a successful upgrade [Generation.Exit] is closed: stop
//     accepting, drain and exit.
//
// # Live connections
//
// When the server is a [Migrator] (package daemon's, with a handler that
// is a daemon.Resumer) and [Config].Migrate is set, every upgrade also
// hands the live connections to the new generation. With a [Stager]
// (daemon's Server is one) the hand-over is staged (staged.go): before
// the new generation's commit the old one pauses accepting and sends a
// copy of every live connection's descriptor (SCM_RIGHTS, at most 253 a
// message) while it serves them all on; the new one takes what fits its
// fd and MaxConns room and serves none. After the commit the old
// generation takes them out of its server a batch at a time at a safe
// point (DetachConns) and sends each batch's handler states; the new one
// serves each connection as its state arrives, so a stream pauses only
// while its own batch moves. A copy whose connection the old generation
// closed meanwhile, or kept, is closed in the new one: it never served a
// byte. With a plain Migrator, or a new generation that does not take
// the staged hand-over (the builds before it), the hand-over happens
// wholly before the commit (migrate.go): connections are taken out a
// batch at a time (DetachN) and sent with their states, and the new
// generation serves them once committed. Either way, after a failed
// upgrade (the new generation died, hung or broke the channel before its
// commit) the old one serves every connection again, none lost, and
// after a successful one it drains only what was not taken. The garbage
// collector is off in both processes meanwhile (see holdGC: the hand-over
// is bounded, and so is what it allocates).
//
// An adopted connection is a net.Conn made straight of the received
// descriptor (no duplicate, no socket option set again: net.FileConn's
// dozen system calls a socket were most of a hand-over's cost). It is not
// a *net.TCPConn: its errors are *net.OpError, it implements syscall.Conn,
// CloseRead and CloseWrite, and the socket keeps the options the previous
// generation set; a handler that needs more reaches the descriptor through
// SyscallConn. A connection without a descriptor (wrapped in user space)
// stays with the old generation and drains there.
//
// With Options.FDStore the listeners this daemon binds are also handed to
// systemd's file descriptor store ([StoreName] names them), so they outlive
// the process across systemctl restart and crashes; listeners no longer
// configured are removed from the store.
//
// [Config].HTTP adds endpoints served over HTTP (package handoff/metrics
// is one), each on a socket handed over like the control socket: a
// client is never refused during a reload, and a replaced generation stops
// accepting on it as soon as the new one committed. What a program keeps
// across generations (counters) goes with each upgrade's offer:
// Options.Carry in the old generation, [Generation.Carried] in the new.
//
// Nothing of the hand-over is in the environment: generations speak over
// a socketpair made for each upgrade (systemd's LISTEN_* and NOTIFY_SOCKET
// aside, and tableflip's own marker variable).
//
// The package never calls signal.Notify or os.Exit; the program passes the
// signals it asked for to Run and decides how to exit.
package handoff
