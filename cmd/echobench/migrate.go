package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/echod/echod/cmd/echoload/load"
)

// Scenario 2c: one SIGHUP with 10,000 live streams, echod handing them to
// the new generation (-migrate, the default) or draining them in the old
// one (-migrate=false); then the largest count that fits RLIMIT_NOFILE.
const (
	migStreams    = 10000
	migMaxStreams = 19000
	// Each stream sends a message every migInterval; the quiet run every
	// migQuietInterval (an offered load this machine carries), and the
	// idle run every migIdleInterval: a stream sends at its start and
	// next after the SIGHUP, so every connection is idle when it moves.
	migInterval      = 100 * time.Millisecond
	migQuietInterval = time.Second
	migIdleInterval  = 10 * time.Second
	// echoload's reloader ticks every -reload-every from its start: an
	// interval over half the run gives exactly one SIGHUP, at that time.
	migDur      = 15 * time.Second
	migReloadAt = 8 * time.Second
	// The 19,000-stream run: opening that many streams at once takes
	// echoload several seconds on a busy machine, and the hand-over of
	// more connections takes longer.
	migMaxDur      = 40 * time.Second
	migMaxReloadAt = 21 * time.Second
	// Longer than the run, so that a draining generation keeps its
	// connections until the client closes them.
	migDrainTimeout = 60 * time.Second
	// The window of the "before the SIGHUP" RTT figures, from the
	// timeline (100 ms buckets).
	migBeforeWindow = 2 * time.Second
	// echoload's -reload-window: a round trip overlapping [SIGHUP, pid
	// file names the new generation + this] is near the reload. The
	// staged hand-over moves the connections after the commit (which
	// writes the pid file), for 0.1–0.2 s with 10,000: the window covers
	// it with a margin.
	migReloadWindow = 500 * time.Millisecond
)

// migRun is one run of 2c.
type migRun struct {
	migrate  bool
	streams  int
	interval time.Duration // between a stream's messages
	pid1     int
	rep      *load.Report
	t0       time.Time // echoload's start (its report's started_at)
	reload   *load.ReloadEventReport
	sighup   time.Time // zero: echoload sent none
	gens     map[int]genInfo
	ho       *handOver
	detach   time.Duration // -1: not logged
	fdsBase  int           // generation 1, idle, before the load
	fdsUp    int           // generation 1, just before the SIGHUP; -1 unknown
	upAt     time.Duration // since the load started, when generation 1 first held every stream; -1 not by the SIGHUP
	measured bool          // oldAfter and newAfter were taken (generation 2 was ready during the run)
	oldAfter int           // generation 1, 1 s after generation 2 is ready; -1 gone
	newAfter int           // generation 2, same moment; -1 unknown
	waits    int
	loadAvg  string // before the run
	oldLives bool   // generation 1 still alive after the run and the wait for it
}

