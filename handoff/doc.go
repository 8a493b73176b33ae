// Package handoff runs a daemon as a chain of generations that hand their
// listening sockets to each other, so the daemon can be reloaded or
// upgraded in place without refusing a connection.
//
// It wraps github.com/cloudflare/tableflip. A [Generation] is one process
// of the daemon:
//
//  1. [New] starts it. If it was exec'd by an earlier generation, it holds
//     the sockets that generation passed on.
//  2. [Generation.Listeners] takes the listening sockets in this order:
//     inherited from the previous generation, then passed by systemd socket
//     activation (first generation only), then — with Options.FDStore — kept
//     for it in systemd's fd store, then bound from the configured [Spec]s.
//     Every socket is registered, so the next generation gets the very same
//     socket (same inode, same accept queue).
//  3. [Generation.Ready] tells the previous generation that this one serves.
//     Inherited sockets nobody claimed are closed then.
//  4. [Generation.Upgrade] execs the binary at the daemon's path afresh and
//     waits until the new generation is ready or has failed. Requests are
//     queued and carried out one at a time: while an upgrade is in flight,
//     or while the previous generation is still draining (tableflip refuses
//     to upgrade until it has exited), a request waits instead of failing.
//     A failed upgrade leaves this generation serving; the new generation's
//     own reason ([Generation.Fail]) is part of the error.
//  5. After a successful upgrade [Generation.Exit] is closed: stop
//     accepting, drain and exit. Draining is the caller's job.
//
// With Options.FDStore the listeners this daemon binds are also handed to
// systemd's file descriptor store ([StoreName] names them), so they outlive
// the process across systemctl restart and crashes; listeners no longer
// configured are removed from the store.
//
// A new generation learns its number, the systemd sockets it inherits and
// where to report its pid or its failure from the ECHOD_HANDOFF environment
// variable, which it removes at once.
//
// The package never calls signal.Notify or os.Exit; the program decides how
// requests arrive (SIGHUP, a control socket) and when to exit.
package handoff
