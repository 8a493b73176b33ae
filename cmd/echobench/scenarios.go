package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
	return errors.Join(errA, errB, errC)
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

	// 4d: reload while holding.
	sec.body.WriteString("### 4c. Reload while holding\n\n")
	n := 19500
	if best > 0 && best < n {
		n = best
	}
	if err := b.reloadWhileHolding(ctx, sec, n); err != nil {
		errs = append(errs, err)
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

func (b *bench) reloadWhileHolding(ctx context.Context, sec *section, n int) error {
	const holdFor = 10 * time.Second
	ed, err := startEchod(ctx, b.echod, b.tmp, "s4-reload")
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
	l, err := b.startLoad(ctx, sec, "s4-reload-hold", 3*time.Minute,
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

	sec.cmdc([]string{"kill", "-HUP", itoa(pid1)}, "while holding")
	t0 := time.Now()
	if err := unix.Kill(pid1, unix.SIGHUP); err != nil {
		_, _ = l.Wait()
		return fmt.Errorf("SIGHUP: %w", err)
	}
	ok := ed.WaitReadyGen(2, 20*time.Second)
	took := time.Since(t0)
	time.Sleep(time.Second)
	pid2 := 0
	if g, found := ed.Gens()[2]; found {
		pid2 = g.pid
	}
	var new2, old1 usage
	if pid2 > 0 {
		new2, _ = measure(pid2)
	}
	old1, _ = measure(pid1)

	rep, err := l.Wait()
	if err != nil {
		return err
	}
	closed := time.Now()
	for alive(pid1) && time.Since(closed) < 20*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	oldGone := !alive(pid1)
	exitAfter := time.Since(closed)
	var new3 usage
	if pid2 > 0 {
		new3, _ = measure(pid2)
	}
	b.progress("4c: reload ok=%v in %v; old gen fds %d, new gen fds %d; still echoing %d/%d",
		ok, took.Round(time.Millisecond), old1.fds, new2.fds, rep.Hold.StillEchoing, rep.Hold.Opened)

	h := rep.Hold
	sec.p("echod holds %s idle connections (%s opened); then SIGHUP. The new generation inherits only the "+
		"listening socket, so it starts with a listener's worth of descriptors; the old generation keeps "+
		"serving the held connections while it drains (default drain timeout 30 s, longer than the hold), "+
		"and exits once the client closes them.", fmtInt(int64(n)), fmtInt(int64(h.Opened)))
	readyStr := fmt.Sprintf("%.0f ms", took.Seconds()*1000)
	if !ok {
		readyStr = "not ready within 20 s"
	}
	exitStr := fmt.Sprintf("%.0f ms after the client closed its connections", exitAfter.Seconds()*1000)
	if !oldGone {
		exitStr = "still alive 20 s after the client closed its connections"
	}
	fmtU := func(u usage) (string, string) {
		if u.fds == 0 {
			return "-", "-"
		}
		return fmtInt(int64(u.fds)), fmtBytes(float64(u.rss))
	}
	row := func(moment, gen string, pid int, u usage) []string {
		f, r := fmtU(u)
		return []string{moment, gen, itoa(pid), f, r}
	}
	sec.table([]string{"moment", "generation", "pid", "fds", "RSS"}, [][]string{
		row("before the load", "1", pid1, base1),
		row("holding, before SIGHUP", "1", pid1, held1),
		row("1 s after generation 2 is ready", "1 (old, draining)", pid1, old1),
		row("1 s after generation 2 is ready", "2 (new, serving)", pid2, new2),
		row("after the client closed", "2", pid2, new3),
	})
	sec.table([]string{"figure", "value"}, [][]string{
		{"SIGHUP to generation 2 ready", readyStr},
		{"connections opened / still echoing after the reload", fmt.Sprintf("%s / %s", fmtInt(int64(h.Opened)), fmtInt(int64(h.StillEchoing)))},
		{"failed operations", fmt.Sprintf("%d (%s)", rep.Failures.All.Total, failuresString(rep.Failures.All))},
		{"old generation exited", exitStr},
	})
	b.describeFailures(sec, rep)
	return nil
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
	argv := []string{"go", "test", "-run=^$", "-bench=Systemd", "-benchtime=1x", "-v", "./cmd/echod/"}
	sec.cmd(argv)
	sec.p("BenchmarkSystemdReload: `systemctl --user reload` every 200 ms for 20 s through the shipped socket units, 4 short-connection workers. BenchmarkSystemdFDStoreRestart: `systemctl --user restart` every 1 s for 15 s, listeners in the fd store (echod-fdstore.service). BenchmarkSystemdFDStoreCrash: `systemctl --user kill --signal=KILL` every 2 s for 15 s, Restart=always. Metrics: reloads, failed reloads, connections ok, failures, refused, reload duration (command start to exit) p50/p99, connect latency p99/max near a reload (clients waiting in the backlog), RTT p99 steady and near a reload. A crash loses the connections in flight inside the killed process: they count as failures; refused must stay 0.")
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