func (b *bench) stormMigrate(ctx context.Context, sec *section) error {
	sec.body.WriteString(fmt.Sprintf("### 2c. %s live streams, one SIGHUP: connections handed over (migrate) vs drained\n\n", fmtInt(migStreams)))
	sec.note("2c")
	type variant struct {
		name, label string
		migrate     bool
		interval    time.Duration
	}
	variants := []variant{
		{"s2c-migrate-idle", fmt.Sprintf("migrate, idle (every %s)", migIdleInterval), true, migIdleInterval},
		{"s2c-migrate-quiet", fmt.Sprintf("migrate, every %s", migQuietInterval), true, migQuietInterval},
		{"s2c-migrate", fmt.Sprintf("migrate, every %s", migInterval), true, migInterval},
		{"s2c-drain", fmt.Sprintf("drain (-migrate=false), every %s", migInterval), false, migInterval},
	}
	var (
		runs   []*migRun
		labels []string
		errs   []error
	)
	for _, v := range variants {
		r, err := b.runMigrate(ctx, sec, v.name, migStreams, v.migrate, v.interval, migDur, migReloadAt)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.name, err))
		}
		runs = append(runs, r)
		labels = append(labels, v.label)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	sec.p("%s streams (`-streams %d -stream-interval I -concurrency 0`: each one connection sending a 64 B "+
		"message every I and verifying every echoed byte, no short connections) for %s; echoload sends one "+
		"SIGHUP to the pid in the pid file %s into the run (its reload ticks every -reload-every from its "+
		"start, so -reload-every %s in a %s run is exactly one SIGHUP, after the streams are open). "+
		"Four runs, each against a fresh echod with -drain-timeout %s (longer than the run, so that with "+
		"-migrate=false the old generation keeps serving its streams until echoload closes them at the end): "+
		"migrate with I = %s (a stream sends at its start and next after the SIGHUP: every connection is idle "+
		"when it moves), with I = %s (%s msg/s offered, which this machine carries) and with I = %s (%s msg/s, "+
		"which it does not), and drain with I = %s. "+
		"With migration (the default) the old generation pauses accepting and sends a copy of every "+
		"connection's descriptor to the new generation while it serves them on (the new one serves none "+
		"before its commit); after the commit it takes them out of its server a batch of 253 at a time, at a "+
		"safe point, and sends each batch's states: the new generation serves each connection as its state "+
		"arrives (the staged hand-over).",
		fmtInt(migStreams), migStreams, migDur, migReloadAt, migReloadAt, migDur, migDrainTimeout,
		migIdleInterval, migQuietInterval, fmtInt(int64(float64(migStreams)/migQuietInterval.Seconds())),
		migInterval, fmtInt(int64(float64(migStreams)/migInterval.Seconds())), migInterval)
	sec.p("Figures: \"hand-over took\" is the took= of the old generation's \"connection hand-over\" log line "+
		"(from its pause to the last batch sent; its copy= is the part before the commit, every connection "+
		"served on, and move= the part after it; detach= is the time spent taking connections out of its "+
		"server). \"SIGHUP → new generation ready\" is to the new generation's \"ready\" "+
		"log line (it serves the listeners then, and each moved connection as its state arrives); echoload's own "+
		"reload time ends when the pid file names the new pid, which the old generation writes at the commit. "+
		"Near the reload = a round trip overlapping [SIGHUP, pid file changed + %s], which covers the moves "+
		"after the commit: a message sent while its connection is in transit waits in the socket buffers and is "+
		"echoed after, so the near-reload RTT is the pause a stream sees. Steady = every other round trip, the start-up (every stream connects "+
		"at once) included; the \"2 s before the SIGHUP\" row is from echoload's 100 ms timeline buckets. "+
		"Descriptors are counted in /proc/PID/fd (an idle generation has about 10). Bytes lost = failed "+
		"round trips × 64 B: every byte is verified, so any loss shows up as a failure (eof, reset, corrupt, "+
		"or timeout: no full echo within echoload's -timeout, 5 s, after which it closes the connection).", migReloadWindow)
	sec.table(migHeader(labels...), migRows(runs, true))
	if n := saturated(runs); n != "" {
		sec.p("**The machine cannot carry the offered load** (%s): the streams wait for CPU, so every latency "+
			"above, the steady ones included, is mostly queueing, and the hand-over competes for the same two "+
			"cores. Compare the reload figures with the steady ones of the same run, not with the targets alone.", n)
	}
	sec.p("Generations, from echod's log (seconds since echoload started; the SIGHUP at %s):", migReloadAt)
	var timeline [][]string
	for i, r := range runs {
		timeline = append(timeline, migTimeline(labels[i], r)...)
	}
	sec.table([]string{"run", "generation", "pid", "ready at (s)", "exited at (s)"}, timeline)
	for i, r := range runs {
		if r != nil && r.rep != nil {
			describeFailuresOf(sec, r.rep, labels[i])
		}
	}

	if ctx.Err() != nil {
		return ctx.Err()
	}
	sec.body.WriteString(fmt.Sprintf("#### 2c, continued: %s streams under RLIMIT_NOFILE %s (migrate)\n\n", fmtInt(migMaxStreams), describeMachine("").NoFile))
	r, err := b.runMigrate(ctx, sec, "s2c-migrate-max", migMaxStreams, true, migInterval, migMaxDur, migMaxReloadAt)
	if err != nil {
		errs = append(errs, fmt.Errorf("s2c-migrate-max: %w", err))
	}
	nofile := "-"
	if r != nil && r.rep != nil {
		nofile = fmtInt(int64(r.rep.NoFileLimit))
	}
	sec.p("The same with %s streams, migrate only, for %s with the SIGHUP at %s (-reload-every %s): echoload "+
		"opens every stream at once, and that many take it several seconds on this machine. Each process has "+
		"its own descriptor limit: echoload holds one descriptor per stream (it raises its soft limit to the "+
		"hard one: %s here); echod's generation 1 one per connection, and during the hand-over it keeps a "+
		"descriptor of each until the commit while generation 2 receives them: about %s + 10 in each process, "+
		"under the limit. echod's default -upgrade-timeout (10 s) bounds the new generation's start, "+
		"hand-over included.", fmtInt(migMaxStreams), migMaxDur, migMaxReloadAt, migMaxReloadAt, nofile, fmtInt(migMaxStreams))
	sec.table(migHeader(fmt.Sprintf("migrate, %s streams", fmtInt(migMaxStreams))), migRows([]*migRun{r}, false))
	if r != nil && r.rep != nil && r.upAt < 0 {
		sec.p("**echoload had not opened every stream by the SIGHUP** (%s of %s in generation 1 just before it): "+
			"the remaining connects wait in the listen backlog while the old generation has stopped accepting, "+
			"and time out there (connect timeout) if the hand-over outlasts echoload's -timeout; start-up, not "+
			"the descriptor limit, is what limits this run.", fmtInt(int64(r.fdsUp-r.fdsBase)), fmtInt(migMaxStreams))
	}
	if n := saturated([]*migRun{r}); n != "" {
		sec.p("**The machine cannot carry the offered load** (%s); see above.", n)
	}
	sec.p("Generations (seconds since echoload started):")
	sec.table([]string{"mode", "generation", "pid", "ready at (s)", "exited at (s)"}, migTimeline("migrate", r))
	if r != nil && r.rep != nil {
		describeFailuresOf(sec, r.rep, fmt.Sprintf("%s streams", fmtInt(migMaxStreams)))
	}
	return errors.Join(errs...)
}

