package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/handoff"
	"github.com/echod/echod/handoff/control"
)

// genResources is what a generation holds, read from outside.
type genResources struct {
	pid        int
	fds        int
	pipes      int
	goroutines int
	conns      int // open connections (one descriptor and one goroutine each)
	rssKiB     int
	listenEnv  []string // LISTEN_* in its environment
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func resourcesOf(t testing.TB, in *instance, pid int) genResources {
	t.Helper()
	r := genResources{pid: pid}
	r.fds = settledFDCount(t, pid)
	r.pipes = len(pipesOf(t, pid))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			r.rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	r.listenEnv = handOverEnv(t, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := control.Request(ctx, in.control, "status-json")
	if err != nil {
		t.Fatalf("status-json: %v", err)
	}
	var rep handoff.StatusReport
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.PID != pid {
		t.Fatalf("status-json answered by pid %d, want %d", rep.PID, pid)
	}
	r.goroutines = rep.Goroutines
	if rep.Connections != nil {
		r.conns = rep.Connections.Open
	}
	return r
}

// TestSoakReloads: 200 reloads under short-connection load with 500
// long-lived streams open, every stream moving at each. The live
// generation after the 200th holds what the one after the 1st held: the
// same descriptors and goroutines besides one of each per open connection
// (no pipe more), RSS within 10%; no LISTEN_*
// or hand-over variable in its environment; no stream or short connection
// failed.
func TestSoakReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 200 reloads")
	}
	first, last := soakReloads(t, 500, 200)
	if last.fds-last.conns != first.fds-first.conns || last.pipes != first.pipes || first.conns < 500 {
		t.Errorf("descriptors besides the connections after reload 200: %d (%d pipes), after reload 1: %d (%d pipes)", last.fds-last.conns, last.pipes, first.fds-first.conns, first.pipes)
	}
	if last.goroutines-last.conns != first.goroutines-first.conns {
		t.Errorf("goroutines besides the connections after reload 200: %d, after reload 1: %d", last.goroutines-last.conns, first.goroutines-first.conns)
	}
	if d := float64(last.rssKiB-first.rssKiB) / float64(first.rssKiB); d > 0.10 || d < -0.10 {
		t.Errorf("RSS after reload 200: %d KiB, after reload 1: %d KiB (%+.0f%%)", last.rssKiB, first.rssKiB, 100*d)
	}
	if len(last.listenEnv)+len(first.listenEnv) > 0 {
		t.Errorf("hand-over variables in a generation's environment: %v %v", first.listenEnv, last.listenEnv)
	}
}

// BenchmarkSoakReloads reports what TestSoakReloads checks: the live
// generation's descriptors, goroutines and RSS after the 1st and the
// 200th reload with 500 streams open (make bench, scenario 3).
func BenchmarkSoakReloads(b *testing.B) {
	first, last := soakReloads(b, 500, 200)
	b.ReportMetric(float64(first.fds), "fds-after-1")
	b.ReportMetric(float64(last.fds), "fds-after-200")
	b.ReportMetric(float64(first.goroutines), "goroutines-after-1")
	b.ReportMetric(float64(last.goroutines), "goroutines-after-200")
	b.ReportMetric(float64(first.rssKiB), "rss-KiB-after-1")
	b.ReportMetric(float64(last.rssKiB), "rss-KiB-after-200")
}

// soakReloads runs the soak: reloads reloads with streams streams open,
// short-connection load from the 2nd to the one before the last; it fails
// tb when a stream or a short connection fails, and returns what the live
// generation held after the 1st and after the last reload.
func soakReloads(t testing.TB, streams, reloads int) (first, last genResources) {
	n := int64(streams)
	t.Helper()
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "1m", "-log-level", "info")
	st, err := startStreams("tcp", in.addrs[0], streams, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	waitRounds(t, st, n)
	// The short-connection load runs from reload 2 to reload 199: the
	// generations measured (after reloads 1 and 200) hold the streams alone.
	var lt *load
	stopLoad := func() (ok, failed int64, errs []string) {
		if lt == nil {
			return 0, 0, nil
		}
		ok, failed, errs = lt.stop()
		lt = nil
		return ok, failed, errs
	}
	defer stopLoad()
	settle := func(gen int) genResources {
		t.Helper()
		pid := in.readyPID(gen)
		// The previous generation gone and every stream served here: the
		// figures are this generation's alone.
		waitRounds(t, st, 2*n)
		return resourcesOf(t, in, pid)
	}
	var ok, failed int64
	var errs []string
	for i := 1; i <= reloads; i++ {
		switch i {
		case 2:
			lt = startLoad("tcp", in.addrs[0], 2)
		case reloads:
			ok, failed, errs = stopLoad()
		}
		// Every stream moves (and the short connections open then).
		out, err := in.reload()
		m := movedRe.FindStringSubmatch(out)
		if err != nil || m == nil || atoi(m[1]) < streams || m[2] != "0" {
			t.Fatalf("reload %d: %q, %v; want moved>=%d draining=0", i, out, err, streams)
		}
		if f := st.failures(); len(f) > 0 {
			t.Fatalf("reload %d: %d streams failed: %v", i, len(f), f[:min(len(f), 5)])
		}
		switch i {
		case 1:
			first = settle(2)
		case reloads:
			last = settle(reloads + 1)
		}
	}
	st.closeIntact(t)
	if failed > 0 || ok == 0 {
		t.Fatalf("short connections: %d ok, %d failed: %v", ok, failed, errs)
	}
	t.Logf("after reload 1: %+v", first)
	t.Logf("after reload %d: %+v", reloads, last)
	t.Logf("%d reloads with %d streams: %d verified stream round trips, %d short connections, 0 failed", reloads, streams, st.rounds.Load(), ok)
	return first, last
}
