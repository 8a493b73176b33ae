// Command echobench runs echod's benchmark scenarios on loopback and writes
// a Markdown report: the machine (CPU model from /proc/cpuinfo, cores,
// kernel, Go version), then for each scenario the exact command lines it
// ran and the figures.
//
// Usage, from the module root:
//
//	go run ./cmd/echobench [-out cmd/echobench/RESULTS.md] [-echod BIN] [-echoload BIN]
//	                       [-scenarios 1,2,3,4,5] [-steady 5s] [-storm 30s] [-keep]
//	echobench -plain-server ADDR
//
// It builds ./cmd/echod and ./cmd/echoload into a scratch directory unless
// -echod and -echoload name binaries, starts each server on 127.0.0.1:0
// (echod's bound address is read from its "msg=listener" log line), and
// drives it with echoload as a subprocess whose -json report supplies the
// figures. The report goes to stdout and to -out; plots go next to -out.
// A whole run takes about six minutes.
//
// Scenarios:
//
//  1. Steady state: throughput (msg/s, MB/s) and RTT p50/p99 of echod and of
//     a minimal Go echo server (net.Listen + io.Copy(c, c) per connection,
//     no handoff; this same program run with -plain-server, as a separate
//     process) at 64 B and 16 KiB messages with 1 and 100 steady streams
//     (-streams N -concurrency 0), and the ratios echod/plain.
//  2. Reload storm without systemd: (a) short connections, SIGHUP every
//     100 ms for -storm: reloads, failures, reload-to-ready percentiles, RTT
//     near reloads vs steady, with a plot (reload-storm.png); (b) 100
//     long-lived streams and short connections with a SIGHUP every second
//     and echod's defaults: the streams move to each new generation
//     (migration), or, without it, upgrades queue behind the draining
//     first generation; reloads ok, pending (queued at the end of the run)
//     and failed, and connection failures; (c) 10,000 streams (one 64 B
//     message every 100 ms each) and one SIGHUP, against echod with
//     -migrate (the default) and with -migrate=false (drain), both with
//     -drain-timeout 60s: SIGHUP to the new generation ready, the
//     hand-over's time and moved/kept/lost from the old generation's log,
//     who holds the descriptors after, when the old generation exits, RTT
//     near the reload vs steady, failures and bytes lost; then the same
//     with 19,000 streams (migrate), the most that fit RLIMIT_NOFILE
//     20000 in echoload and in each generation.
//  3. Reload storm under systemd: not wired yet, reported as skipped.
//  4. Memory and descriptors: VmRSS and /proc/PID/fd of echod before and
//     while holding 10,000 idle connections (echoload -hold), per
//     connection; the same for the plain server (about 3 descriptors per
//     connection through splice, so it stops short of 10,000 under a
//     20,000 limit); the most connections echod holds (19,500, 19,900,
//     19,980); and a SIGHUP while holding: the new generation's descriptors,
//     the old one still serving the held connections until they close.
//  5. Go benchmarks: go test -run='^$' -bench=. -benchmem ./daemon/
//     ./handoff/ ./systemd/, output verbatim.
//
// echobench reports; it does not judge. It exits 0 when every scenario
// ran, whatever the figures, 1 if something could not run (the report
// says what), 2 for invalid flags. Every subprocess is bounded by a
// timeout and killed on exit. echod generations are tracked through their
// log lines (pid=, gen=); echobench makes itself a child subreaper so that
// generations whose parent exited are reaped by it, and at the end of each
// scenario sends SIGTERM to every generation still alive, then SIGKILL to
// echod's process group.
package main
