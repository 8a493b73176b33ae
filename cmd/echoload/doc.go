// Command echoload is a load generator and verifier for echo servers such
// as echod. It proves "zero dropped connections across reloads": every byte
// sent is checked on the way back, every failure is classified and counted,
// and reloads can be triggered periodically during the load, with failures
// and latency near reloads reported separately from steady state.
//
// Usage:
//
//	echoload [flags]
//
// Workloads (combinable; the run stops by itself after -duration, or after
// -count short connections, whichever comes first):
//
//   - short connections: connect, send one -size message, read the full
//     echo back, close; -concurrency workers (0 disables them), at -rate
//     connections per second (0 = as fast as possible);
//   - long-lived streams (-streams N): each keeps one connection open for
//     the whole run and exchanges messages back to back or one every
//     -stream-interval; after a failure a stream reconnects;
//   - hold mode (-hold N): open N idle connections (each must echo one
//     message), hold them for -duration, check each still echoes, close.
//     Reports how many could be opened and the first error otherwise.
//
// Each message starts with a 32-byte header (magic, length, connection id,
// sequence number, CRC-32C of header and payload) followed by a
// pseudo-random payload; the echo must equal what was sent byte for byte.
// A truncated, reordered, duplicated, foreign or altered echo is reported
// as "corrupt" with a diagnosis.
//
// Failure classes, counted separately: connect_refused (including a
// missing Unix socket), connect_timeout, reset (reset by peer or broken
// pipe), eof (peer closed before the full echo), timeout (read or write),
// corrupt, other. -timeout bounds the connect and each read and write
// (not reloads).
//
// Reloads: -reload-cmd runs a shell command (sh -c) every -reload-every; a
// reload lasts from the command's start to its exit and fails if it exits
// non-zero or outlasts -reload-timeout. -reload-signal SIG -reload-pid-file
// FILE sends SIG to the pid in FILE; the reload lasts until FILE names a
// different pid (the new generation is ready) and fails if that takes
// longer than -reload-timeout. -reload-timeout (default 60s) is separate
// from -timeout because a daemon may legitimately queue a reload: echod
// cannot start a new generation while the previous one still drains
// long-lived connections, and carries the reload out as soon as that
// generation exits (at most its drain timeout, 30s by default).
//
// Reloads never overlap: a tick of -reload-every that comes while a reload
// is in progress is skipped, and the report counts the skipped ticks. When
// the run ends, a reload command in progress is still waited for (a
// "systemctl reload" must not be killed halfway; bounded by
// -reload-timeout) and counts normally. A signal reload still waiting for
// the new generation is not waited for: it is reported as pending (signal
// mode only), which is neither a success nor a failure. Reports show
// "reloads: N (ok X, failed Y, pending Z)" (JSON: reloads.pending,
// reloads.skipped, "pending": true on the event); pending reloads are left
// out of the reload-duration figures and do not make the run fail. An
// operation overlapping [reload start, reload end + -reload-window] counts
// as "near reload" (a pending reload ends with the run).
//
// Output: a live progress line on stderr when it is a terminal; a table on
// stdout; -json FILE writes every figure with stable field names
// (latencies in milliseconds); -plot FILE (.png, .svg or .pdf) draws RTT p99
// and max per time bucket with reloads as vertical lines.
//
// At start the soft RLIMIT_NOFILE is raised to the hard limit.
//
// Exit status: 0 if every operation succeeded and no reload failed (pending
// reloads are not failures), 1 if anything failed (or an output file could
// not be written), 2 for invalid flags.
//
// Flags:
//
//	-addr string             server: host:port, unix:/path or /path (default "127.0.0.1:7007")
//	-duration duration       run length; hold mode: how long to hold (default 10s)
//	-count n                 total short connections, 0 = unlimited
//	-rate float              short connections per second, 0 = as fast as possible
//	-concurrency n           short-connection workers, 0 = none; hold mode: parallel opens (default 4)
//	-size n                  message size in bytes, 32-byte header included (default 64)
//	-streams n               long-lived streams (default 0)
//	-stream-interval d       pause between messages on a stream (default 0)
//	-timeout d               bound on connect and each read/write (default 5s)
//	-hold n                  hold mode: number of idle connections
//	-reload-cmd cmd          reload command, run with sh -c
//	-reload-signal sig       reload signal (HUP, USR2, ...; default HUP with -reload-pid-file)
//	-reload-pid-file file    pid file of the daemon
//	-reload-every d          interval between reload starts (default 1s)
//	-reload-timeout d        bound on each reload: the command, or the wait for a new pid (default 60s)
//	-reload-window d         "near reload" window after each reload (default 100ms)
//	-json file               write the JSON report
//	-plot file               write the RTT-over-time plot (.png, .svg, .pdf)
//
// Examples:
//
//	# 30s of short connections and 16 streams, reloading every 500ms via systemd
//	echoload -addr 127.0.0.1:7007 -duration 30s -concurrency 8 -streams 16 \
//		-reload-cmd 'systemctl --user reload echod' -reload-every 500ms \
//		-json out.json -plot out.png
//
//	# SIGHUP every 100ms, new generation detected through the pid file
//	echoload -addr unix:/run/user/1000/echod.sock -duration 10s -streams 8 \
//		-reload-signal HUP -reload-pid-file /run/user/1000/echod.pid -reload-every 100ms
//
//	# memory benchmark: hold 10000 idle connections for 30s
//	echoload -addr 127.0.0.1:7007 -hold 10000 -duration 30s
package main