// runMigrate starts a fresh echod (-migrate or -migrate=false), runs the
// streams with one SIGHUP and gathers the figures. On error the returned
// run holds what could be gathered.
func (b *bench) runMigrate(ctx context.Context, sec *section, name string, streams int, migrate bool, interval, dur, reloadAt time.Duration) (*migRun, error) {
	extra := []string{"-drain-timeout", migDrainTimeout.String()}
	if !migrate {
		extra = append(extra, "-migrate=false")
	}
	ed, err := startEchod(ctx, b.echod, b.tmp, name+"-echod", extra...)
	if err != nil {
		return nil, err
	}
	defer ed.Stop()
	sec.cmdc(ed.argv, "bound to "+ed.addr)
	r := &migRun{migrate: migrate, streams: streams, interval: interval, pid1: ed.cmd.Process.Pid,
		detach: -1, fdsUp: -1, upAt: -1, oldAfter: -1, newAfter: -1}
	time.Sleep(200 * time.Millisecond)
	r.loadAvg = loadAvg()
	if r.fdsBase, err = countFDs(r.pid1); err != nil {
		return r, err
	}
	l, err := b.startLoad(ctx, sec, name, dur+2*time.Minute,
		"-addr", ed.addr, "-duration", dur.String(), "-concurrency", "0",
		"-streams", itoa(streams), "-stream-interval", interval.String(),
		"-reload-signal", "HUP", "-reload-pid-file", ed.pidFile, "-reload-every", reloadAt.String(),
		"-reload-window", migReloadWindow.String())
	if err != nil {
		return r, err
	}
	started := time.Now()
	// When generation 1 holds every stream (polled every 250 ms), and how
	// many it holds just before the SIGHUP.
	lastPoll := started.Add(reloadAt - 300*time.Millisecond)
	t := time.NewTicker(250 * time.Millisecond)
poll:
	for {
		select {
		case now := <-t.C:
			if now.After(lastPoll) {
				break poll
			}
			if r.upAt >= 0 {
				continue
			}
			if n, err := countFDs(r.pid1); err == nil && n-r.fdsBase >= streams {
				r.upAt = now.Sub(started)
			}
		case <-l.done:
			break poll
		case <-ctx.Done():
			break poll
		}
	}
	t.Stop()
	if n, err := countFDs(r.pid1); err == nil {
		r.fdsUp = n
	}
	// Who holds the connections 1 s after generation 2 is ready.
	if ed.WaitReadyGen(2, time.Until(started.Add(dur))) {
		time.Sleep(time.Second)
		r.measured = true
		if g, ok := ed.Gens()[2]; ok {
			if n, err := countFDs(g.pid); err == nil {
				r.newAfter = n
			}
		}
		if alive(r.pid1) {
			if n, err := countFDs(r.pid1); err == nil {
				r.oldAfter = n
			}
		}
	}
	rep, err := l.Wait()
	if err != nil {
		return r, err
	}
	r.rep = rep
	r.t0 = rep.StartedAt
	// A draining generation exits once the client has closed its
	// streams; a pending upgrade completes late.
	r.oldLives = !ed.WaitExited(1, 15*time.Second) && alive(r.pid1)
	ed.WaitReadyGen(2, 5*time.Second)
	r.gens = ed.Gens()
	if h, ok := ed.HandOver(1); ok {
		r.ho = &h
	}
	if d, ok := ed.DetachTook(1); ok {
		r.detach = d
	}
	r.waits = ed.UpgradeWaits()
	if len(rep.Reloads.Events) > 0 {
		ev := rep.Reloads.Events[0]
		r.reload = &ev
		r.sighup = rep.StartedAt.Add(msDur(ev.StartMS))
	}
	ho := "no hand-over logged"
	if r.ho != nil {
		ho = fmt.Sprintf("hand-over moved %d kept %d lost %d took %v", r.ho.moved, r.ho.kept, r.ho.lost, r.ho.took)
	}
	b.progress("%s: %d reloads (%d ok, %d pending), %s; %d failures, RTT p99 near reload %.1f ms",
		name, rep.Reloads.Count, rep.Reloads.OK, rep.Reloads.Pending, ho, rep.Failures.All.Total, rep.RTT.NearReload.P99MS)
	if r.reload == nil {
		return r, errors.New("echoload sent no SIGHUP")
	}
	return r, nil
}

