package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/cmd/echoload/load"
)

func itoa(n int) string { return strconv.Itoa(n) }

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "echobench:   "+format+"\n", args...)
}

// steadyState is scenario 1: throughput and RTT of echod and of the plain
// io.Copy server, with steady streams.
func (b *bench) steadyState(ctx context.Context, sec *section) error {
	ed, err := startEchod(ctx, b.echod, b.tmp, "s1-echod")
	if err != nil {
		return err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	pl, err := startPlain(ctx, b.self)
	if err != nil {
		return err
	}
	defer pl.Stop()
	sec.cmdc(pl.argv, "bound to "+pl.addr)

	sec.p("Each run keeps N connections open (`-streams N -concurrency 0`) exchanging messages back to back "+
		"for %s; a message is echoed and verified before the next is sent on the same connection. "+
		"Both servers run as separate processes and are measured alternately.", b.steady)
	var (
		rows, ratios [][]string
		errs         []error
	)
	for _, size := range []int{64, 16 << 10} {
		for _, n := range []int{1, 100} {
			var r [2]*load.Report
			for i, srv := range []struct{ name, addr string }{{"echod", ed.addr}, {"plain", pl.addr}} {
				name := fmt.Sprintf("s1-%s-%d-%d", srv.name, size, n)
				rep, err := b.runLoad(ctx, sec, name, b.steady+time.Minute,
					"-addr", srv.addr, "-duration", b.steady.String(), "-concurrency", "0",
					"-streams", itoa(n), "-size", itoa(size))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					rows = append(rows, []string{sizeName(size), itoa(n), srv.name, "error", "", "", "", ""})
					continue
				}
				r[i] = rep
				b.progress("%s: %.0f msg/s, p99 %.3f ms", name, rep.Throughput.MessagesPerSec, rep.RTT.All.P99MS)
				rows = append(rows, []string{sizeName(size), itoa(n), srv.name,
					fmtF(rep.Throughput.MessagesPerSec, 0), fmtF(rep.Throughput.MBPerSec, 1),
					fmtF(rep.RTT.All.P50MS, 3), fmtF(rep.RTT.All.P99MS, 3), failuresString(rep.Failures.All)})
			}
			if r[0] != nil && r[1] != nil {
				ratios = append(ratios, []string{sizeName(size), itoa(n),
					fmtRatio(r[0].Throughput.MessagesPerSec, r[1].Throughput.MessagesPerSec),
					fmtRatio(r[0].RTT.All.P50MS, r[1].RTT.All.P50MS),
					fmtRatio(r[0].RTT.All.P99MS, r[1].RTT.All.P99MS)})
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	sec.table([]string{"message", "conns", "server", "msg/s", "MB/s", "RTT p50", "RTT p99", "failures"}, rows)
	sec.p("Overhead, echod / plain (throughput below 1.00x and latency above 1.00x mean echod is slower):")
	sec.table([]string{"message", "conns", "throughput", "RTT p50", "RTT p99"}, ratios)
	return errors.Join(errs...)
}

// reloadStorm is scenario 2: SIGHUP reloads under load, (a) with short
// connections only, (b) with long-lived streams open, (c) one reload with
// 10,000 live streams, handed over or drained (migrate.go).
func (b *bench) reloadStorm(ctx context.Context, sec *section) error {
	errA := b.stormShort(ctx, sec)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	errB := b.stormStreams(ctx, sec)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	errC := b.stormMigrate(ctx, sec)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	errD := b.stormPlot(ctx, sec)
	return errors.Join(errA, errB, errC, errD)
}

// Scenario 2d: streams across reloads, plotted.
const (
	plotStreams  = 2000
	plotInterval = 200 * time.Millisecond // 10,000 msg/s, which this machine carries
	plotEvery    = 3 * time.Second
	plotDur      = 20 * time.Second
)

// stormPlot is 2d: 2,000 streams across a SIGHUP every 3 s, each moving
// its connections; echoload's plot of RTT over time with the reloads
// marked and shaded, and every hand-over echod logged.
func (b *bench) stormPlot(ctx context.Context, sec *section) error {
	sec.body.WriteString(fmt.Sprintf("### 2d. %s streams across reloads, plotted\n\n", fmtInt(plotStreams)))
	sec.note("2d")
	ed, err := startEchod(ctx, b.echod, b.tmp, "s2d-echod", "-drain-timeout", "1m")
	if err != nil {
		return err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	args := []string{"-addr", ed.addr, "-duration", plotDur.String(), "-concurrency", "0",
		"-streams", itoa(plotStreams), "-stream-interval", plotInterval.String(),
		"-reload-signal", "HUP", "-reload-pid-file", ed.pidFile, "-reload-every", plotEvery.String(),
		"-reload-window", migReloadWindow.String()}
	plot := ""
	if b.plotDir != "" {
		plot = filepath.Join(b.plotDir, "migration-streams.png")
		args = append(args, "-plot", plot)
	}
	rep, err := b.runLoad(ctx, sec, "s2d", plotDur+2*time.Minute, args...)
	if err != nil {
		return err
	}
	hands := ed.HandOverList()
	b.progress("2d: %d reloads (%d failed), %d hand-overs, %d failures", rep.Reloads.Count, rep.Reloads.Failed, len(hands), rep.Failures.All.Total)
	sec.p("%s streams (`-streams %d -stream-interval %s -concurrency 0`: each one connection sending a 64 B message "+
		"every %s and verifying every echoed byte; %s msg/s offered) for %s, with a SIGHUP every %s (echoload's "+
		"reload ends when the pid file names the new generation, at the commit; the moves go on after it). "+
		"Every reload hands every stream over (the staged hand-over: copies before the commit, each batch "+
		"moved after it). Near a reload = overlapping [SIGHUP, commit + %s].",
		fmtInt(plotStreams), plotStreams, plotInterval, plotInterval, fmtInt(int64(float64(plotStreams)/plotInterval.Seconds())),
		plotDur, plotEvery, migReloadWindow)
	var moved, took []string
	for _, h := range hands {
		moved = append(moved, itoa(h.moved))
		took = append(took, fmtF(h.took.Seconds()*1000, 0))
	}
	sec.table([]string{"figure", "value", "target"}, [][]string{
		{"reloads attempted / ok / failed", fmt.Sprintf("%d / %d / %d", rep.Reloads.Count, rep.Reloads.OK, rep.Reloads.Failed), "0 failed"},
		{"connections moved, per hand-over (log)", strings.Join(moved, ", "), fmt.Sprintf("%d each", plotStreams)},
		{"hand-over took, per reload (ms, log)", strings.Join(took, ", "), ""},
		{"stream messages ok / stream connections", fmt.Sprintf("%s / %d", fmtInt(rep.Streams.Messages), rep.Streams.Connections), fmt.Sprintf("%d connections", plotStreams)},
		{"failed operations", fmt.Sprintf("%d (%s)", rep.Failures.All.Total, failuresString(rep.Failures.All)), "0"},
		{"RTT p99 / max steady (ms)", fmt.Sprintf("%s / %s", fmtF(rep.RTT.Steady.P99MS, 1), fmtF(rep.RTT.Steady.MaxMS, 1)), ""},
		{"RTT p99 / max near a reload (ms)", fmt.Sprintf("%s / %s", fmtF(rep.RTT.NearReload.P99MS, 1), fmtF(rep.RTT.NearReload.MaxMS, 1)), "p99 < 100"},
	})
	b.describeFailures(sec, rep)
	if plot != "" {
		sec.p("![RTT p99 and max per 100 ms bucket of %s streams; each reload a dashed line, shaded from the SIGHUP to the commit](%s)", fmtInt(plotStreams), filepath.Base(plot))
	}
	return nil
}

func (b *bench) stormShort(ctx context.Context, sec *section) error {
	sec.body.WriteString("### 2a. Short connections, SIGHUP every 100 ms\n\n")
	sec.note("2a")
	ed, err := startEchod(ctx, b.echod, b.tmp, "s2a-echod")
	if err != nil {
		return err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	// Baseline: the same load without reloads. With a reload every 100 ms
	// nearly every operation of the storm is "near reload", so its own
	// steady figures rest on few samples.
	base, err := b.runLoad(ctx, sec, "s2a-baseline", b.steady+time.Minute,
		"-addr", ed.addr, "-duration", b.steady.String(), "-concurrency", "4")
	if err != nil {
		return err
	}
	args := []string{"-addr", ed.addr, "-duration", b.storm.String(), "-concurrency", "4",
		"-reload-signal", "HUP", "-reload-pid-file", ed.pidFile, "-reload-every", "100ms"}
	plot := ""
	if b.plotDir != "" {
		plot = filepath.Join(b.plotDir, "reload-storm.png")
		args = append(args, "-plot", plot)
	}
	rep, err := b.runLoad(ctx, sec, "s2a", b.storm+2*time.Minute, args...)
	if err != nil {
		return err
	}
	gens := ed.Gens()
	b.progress("2a: %d reloads (%d failed), %d failures", rep.Reloads.Count, rep.Reloads.Failed, rep.Failures.All.Total)
	sec.p("%d short-connection workers (connect, one 64 B message, close) for %s while echoload sends SIGHUP "+
		"to the pid in the pid file every 100 ms; a reload lasts until the pid file names the new generation "+
		"(ready). \"Near reload\" = an operation overlapping [reload start, ready + 100 ms]. Default drain "+
		"timeout: a short connection finishes long before it would matter. Baseline = the same load for %s "+
		"against the same echod without reloads (first command).", 4, b.storm, b.steady)
	rd := rep.Reloads.Duration
	sec.table([]string{"figure", "value", "target"}, [][]string{
		{"reloads attempted / completed / failed", fmt.Sprintf("%d / %d / %d", rep.Reloads.Count, rep.Reloads.OK, rep.Reloads.Failed), "all complete"},
		{"generations seen in the log", itoa(len(gens)), ""},
		{"upgrades that waited for a draining generation", itoa(ed.UpgradeWaits()), ""},
		{"short connections ok", fmtInt(rep.Short.OK), ""},
		{"failed operations", fmt.Sprintf("%d (%s)", rep.Failures.All.Total, failuresString(rep.Failures.All)), "0"},
		{"  of which near a reload", itoa(int(rep.Failures.NearReload.Total)), "0"},
		{"throughput (msg/s) baseline / storm", fmt.Sprintf("%s / %s", fmtF(base.Throughput.MessagesPerSec, 0), fmtF(rep.Throughput.MessagesPerSec, 0)), ""},
		{"reload to ready p50 / p99 / max (ms)", fmt.Sprintf("%s / %s / %s", fmtF(rd.P50MS, 1), fmtF(rd.P99MS, 1), fmtF(rd.MaxMS, 1)), ""},
		{"RTT p99 baseline / storm steady / storm near reload (ms)", fmt.Sprintf("%s / %s / %s", fmtF(base.RTT.All.P99MS, 3), fmtF(rep.RTT.Steady.P99MS, 3), fmtF(rep.RTT.NearReload.P99MS, 3)), ""},
		{"RTT max baseline / storm steady / storm near reload (ms)", fmt.Sprintf("%s / %s / %s", fmtF(base.RTT.All.MaxMS, 3), fmtF(rep.RTT.Steady.MaxMS, 3), fmtF(rep.RTT.NearReload.MaxMS, 3)), ""},
		{"connect p99 baseline / storm steady / storm near reload (ms)", fmt.Sprintf("%s / %s / %s", fmtF(base.Connect.All.P99MS, 3), fmtF(rep.Connect.Steady.P99MS, 3), fmtF(rep.Connect.NearReload.P99MS, 3)), ""},
		{"storm operations steady / near reload", fmt.Sprintf("%s / %s", fmtInt(rep.RTT.Steady.Count), fmtInt(rep.RTT.NearReload.Count)), ""},
		{"baseline failed operations", fmt.Sprintf("%d (%s)", base.Failures.All.Total, failuresString(base.Failures.All)), "0"},
	})
	b.describeFailures(sec, rep)
	if plot != "" {
		sec.p("![RTT p99 and max per 100 ms bucket during the SIGHUP storm; reloads as vertical lines](%s)", filepath.Base(plot))
	}
	return nil
}

func (b *bench) describeFailures(sec *section, rep *load.Report) {
	describeFailuresOf(sec, rep, "")
}

// describeFailuresOf lists the first failures of rep, if any, under a
// heading naming the run (label) when there are several.
func describeFailuresOf(sec *section, rep *load.Report, label string) {
	var lines []string
	for i, f := range rep.FirstFailures {
		if i == 5 {
			break
		}
		lines = append(lines, fmt.Sprintf("%s %s: %s", f.Workload, f.Class, f.Error))
	}
	for i, f := range rep.Reloads.Failures {
		if i == 5 {
			break
		}
		lines = append(lines, "reload: "+f.Error)
	}
	if len(lines) > 0 {
		if label != "" {
			sec.p("First failures reported by echoload (%s):", label)
		} else {
			sec.p("First failures reported by echoload:")
		}
		sec.code(strings.Join(lines, "\n"))
	}
}

func (b *bench) stormStreams(ctx context.Context, sec *section) error {
	sec.body.WriteString("### 2b. 100 long-lived streams open, SIGHUP every 1 s, default drain timeout\n\n")
	sec.note("2b")
	const dur = 20 * time.Second
	ed, err := startEchod(ctx, b.echod, b.tmp, "s2b-echod")
	if err != nil {
		return err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	loadStart := time.Now()
	rep, err := b.runLoad(ctx, sec, "s2b", dur+2*time.Minute,
		"-addr", ed.addr, "-duration", dur.String(), "-concurrency", "4",
		"-streams", "100", "-stream-interval", "10ms",
		"-reload-signal", "HUP", "-reload-pid-file", ed.pidFile, "-reload-every", "1s")
	if err != nil {
		return err
	}
	loadEnd := time.Now()
	// The streams are closed now: generation 1 can finish draining and a
	// queued upgrade proceed. Give it a moment to show in the log.
	if rep.Reloads.Pending > 0 {
		ed.WaitReadyGen(ed.ReadyGen()+1, 3*time.Second)
	}
	b.progress("2b: %d reloads, %d ok, %d pending, %d failed, %d failures", rep.Reloads.Count, rep.Reloads.OK,
		rep.Reloads.Pending, rep.Reloads.Failed, rep.Failures.All.Total)
	if n := ed.HandOvers(); n > 0 {
		// echod's default (-migrate): the streams move at every reload.
		sec.p("100 streams (one 64 B message every 10 ms each) stay connected for the whole %s run, plus 4 "+
			"short-connection workers, with echod's default settings. At every SIGHUP the old generation hands "+
			"its live connections to the new one (migration, echod's default; %d hand-overs in the log) and "+
			"exits, so no upgrade waits for a draining generation and every reload completes; 2c compares "+
			"this with draining (-migrate=false), where the first generation keeps its streams until they close "+
			"and the next upgrades queue behind it. The figure that matters is connection failures.", dur, n)
	} else {
		sec.p("100 streams (one 64 B message every 10 ms each) stay connected to generation 1 for the whole %s run, "+
			"plus 4 short-connection workers. The first SIGHUP starts generation 2; generation 1 then drains, which "+
			"lasts until its streams close (the client closes them at the end of the run, before the 30 s drain "+
			"timeout). Further upgrades are queued until it has exited, so the next reload echoload sends waits for "+
			"the new generation until the run ends: echoload reports it as pending, not failed (it would fail only "+
			"after -reload-timeout, default 60 s), and skips the reload ticks that fall while it is in flight, since "+
			"reloads never overlap. Queuing is the designed behaviour, not a dropped connection; the figure that "+
			"matters is connection failures.", dur)
	}
	sec.table([]string{"figure", "value", "target"}, [][]string{
		{"reloads attempted / ok / pending / failed / ticks skipped", fmt.Sprintf("%d / %d / %d / %d / %d",
			rep.Reloads.Count, rep.Reloads.OK, rep.Reloads.Pending, rep.Reloads.Failed, rep.Reloads.Skipped), "0 failed"},
		{"upgrades that waited for a draining generation (log)", itoa(ed.UpgradeWaits()), ""},
		{"connection hand-overs (log)", itoa(ed.HandOvers()), ""},
		{"stream messages ok / stream connections", fmt.Sprintf("%s / %d", fmtInt(rep.Streams.Messages), rep.Streams.Connections), "100 connections"},
		{"short connections ok", fmtInt(rep.Short.OK), ""},
		{"failed operations (streams + short)", fmt.Sprintf("%d (%s)", rep.Failures.All.Total, failuresString(rep.Failures.All)), "0"},
		{"RTT p99 steady / near reload (ms)", fmt.Sprintf("%s / %s", fmtF(rep.RTT.Steady.P99MS, 3), fmtF(rep.RTT.NearReload.P99MS, 3)), ""},
	})
	b.describeFailures(sec, rep)
	sec.p("Generations, from echod's log (seconds since echoload started; it ran until %.1f s):", loadEnd.Sub(loadStart).Seconds())
	sec.table([]string{"generation", "pid", "ready at (s)", "exited at (s)"}, genTimeline(ed.Gens(), loadStart))
	return nil
}

// genTimeline lists generations with their ready and exit times relative
// to t0.
func genTimeline(gens map[int]genInfo, t0 time.Time) [][]string {
	var rows [][]string
	for n := 1; n <= len(gens)+1; n++ {
		g, ok := gens[n]
		if !ok {
			continue
		}
		at := func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			if t.Before(t0) {
				return "before"
			}
			return fmtF(t.Sub(t0).Seconds(), 2)
		}
		rows = append(rows, []string{itoa(n), itoa(g.pid), at(g.readyAt), at(g.exitAt)})
	}
	return rows
}

// usage is a process's resource use at one moment.
type usage struct {
	fds int
	rss int64
}

func measure(pid int) (usage, error) {
	fds, err := countFDs(pid)
	if err != nil {
		return usage{}, err
	}
	rss, err := readRSS(pid)
	if err != nil {
		return usage{}, err
	}
	return usage{fds, rss}, nil
}

// holdResult is one hold run against one server process.
type holdResult struct {
	server        string
	before, while usage
	rep           *load.Report
}

// plateau returns the last sample with the most descriptors: taken while
// every connection that was going to open was open.
func plateau(samples []usage) usage {
	var best usage
	for _, s := range samples {
		if s.fds >= best.fds {
			best = s
		}
	}
	return best
}

// hold runs echoload -hold n against addr, sampling pid's descriptors and
// RSS every 100 ms while it runs.
func (b *bench) hold(ctx context.Context, sec *section, name, server, addr string, pid, n int, timeout string) (*holdResult, error) {
	time.Sleep(time.Second) // let connections of a previous run close
	before, err := measure(pid)
	if err != nil {
		return nil, err
	}
	l, err := b.startLoad(ctx, sec, name, 3*time.Minute,
		"-addr", addr, "-hold", itoa(n), "-concurrency", "16", "-duration", "3s", "-timeout", timeout)
	if err != nil {
		return nil, err
	}
	var samples []usage
	t := time.NewTicker(100 * time.Millisecond)
loop:
	for {
		select {
		case <-l.done:
			break loop
		case <-t.C:
			if u, err := measure(pid); err == nil {
				samples = append(samples, u)
			}
		}
	}
	t.Stop()
	rep, err := l.Wait()
	if err != nil {
		return nil, err
	}
	if rep.Hold == nil {
		return nil, fmt.Errorf("%s: echoload report has no hold section", name)
	}
	r := &holdResult{server: server, before: before, while: plateau(samples), rep: rep}
	b.progress("%s: opened %d/%d, fds %d -> %d, RSS %s -> %s", name, rep.Hold.Opened, n,
		before.fds, r.while.fds, fmtBytes(float64(before.rss)), fmtBytes(float64(r.while.rss)))
	return r, nil
}

func (r *holdResult) row() []string {
	h := r.rep.Hold
	perFD, perRSS := "-", "-"
	if h.Opened > 0 {
		perFD = fmtF(float64(r.while.fds-r.before.fds)/float64(h.Opened), 2)
		perRSS = fmtBytes(float64(r.while.rss-r.before.rss) / float64(h.Opened))
	}
	return []string{r.server, fmtInt(int64(h.Requested)), fmtInt(int64(h.Opened)), fmtInt(int64(h.StillEchoing)),
		fmtInt(int64(r.before.fds)), fmtInt(int64(r.while.fds)), perFD,
		fmtBytes(float64(r.before.rss)), fmtBytes(float64(r.while.rss)), perRSS, cmpOr(h.FirstError, "-")}
}

var holdHeader = []string{"server", "requested", "opened", "still echoing", "fds before", "fds holding", "fds/conn",
	"RSS before", "RSS holding", "RSS/conn", "first error"}

// memoryFDs is scenario 4.
func (b *bench) memoryFDs(ctx context.Context, sec *section) error {
	sec.p("echoload opens the connections (16 at a time; each must echo one 64 B message), holds them idle "+
		"for 3 s, checks each still echoes, and closes them. The server's VmRSS (/proc/PID/status) and open "+
		"descriptors (/proc/PID/fd) are sampled every 100 ms; \"holding\" is the last sample with the most "+
		"descriptors. Per connection = (holding - before) / opened. Targets for echod: under 4 KiB RSS and "+
		"exactly 1 fd per connection. Every row starts a fresh server (RSS of a Go process does not shrink "+
		"back promptly after a run). Each process has RLIMIT_NOFILE %s.", describeMachine("").NoFile)
	var errs []error

	// 4a: 10,000 connections, echod then the plain server.
	var rows [][]string
	if r, err := b.holdEchod(ctx, sec, 10000); err != nil {
		errs = append(errs, err)
	} else {
		rows = append(rows, r.row())
	}
	pl, err := startPlain(ctx, b.self)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	sec.cmdc(pl.argv, "bound to "+pl.addr)
	if r, err := b.hold(ctx, sec, "s4-plain-10000", "plain io.Copy", pl.addr, pl.Pid(), 10000, "2s"); err != nil {
		errs = append(errs, err)
	} else {
		rows = append(rows, r.row())
	}
	pl.Stop()
	sec.body.WriteString("### 4a. 10,000 idle connections: echod vs the plain io.Copy server\n\n")
	sec.table(holdHeader, rows)
	sec.p("The plain server's io.Copy(c, c) on a TCP connection uses splice(2) through a pipe (2 more " +
		"descriptors) while it waits for data, so it needs 3 descriptors per idle connection; once " +
		"accept or pipe creation fails with EMFILE it stalls (accept) or falls back to a user-space copy. " +
		"echoload stops opening at the first connection that does not echo within the 2 s timeout.")

	// 4c: as many as possible under the descriptor limit.
	sec.body.WriteString("### 4b. Most connections echod holds under RLIMIT_NOFILE 20000\n\n")
	rows = nil
	best := 0
	for _, n := range []int{19500, 19900, 19980} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r, err := b.holdEchod(ctx, sec, n)
		if err != nil {
			errs = append(errs, err)
			break
		}
		rows = append(rows, r.row())
		if r.rep.Hold.Opened == n && r.rep.Hold.StillEchoing == n {
			best = n
			continue
		}
		best = max(best, r.rep.Hold.StillEchoing)
		break
	}
	sec.table(holdHeader, rows)
	sec.p("Most connections held and still echoing: **%s** (target ≥ 19,000). echoload needs one descriptor "+
		"per connection too, in its own process with its own limit.", fmtInt(int64(best)))

	// 4c: reloads while holding, 10,000 and the most that fits.
	n := 19500
	if best > 0 && best < n {
		n = best
	}
	for _, k := range []int{10000, n} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sec.body.WriteString(fmt.Sprintf("### 4c. %d reloads while holding %s idle connections\n\n", holdReloads, fmtInt(int64(k))))
		if err := b.reloadWhileHolding(ctx, sec, k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// holdEchod starts a fresh echod, holds n connections against it and stops
// it.
func (b *bench) holdEchod(ctx context.Context, sec *section, n int) (*holdResult, error) {
	name := fmt.Sprintf("s4-echod-%d", n)
	ed, err := startEchod(ctx, b.echod, b.tmp, name)
	if err != nil {
		return nil, err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	return b.hold(ctx, sec, name, "echod", ed.addr, ed.cmd.Process.Pid, n, "5s")
}

// holdReloads is how many SIGHUPs 4c sends while holding.
const holdReloads = 5

// reloadWhileHolding is 4c: echod holds n idle connections while it is
// reloaded holdReloads times, one SIGHUP after the previous reload's old
// generation exited; every reload hands every connection over.
func (b *bench) reloadWhileHolding(ctx context.Context, sec *section, n int) error {
	holdFor := time.Duration(holdReloads)*3*time.Second + 5*time.Second
	name := fmt.Sprintf("s4-reload-%d", n)
	ed, err := startEchod(ctx, b.echod, b.tmp, name)
	if err != nil {
		return err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	pid1 := ed.cmd.Process.Pid
	time.Sleep(500 * time.Millisecond)
	base1, err := measure(pid1)
	if err != nil {
		return err
	}
	l, err := b.startLoad(ctx, sec, name+"-hold", 3*time.Minute,
		"-addr", ed.addr, "-hold", itoa(n), "-concurrency", "16", "-duration", holdFor.String(), "-timeout", "5s")
	if err != nil {
		return err
	}
	// Wait until every connection is open (or the load ended).
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if u, err := measure(pid1); err == nil && u.fds >= base1.fds+n {
			break
		}
		select {
		case <-l.done:
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	time.Sleep(300 * time.Millisecond)
	held1, _ := measure(pid1)
	sec.cmdc([]string{"kill", "-HUP", "<pid of the serving generation>"}, fmt.Sprintf("%d times, each once the previous old generation exited", holdReloads))

	type reload struct {
		gen           int
		ready, exited time.Duration // after the SIGHUP; -1 not seen
		ho            *handOver
		detach        time.Duration // -1 not logged
		newFDs        int
	}
	var reloads []reload
	for gen := 1; gen <= holdReloads && ctx.Err() == nil; gen++ {
		pid, err := ed.ServingPID()
		if err != nil {
			break
		}
		t0 := time.Now()
		if err := unix.Kill(pid, unix.SIGHUP); err != nil {
			break
		}
		r := reload{gen: gen, ready: -1, exited: -1, detach: -1, newFDs: -1}
		if ed.WaitReadyGen(gen+1, 20*time.Second) {
			r.ready = ed.Gens()[gen+1].readyAt.Sub(t0)
		}
		if ed.WaitExited(gen, 20*time.Second) {
			for _, g := range ed.Gens() {
				if g.gen == gen {
					r.exited = g.exitAt.Sub(t0)
				}
			}
		}
		if h, ok := ed.HandOver(gen); ok {
			r.ho = &h
		}
		if d, ok := ed.DetachTook(gen); ok {
			r.detach = d
		}
		if g, ok := ed.Gens()[gen+1]; ok {
			if u, err := measure(g.pid); err == nil {
				r.newFDs = u.fds
			}
		}
		reloads = append(reloads, r)
		time.Sleep(time.Second)
	}
	rep, err := l.Wait()
	if err != nil {
		return err
	}
	h := rep.Hold
	b.progress("4c: %d idle connections, %d reloads; still echoing %d/%d", n, len(reloads), h.StillEchoing, h.Opened)

	sec.p("echod holds %s idle connections (%s opened by echoload, which checks each echoes, holds them for "+
		"%s, and checks each echoes again); meanwhile it is reloaded %d times, each SIGHUP once the previous "+
		"old generation exited. Every reload hands every connection over (migration, the default); \"SIGHUP → "+
		"ready\" is to the new generation's \"ready\" log line (its commit: it serves each moved connection "+
		"from then on, as its state arrives), \"hand-over\" the took= of the old generation's \"connection "+
		"hand-over\" line (from its pause to the last batch sent: the copies before the commit and the moves "+
		"after it) and \"detach\" its detach= (taking the connections out of its server), and the descriptors of the "+
		"new generation are counted just after it is ready (%s before the load, %s holding in generation 1).",
		fmtInt(int64(n)), fmtInt(int64(h.Opened)), holdFor, holdReloads, fmtInt(int64(base1.fds)), fmtInt(int64(held1.fds)))
	ms := func(d time.Duration) string {
		if d < 0 {
			return "-"
		}
		return fmtF(d.Seconds()*1000, 0)
	}
	var rows [][]string
	var readys, tooks []float64
	for _, r := range reloads {
		moved, took := "no hand-over logged", time.Duration(-1)
		if r.ho != nil {
			moved = fmt.Sprintf("%s / %s / %s", fmtInt(int64(r.ho.moved)), fmtInt(int64(r.ho.kept)), fmtInt(int64(r.ho.lost)))
			took = r.ho.took
			tooks = append(tooks, took.Seconds()*1000)
		}
		if r.ready >= 0 {
			readys = append(readys, r.ready.Seconds()*1000)
		}
		fds := "-"
		if r.newFDs >= 0 {
			fds = fmtInt(int64(r.newFDs))
		}
		rows = append(rows, []string{fmt.Sprintf("%d → %d", r.gen, r.gen+1), ms(r.ready), ms(took), ms(r.detach), ms(r.exited), moved, fds})
	}
	sec.table([]string{"reload (generations)", "SIGHUP → ready (ms)", "hand-over (ms)", "of which detach (ms)", "old generation exited after the SIGHUP (ms)", "moved / kept / lost", "new generation's fds"}, rows)
	sec.table([]string{"figure", "value", "target"}, [][]string{
		{"hand-over, median / max (ms)", fmt.Sprintf("%s / %s", fmtF(median(tooks), 0), fmtF(maxOf(tooks), 0)), "< 300 for 10,000"},
		{"SIGHUP → new generation ready, median / max (ms)", fmt.Sprintf("%s / %s", fmtF(median(readys), 0), fmtF(maxOf(readys), 0)), ""},
		{"connections opened / still echoing after the reloads", fmt.Sprintf("%s / %s", fmtInt(int64(h.Opened)), fmtInt(int64(h.StillEchoing))), "all"},
		{"failed operations", fmt.Sprintf("%d (%s)", rep.Failures.All.Total, failuresString(rep.Failures.All)), "0"},
	})
	b.describeFailures(sec, rep)
	return nil
}

// median of xs (NaN-free), 0 when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// systemdBench is scenario 3: the Go benchmarks of cmd/echod that boot a
// throwaway systemd user manager (systemd/systemdtest), install the shipped
// units and drive them with echoload while systemctl reloads, restarts or
// kills the service. Their figures come as benchmark metrics, the echoload
// tables as the log.
func (b *bench) systemdBench(ctx context.Context, sec *section) error {
	if b.modRoot == "" {
		return errors.New("not inside the echod module")
	}
	argv := []string{"go", "test", "-run=^$", "-bench=Systemd|SoakReloads", "-benchtime=1x", "-v", "./cmd/echod/"}
	sec.cmd(argv)
	sec.p("BenchmarkSystemdReload: `systemctl --user reload` every 200 ms for 20 s through the shipped socket units, 4 short-connection workers. BenchmarkSystemdFDStoreRestart: `systemctl --user restart` every 1 s for 15 s, listeners in the fd store (echod-fdstore.service). BenchmarkSystemdFDStoreRestartConns: 10,000 live streams (one message every 2 s each), `systemctl --user restart` every 5 s for 20 s: each stopping process leaves its connections in the fd store and the next serves them (stream-conns = 10,000: none reconnected). BenchmarkSystemdFDStoreCrashConns: the same with a SIGKILL every 5 s (Restart=always): the next process serves the copies of the connections the killed one kept in the store. BenchmarkSystemdFDStoreCrash: `systemctl --user kill --signal=KILL` every 2 s for 15 s, Restart=always. Metrics: reloads, failed reloads, connections ok, failures, refused, reload duration (command start to exit) p50/p99, connect latency p99/max near a reload (clients waiting in the backlog), RTT p99 steady and near a reload. A crash loses the connections in flight inside the killed process: they count as failures; refused must stay 0. BenchmarkSoakReloads (no systemd): 200 reloads with 500 streams open, short-connection load from the 2nd to the 199th; the live generation's descriptors, goroutines and RSS after the 1st and after the 200th reload (equal fds and goroutines, RSS within 10%%: what TestSoakReloads asserts).")
	out, err := runCmd(ctx, b.modRoot, 10*time.Minute, argv...)
	sec.p("Output, verbatim:")
	sec.code(out)
	return err
}

// goBench is scenario 5.
func (b *bench) goBench(ctx context.Context, sec *section) error {
	if b.modRoot == "" {
		return errors.New("not inside the echod module")
	}
	argv := []string{"go", "test", "-run=^$", "-bench=.", "-benchmem", "./daemon/", "./handoff/", "./systemd/"}
	sec.cmd(argv)
	out, err := runCmd(ctx, b.modRoot, 10*time.Minute, argv...)
	sec.p("Output, verbatim:")
	sec.code(out)
	return err
}
