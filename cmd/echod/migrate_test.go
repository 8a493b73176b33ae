package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var movedRe = regexp.MustCompile(`moved=(\d+) draining=(\d+)`)

// TestMigrateStreamsAcrossReloads: 1,000 long-lived streams, each sending
// its numbered byte sequence all along, across 20 reloads: every reload
// hands every connection to the new generation, the old one exits at once
// (its drain timeout is 5 minutes), and every stream gets exactly its
// bytes back, with no EOF or reset.
func TestMigrateStreamsAcrossReloads(t *testing.T) {
	const n = 1000
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "5m")
	st := mustStreams(t, "tcp", in.addrs[0], n, 50*time.Millisecond)
	prev := in.cmd.Process.Pid
	inode := listenInode(t, in.addrs[0])
	for gen := 2; gen <= 21; gen++ {
		ans, err := in.reload()
		if err != nil {
			t.Fatalf("reload to generation %d: %v\n%s", gen, err, in.log)
		}
		m := movedRe.FindStringSubmatch(ans)
		if m == nil || m[1] != strconv.Itoa(n) || m[2] != "0" {
			t.Fatalf("reload to generation %d answered %q, want moved=%d draining=0", gen, ans, n)
		}
		pid := in.readyPID(gen)
		start := time.Now()
		waitExit(t, prev, 10*time.Second)
		if d := time.Since(start); d > 2*time.Second {
			t.Logf("generation %d (pid %d) took %v to exit after the reload", gen-1, prev, d)
		}
		prev = pid
		if f := st.failures(); len(f) > 0 {
			t.Fatalf("after the reload to generation %d: %d streams failed: %v", gen, len(f), f[:min(len(f), 5)])
		}
		waitRounds(t, st, n) // every stream goes on, now served by generation gen
	}
	if got := listenInode(t, in.addrs[0]); got != inode {
		t.Fatalf("listening socket changed: inode %s, was %s", got, inode)
	}
	st.closeIntact(t)
	t.Logf("%d streams, %d verified round trips across 20 reloads", n, st.rounds.Load())
}

// TestMigrateBeyondFDRoom: with more streams than the new generation's
// descriptor limit leaves room for, it takes what fits, the old
// generation keeps the rest and drains them (it stays until they close),
// and no stream notices either way.
func TestMigrateBeyondFDRoom(t *testing.T) {
	const n, nofile = 200, 400 // room: 400 less ~15 open and a batch's margin
	limited := []string{"sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)}
	in := startEchodVia(t, limited, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "5m")
	st := mustStreams(t, "tcp", in.addrs[0], n, 20*time.Millisecond)
	old := in.cmd.Process.Pid
	ans, err := in.reload()
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, in.log)
	}
	m := movedRe.FindStringSubmatch(ans)
	if m == nil {
		t.Fatalf("reload answered %q, want moved= and draining= counts", ans)
	}
	moved, _ := strconv.Atoi(m[1])
	draining, _ := strconv.Atoi(m[2])
	if moved == 0 || draining == 0 || moved+draining != n {
		t.Fatalf("reload answered %q: want some moved, some draining, %d in all", ans, n)
	}
	in.log.waitFor(t, 10*time.Second, "the hand-over's log line", contains("connection hand-over", fmt.Sprintf(" moved=%d kept=%d lost=0 ", moved, draining)))
	waitRounds(t, st, 2*n) // both generations serve their part
	if !alive(old) {
		t.Fatalf("generation 1 exited with %d connections to drain", draining)
	}
	st.closeIntact(t)
	waitExit(t, old, 10*time.Second) // drained once its clients closed
	t.Logf("%s; %d verified round trips", ans, st.rounds.Load())
}

// waitRounds waits until the streams have made n more verified round
// trips (bounded).
func waitRounds(t testing.TB, st *streams, n int64) {
	t.Helper()
	want := st.rounds.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for st.rounds.Load() < want {
		if f := st.failures(); len(f) > 0 {
			t.Fatalf("%d streams failed: %v", len(f), f[:min(len(f), 5)])
		}
		if time.Now().After(deadline) {
			t.Fatalf("the streams made %d of %d round trips in 30s", st.rounds.Load()-want+n, n)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, bounded
	}
}

// TestMigrateUnderSIGHUPStorm: 50 streams and short-connection load, a
// SIGHUP every 200 ms for 10 s: reloads never wait for a drain, nothing
// fails.
func TestMigrateUnderSIGHUPStorm(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "5m")
	st, err := startStreams("tcp", in.addrs[0], 50, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ld := startLoad("tcp", in.addrs[0], 4)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); <-tick.C {
		pid := in.servingPID(t)
		if err := procs.signal(pid, unix.SIGHUP); err == nil {
			sent++
		}
	}
	// The last SIGHUP's generation serves once the storm is over.
	last := 0
	for gen := 2; ; gen++ {
		if !in.log.has(contains("msg=ready", fmt.Sprintf("gen=%d ", gen))) {
			last = gen - 1
			break
		}
	}
	ok, failed, errs := ld.stop()
	st.closeIntact(t)
	if failed > 0 {
		t.Fatalf("%d short connections failed (of %d): %v", failed, ok+failed, errs)
	}
	if in.log.has(contains("upgrade failed")) {
		t.Fatalf("an upgrade failed:\n%s", in.log)
	}
	// Nothing was left to drain: every old generation handed over every
	// connection (a reload may still wait the few milliseconds its
	// predecessor takes to exit).
	for _, l := range strings.Split(in.log.String(), "\n") {
		if strings.Contains(l, "connection hand-over") && !(strings.Contains(l, "upgrade_succeeded=true") && strings.Contains(l, " kept=0 lost=0 ")) {
			t.Fatalf("a hand-over kept or lost connections: %s", l)
		}
	}
	// Signals sent while an upgrade runs coalesce; none waits for a drain,
	// so most SIGHUPs make a generation.
	if last < sent/2 {
		t.Fatalf("%d SIGHUPs made %d generations", sent, last)
	}
	t.Logf("%d SIGHUPs, %d generations, %d short connections ok, streams %d round trips", sent, last, ok, st.rounds.Load())
}

// servingPID returns the pid the PID file names.
func (in *instance) servingPID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(in.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("PID file: %v", err)
	}
	return pid
}