// saturated describes the runs whose streams got under 90% of the
// messages they offered, or returns "".
func saturated(runs []*migRun) string {
	var parts []string
	for _, r := range runs {
		if r == nil || r.rep == nil || r.rep.ElapsedSeconds <= 0 {
			continue
		}
		offered := float64(r.streams) / r.interval.Seconds()
		got := float64(r.rep.Streams.Messages) / r.rep.ElapsedSeconds
		if got < 0.9*offered {
			mode := "migrate every " + r.interval.String()
			if !r.migrate {
				mode = "drain every " + r.interval.String()
			}
			parts = append(parts, fmt.Sprintf("%s: %s of %s msg/s offered, load average %s at the start", mode,
				fmtF(got, 0), fmtF(offered, 0), r.loadAvg))
		}
	}
	return strings.Join(parts, "; ")
}

func msDur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func migHeader(cols ...string) []string {
	return append(append([]string{"figure"}, cols...), "target")
}

// migRows builds the figure rows of 2c, one column per run (nil: the run
// failed). tenK says the runs are the 10,000-stream pair (the hand-over
// target is for 10,000).
func migRows(runs []*migRun, tenK bool) [][]string {
	type fig struct {
		name   string
		target string
		f      func(r *migRun) string
	}
	since := func(r *migRun, t time.Time) string {
		if t.IsZero() || r.sighup.IsZero() {
			return "-"
		}
		return fmtF(t.Sub(r.sighup).Seconds()*1000, 0)
	}
	handTarget := "< 300 (for 10,000)"
	if !tenK {
		handTarget = ""
	}
	figs := []fig{
		{"streams / connections opened (a reconnect counts again)", "equal", func(r *migRun) string {
			return fmt.Sprintf("%s / %s", fmtInt(int64(r.streams)), fmtInt(r.rep.Streams.Connections))
		}},
		{"connect p99 / max (ms; the streams open at the start)", "", func(r *migRun) string {
			return fmt.Sprintf("%s / %s", fmtF(r.rep.Connect.All.P99MS, 1), fmtF(r.rep.Connect.All.MaxMS, 1))
		}},
		{"every stream open in generation 1 at (s into the run)", "before the SIGHUP", func(r *migRun) string {
			if r.upAt < 0 {
				return "not by the SIGHUP"
			}
			return fmtF(r.upAt.Seconds(), 2)
		}},
		{"connections in generation 1 just before the SIGHUP (fds − idle fds)", "all streams", func(r *migRun) string {
			if r.fdsUp < 0 {
				return "-"
			}
			return fmtInt(int64(r.fdsUp - r.fdsBase))
		}},
		{"SIGHUP sent at (s into the run)", "", func(r *migRun) string {
			if r.reload == nil {
				return "none"
			}
			return fmtF(r.reload.StartMS/1000, 2)
		}},
		{"SIGHUP → new generation ready, its log (ms)", "", func(r *migRun) string {
			return since(r, r.gens[2].readyAt)
		}},
		{"SIGHUP → pid file names it, echoload's reload (ms)", "", func(r *migRun) string {
			switch {
			case r.reload == nil:
				return "-"
			case r.reload.OK:
				return fmtF(r.reload.DurationMS, 0)
			case r.reload.Pending:
				return "pending at the end of the run"
			}
			return "failed: " + r.reload.Error
		}},
		{"hand-over took, old generation's log (ms)", handTarget, func(r *migRun) string {
			if r.ho == nil || r.ho.took < 0 {
				return "-"
			}
			return fmtF(r.ho.took.Seconds()*1000, 1)
		}},
		{"  copying the descriptors, before the commit (ms)", "", func(r *migRun) string {
			if r.ho == nil || r.ho.copy < 0 {
				return "-"
			}
			return fmtF(r.ho.copy.Seconds()*1000, 1)
		}},
		{"  moving the connections, after the commit (ms)", "", func(r *migRun) string {
			if r.ho == nil || r.ho.move < 0 {
				return "-"
			}
			return fmtF(r.ho.move.Seconds()*1000, 1)
		}},
		{"  of which detaching the connections (ms)", "", func(r *migRun) string {
			if r.ho == nil || r.detach < 0 {
				return "-"
			}
			return fmtF(r.detach.Seconds()*1000, 1)
		}},
		{"moved / kept / lost (log)", "all / 0 / 0", func(r *migRun) string {
			if r.ho == nil {
				if !r.migrate {
					return "- (no hand-over)"
				}
				return "no hand-over logged"
			}
			s := fmt.Sprintf("%s / %s / %s", fmtInt(int64(r.ho.moved)), fmtInt(int64(r.ho.kept)), fmtInt(int64(r.ho.lost)))
			if !r.ho.succeeded {
				s += " (upgrade failed)"
			}
			if r.ho.err != "" {
				s += " err: " + r.ho.err
			}
			return s
		}},
		{"fds 1 s after the new generation is ready: old / new generation", "", func(r *migRun) string {
			if !r.measured {
				return "- (not ready during the run)"
			}
			old := "exited"
			if r.oldAfter >= 0 {
				old = fmtInt(int64(r.oldAfter))
			}
			nw := "-"
			if r.newAfter >= 0 {
				nw = fmtInt(int64(r.newAfter))
			}
			return old + " / " + nw
		}},
		{"old generation exited, after the SIGHUP (ms)", "< 1,000 (migrate)", func(r *migRun) string {
			if r.oldLives {
				return "still running 15 s after the run"
			}
			s := since(r, r.gens[1].exitAt)
			if !r.migrate && s != "-" {
				s += fmt.Sprintf(" (the run ended %s ms after it)", fmtF(r.rep.ElapsedSeconds*1000-r.reload.StartMS, 0))
			}
			return s
		}},
		{fmt.Sprintf("RTT in the %s before the SIGHUP: worst 100 ms bucket p99 / max (ms)", migBeforeWindow), "", func(r *migRun) string {
			if r.reload == nil {
				return "-"
			}
			p99, mx, n := 0.0, 0.0, int64(0)
			from, to := r.reload.StartMS-float64(migBeforeWindow/time.Millisecond), r.reload.StartMS
			for _, p := range r.rep.Timeline.Points {
				if p.StartMS >= from && p.StartMS+r.rep.Timeline.BucketMS <= to && p.Count > 0 {
					p99, mx, n = max(p99, p.P99MS), max(mx, p.MaxMS), n+p.Count
				}
			}
			if n == 0 {
				return "- (no echo completed)"
			}
			return fmt.Sprintf("%s / %s", fmtF(p99, 1), fmtF(mx, 1))
		}},
		{"RTT p99 steady / near the reload (ms)", "near < 100", func(r *migRun) string {
			return fmt.Sprintf("%s / %s", fmtF(r.rep.RTT.Steady.P99MS, 1), fmtF(r.rep.RTT.NearReload.P99MS, 1))
		}},
		{"RTT max steady / near the reload (ms)", "", func(r *migRun) string {
			return fmt.Sprintf("%s / %s", fmtF(r.rep.RTT.Steady.MaxMS, 1), fmtF(r.rep.RTT.NearReload.MaxMS, 1))
		}},
		{"stream messages ok / of which near the reload", "", func(r *migRun) string {
			return fmt.Sprintf("%s / %s", fmtInt(r.rep.Streams.Messages), fmtInt(r.rep.RTT.NearReload.Count))
		}},
		{"stream msg/s achieved / offered (streams ÷ interval)", "", func(r *migRun) string {
			got := 0.0
			if r.rep.ElapsedSeconds > 0 {
				got = float64(r.rep.Streams.Messages) / r.rep.ElapsedSeconds
			}
			return fmt.Sprintf("%s / %s", fmtF(got, 0), fmtF(float64(r.streams)/r.interval.Seconds(), 0))
		}},
		{"failed operations (near the reload)", "0", func(r *migRun) string {
			return fmt.Sprintf("%d (%d): %s", r.rep.Failures.All.Total, r.rep.Failures.NearReload.Total, failuresString(r.rep.Failures.All))
		}},
		{"bytes lost: not echoed back intact (failed round trips × 64 B)", "0", func(r *migRun) string {
			f := r.rep.Failures.All
			return fmtInt((f.Total - f.ConnectRefused - f.ConnectTimeout) * int64(r.rep.Config.Size))
		}},
		{"upgrades that waited for a draining generation (log)", "", func(r *migRun) string { return itoa(r.waits) }},
	}
	rows := make([][]string, 0, len(figs))
	for _, f := range figs {
		row := []string{f.name}
		for _, r := range runs {
			if r == nil || r.rep == nil {
				row = append(row, "error")
				continue
			}
			row = append(row, f.f(r))
		}
		rows = append(rows, append(row, f.target))
	}
	return rows
}

// migTimeline is genTimeline for one run, with the mode in front.
func migTimeline(mode string, r *migRun) [][]string {
	if r == nil || r.rep == nil {
		return [][]string{{mode, "error", "", "", ""}}
	}
	var rows [][]string
	for _, row := range genTimeline(r.gens, r.t0) {
		rows = append(rows, append([]string{mode}, row...))
	}
	return rows
}
