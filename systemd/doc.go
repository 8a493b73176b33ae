// Package systemd speaks the parts of systemd's service protocol a reloading
// daemon needs, and nothing else:
//
//   - socket activation (sd_listen_fds(3)): [Activated] takes the listening
//     sockets systemd passed in LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, through
//     github.com/coreos/go-systemd/v22/activation, after checking that the
//     environment is well-formed and that every fd is a listening stream
//     socket — go-systemd alone silently ignores both kinds of mistake;
//   - readiness and status notification (sd_notify(3)): [Notifier] sends
//     READY=1, RELOADING=1, MAINPID=, STATUS=, STOPPING=1 and WATCHDOG=1,
//     refuses messages built from unchecked text, and implements BARRIER=1
//     (sd_notify_barrier(3)), which go-systemd lacks;
//   - the watchdog (WATCHDOG_USEC), including in a process that inherited
//     the environment of an earlier main process.
//
// The unit files shipped with echod are in the units directory beside this
// package. A service using this package looks like:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	ExecStart=/usr/local/bin/echod
//	ExecReload=/usr/local/bin/echod reload
//
// NotifyAccess=all is required when a new generation of the daemon (a child
// of the main process) must be able to send MAINPID= and READY=1.
//
// See https://www.freedesktop.org/software/systemd/man/sd_notify.html and
// https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html.
package systemd
