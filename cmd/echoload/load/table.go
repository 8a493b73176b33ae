package load

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable writes the human-readable summary of rep to w.
func (rep *Report) WriteTable(w io.Writer) error {
	verdict := "PASS"
	if !rep.Pass {
		verdict = "FAIL"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }

	p("echoload %s\t%s\t%.2fs\t%s\n\n", rep.Mode, rep.Config.Addr, rep.ElapsedSeconds, verdict)
	if h := rep.Hold; h != nil {
		p("hold\trequested\topened\tstill echoing\topen time\theld\n")
		p("\t%d\t%d\t%d\t%.2fs\t%.2fs\n", h.Requested, h.Opened, h.StillEchoing, h.OpenSeconds, h.HeldSeconds)
		if h.FirstError != "" {
			p("first error:\t%s\n", h.FirstError)
		}
	} else {
		p("workload\tok\tfailed\t\n")
		if rep.Config.Concurrency > 0 {
			p("short conns\t%d\t%d\t\n", rep.Short.OK, rep.Short.Failed)
		}
		if rep.Streams.Streams > 0 {
			p("stream msgs\t%d\t%d\t(%d streams, %d connections)\n", rep.Streams.Messages, rep.Streams.Failed, rep.Streams.Streams, rep.Streams.Connections)
		}
		p("throughput\t%.0f msg/s\t%.2f MB/s\t\n", rep.Throughput.MessagesPerSec, rep.Throughput.MBPerSec)
	}
	p("\n")

	p("latency (ms)\tcount\tp50\tp90\tp99\tp99.9\tmax\n")
	lat := func(name string, l Latency) {
		p("%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\n", name, l.Count, l.P50MS, l.P90MS, l.P99MS, l.P999MS, l.MaxMS)
	}
	lat("connect", rep.Connect.All)
	if rep.Reloads.Mode != "" {
		lat("connect near reload", rep.Connect.NearReload)
	}
	lat("rtt", rep.RTT.All)
	if rep.Reloads.Mode != "" {
		lat("rtt steady", rep.RTT.Steady)
		lat("rtt near reload", rep.RTT.NearReload)
		lat("reload duration", rep.Reloads.Duration)
	}
	p("\n")

	f := rep.Failures
	p("failures\tsteady\tnear reload\ttotal\n")
	for c := range numClasses {
		p("%s\t%d\t%d\t%d\n", c.Label(), f.Steady.Get(c), f.NearReload.Get(c), f.All.Get(c))
	}
	p("total\t%d\t%d\t%d\n", f.Steady.Total, f.NearReload.Total, f.All.Total)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}

	if r := rep.Reloads; r.Mode != "" {
		how := fmt.Sprintf("command %q", rep.Config.ReloadCmd)
		if r.Mode == "signal" {
			how = fmt.Sprintf("signal %s to pid in %s", rep.Config.ReloadSignal, rep.Config.ReloadPidFile)
		}
		fmt.Fprintf(w, "\nreloads: %d (ok %d, failed %d, pending %d) by %s every %gms, timeout %gms, window %gms\n",
			r.Count, r.OK, r.Failed, r.Pending, how, rep.Config.ReloadEveryMS, rep.Config.ReloadTimeoutMS, rep.Config.ReloadWindowMS)
		if r.Skipped > 0 {
			fmt.Fprintf(w, "  skipped: %d ticks came while a reload was still in progress (reloads never overlap), so fewer reloads were requested than -reload-every suggests\n", r.Skipped)
		}
		if r.Pending > 0 {
			fmt.Fprintf(w, "  pending: %d still waiting for the new generation when the run ended — e.g. queued behind a generation that drains long-lived connections; not counted as failed\n", r.Pending)
			for _, ev := range r.Events {
				if ev.Pending {
					fmt.Fprintf(w, "    +%.3fs  %s sent to pid %d, no new pid after %.1fms\n", ev.StartMS/1000, rep.Config.ReloadSignal, ev.OldPID, ev.DurationMS)
				}
			}
		}
	}
	if len(rep.FirstFailures) > 0 {
		fmt.Fprintf(w, "\nfirst failures:\n")
		for _, ff := range rep.FirstFailures {
			near := ""
			if ff.NearReload {
				near = ", near reload"
			}
			fmt.Fprintf(w, "  +%.3fs  %s (%s%s) conn %s: %s\n", ff.AtMS/1000, ff.Class, ff.Workload, near, ff.ConnID, ff.Error)
		}
	}
	if len(rep.Reloads.Failures) > 0 {
		fmt.Fprintf(w, "\nfirst reload failures:\n")
		for _, ev := range rep.Reloads.Failures {
			fmt.Fprintf(w, "  +%.3fs  after %.1fms: %s\n", ev.StartMS/1000, ev.DurationMS, ev.Error)
		}
	}
	return nil
}
