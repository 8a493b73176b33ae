package main

// The fault matrix of issue "Reliability and security": each test breaks a
// reload (or a generation) in one way while long-lived streams are open
// and short connections come and go, and checks what echod promises for
// that fault — the old generation serves on, nothing is refused or reset,
// every stream keeps its exact byte sequence, the reason is in the reload's
// answer and in the log — or, for the faults after the commit, exactly
// what is lost and what is not.

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/handoff/control"
)

// faultModeEnv makes the test binary a fault wrapper instead of a test
// run (see runFaultWrapper); faultRealEnv names the echod it wraps.
const (
	faultModeEnv = "ECHOD_TEST_FAULT_MODE"
	faultRealEnv = "ECHOD_TEST_FAULT_REAL"
)

func init() {
	if mode := os.Getenv(faultModeEnv); mode != "" {
		os.Exit(runFaultWrapper(mode))
	}
}

// clockLayout is how startLoad stamps its errors, and how the fault
// wrapper stamps the crash: the two compare as strings (same day).
const clockLayout = "15:04:05.000000"

// runFaultWrapper is the test binary exec'd by tableflip in place of
// echod, through the script writeFaultWrapper puts at the binary's path.
// Mode "crash-after-ready:D": it runs the real echod as its child with
// every descriptor tableflip passed (at the same numbers; it keeps no
// copy), forwards its log, and D after the child logged "ready" (it
// committed and serves) kills it with SIGABRT — a Go crash, exit status 2
// — then exits once the child is gone.
func runFaultWrapper(mode string) int {
	d, ok := strings.CutPrefix(mode, "crash-after-ready:")
	delay, err := time.ParseDuration(d)
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "fault wrapper: unknown mode %q\n", mode)
		return 1
	}
	// What tableflip passed: every descriptor from 3 without FD_CLOEXEC
	// (the Go runtime opens its own with it).
	var extra []*os.File
	for fd := 3; fd < 1024; fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		for len(extra) < fd-3 {
			extra = append(extra, nil) // closed in the child
		}
		extra = append(extra, os.NewFile(uintptr(fd), "inherited"))
	}
	env := []string{"GOTRACEBACK=none"} // the crash in one line, not every goroutine's stack
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, faultModeEnv+"=") && !strings.HasPrefix(kv, faultRealEnv+"=") && !strings.HasPrefix(kv, "GOTRACEBACK=") {
			env = append(env, kv)
		}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault wrapper: %v\n", err)
		return 1
	}
	cmd := exec.Command(os.Getenv(faultRealEnv), os.Args[1:]...)
	cmd.Env, cmd.ExtraFiles = env, extra
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, pw
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "fault wrapper: %v\n", err)
		return 1
	}
	pw.Close()
	for _, f := range extra {
		if f != nil {
			f.Close() // the child's alone: its listeners, channel, pipes
		}
	}
	pid := cmd.Process.Pid
	armed := true
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		fmt.Fprintln(os.Stderr, sc.Text())
		if armed && strings.Contains(sc.Text(), "msg=ready") {
			armed = false
			time.AfterFunc(delay, func() {
				fmt.Fprintf(os.Stderr, "fault wrapper: crashing pid=%d with SIGABRT %v after ready at=%s\n", pid, delay, time.Now().Format(clockLayout))
				_ = cmd.Process.Signal(syscall.SIGABRT)
			})
		}
	}
	_ = cmd.Wait()
	return 0
}

// writeFaultWrapper puts at path a script that runs this test binary as a
// fault wrapper of mode around the echod at real.
func writeFaultWrapper(t *testing.T, path, mode, real string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	script := fmt.Sprintf("#!/bin/sh\n%s=%s %s=%s exec %s \"$@\"\n", faultModeEnv, q(mode), faultRealEnv, q(real), q(self))
	writeExec(t, path, []byte(script))
}

// faultRig is echod run from a copy of the test build at a path of its
// own (the faults replace that file) with a config file, long-lived
// streams open and short-connection load running.
type faultRig struct {
	t        *testing.T
	bin, cfg string
	good     []byte // the working binary, to repair bin
	in       *instance
	addr     string // the TCP listener
	pid1     int    // generation 1
	n        int    // streams
	st       *streams
	ld       *load
}

const rigConfig = `listen = ["127.0.0.1:0"]` + "\n"

// startRig starts echod (generation 1) with args, then n streams, each
// sending every interval, and 4 short-connection workers.
func startRig(t *testing.T, n int, interval time.Duration, args ...string) *faultRig {
	t.Helper()
	good, err := os.ReadFile(echodBin(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &faultRig{t: t, bin: filepath.Join(dir, "echod"), cfg: filepath.Join(dir, "echod.toml"), good: good, n: n}
	writeExec(t, r.bin, good)
	r.writeConfig(rigConfig)
	r.in = startEchod(t, r.bin, append([]string{"-config", r.cfg, "-drain-timeout", "1m"}, args...)...)
	r.addr, r.pid1 = r.in.addrs[0], r.in.cmd.Process.Pid
	if r.st, err = startStreams("tcp", r.addr, n, interval); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.st.close)
	waitRounds(t, r.st, int64(n))
	r.ld = startLoad("tcp", r.addr, 4)
	t.Cleanup(func() { r.ld.stop() })
	return r
}

// writeConfig replaces the config file atomically, as an editor or a
// package manager does.
func (r *faultRig) writeConfig(s string) {
	r.t.Helper()
	tmp := r.cfg + ".new"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.cfg); err != nil {
		r.t.Fatal(err)
	}
}

// reloadCmd runs "echod reload" with the good test build (not the file at
// the binary's path), bounded, and returns its output.
func (r *faultRig) reloadCmd() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, echodBin(r.t), "reload", "-control", r.in.control).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// reloadAsync runs "echod reload" in the background; the answer comes on
// the channel.
func (r *faultRig) reloadAsync() <-chan reloadAnswer {
	done := make(chan reloadAnswer, 1)
	go func() {
		out, err := r.reloadCmd()
		done <- reloadAnswer{out, err}
	}()
	return done
}

type reloadAnswer struct {
	out string
	err error
}

func (r *faultRig) answer(done <-chan reloadAnswer) reloadAnswer {
	r.t.Helper()
	select {
	case a := <-done:
		return a
	case <-time.After(60 * time.Second):
		r.t.Fatalf("echod reload still waiting after 60s\n%s", r.in.log)
	}
	return reloadAnswer{}
}

// reloadFails runs "echod reload" and checks it fails saying want, and
// that generation 1 logged the failure with it.
func (r *faultRig) reloadFails(want string) string {
	r.t.Helper()
	out, err := r.reloadCmd()
	r.checkFailed(out, err, want)
	return out
}

func (r *faultRig) checkFailed(out string, err error, want string) {
	r.t.Helper()
	if err == nil {
		r.t.Fatalf("echod reload succeeded (%q), want a failure saying %q", out, want)
	}
	if !strings.Contains(out, want) {
		r.t.Fatalf("echod reload failed with %q, want it to say %q", out, want)
	}
	r.in.log.waitFor(r.t, 5*time.Second, "the failure in generation 1's log", contains("upgrade failed", "gen=1 ", want))
}

// servesOn checks that generation 1 still serves everything after a
// failed reload: it is alive and says why the reload failed, a new
// connection echoes, every stream goes on, no short connection failed.
func (r *faultRig) servesOn() {
	r.t.Helper()
	if !alive(r.pid1) {
		r.t.Fatal("generation 1 died")
	}
	if s := r.in.status(r.t); !strings.Contains(s, fmt.Sprintf("generation 1 pid %d ", r.pid1)) || !strings.Contains(s, "last reload failed") {
		r.t.Fatalf("status %q, want generation 1 (pid %d) saying the last reload failed", s, r.pid1)
	}
	c, err := dialEcho("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("new connection after the failed reload: %v", err)
	}
	defer c.Close()
	if err := c.roundTrip(4096); err != nil {
		r.t.Fatalf("new connection after the failed reload: %v", err)
	}
	waitRounds(r.t, r.st, 2*int64(r.n))
	if f := r.ld.failures.Load(); f > 0 {
		r.t.Fatalf("%d short connections failed: %v", f, r.ld.errorsSoFar())
	}
}

// servesOnThenRepaired is the end of every failed-reload case: generation
// 1 serves on (servesOn), the repaired binary and config reload and move
// every stream (repairAndReload), and no client noticed (finish).
func (r *faultRig) servesOnThenRepaired() {
	r.t.Helper()
	r.servesOn()
	r.repairAndReload()
	r.finish()
}

// repairAndReload restores the binary and the config: the next reload
// moves every stream to generation 2.
func (r *faultRig) repairAndReload() {
	r.t.Helper()
	writeExec(r.t, r.bin, r.good)
	r.writeConfig(rigConfig)
	r.reloadMovesAll()
}

// reloadMovesAll reloads and checks that every connection moved.
func (r *faultRig) reloadMovesAll() {
	r.t.Helper()
	ans, err := r.reloadCmd()
	if err != nil {
		r.t.Fatalf("reload after the repair: %v: %s\n%s", err, ans, r.in.log)
	}
	m := movedRe.FindStringSubmatch(ans)
	if m == nil || atoi(m[1]) < r.n || m[2] != "0" {
		r.t.Fatalf("reload answered %q, want moved=%d or more (the streams and short connections open) draining=0", ans, r.n)
	}
	r.in.readyPID(2)
	waitExit(r.t, r.pid1, 10*time.Second)
	waitRounds(r.t, r.st, 2*int64(r.n))
}

// finish stops the clients: no short connection failed, every stream
// kept its bytes.
func (r *faultRig) finish() {
	r.t.Helper()
	stopLoad(r.t, r.addr, r.ld)
	r.st.closeIntact(r.t)
}

// TestReloadRandomBytesBinary: the file at the binary's path is random
// bytes, executable — neither an ELF nor a script. The exec fails (exec
// format error: Go does not fall back to /bin/sh), the reload says so,
// generation 1 never stopped accepting and serves every stream on.
func TestReloadRandomBytesBinary(t *testing.T) {
	r := startRig(t, 50, 20*time.Millisecond)
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	junk[0] = 0 // neither "#!" nor "\x7fELF"
	writeExec(t, r.bin, junk)
	out := r.reloadFails("exec format error")
	notStarted(t, out)
	r.servesOnThenRepaired()
	t.Logf("echod reload: %s", out)
}

// notStarted checks that a reload whose exec failed says so first, not
// that the new process misbehaved.
func notStarted(t *testing.T, out string) {
	t.Helper()
	if want := "upgrade to generation 2: handoff: the new process could not be started: can't start child: "; !strings.Contains(out, want) || strings.Contains(out, "hand-over protocol") {
		t.Fatalf("echod reload: %q, want it to lead with %q", out, want)
	}
}

// TestReloadBinaryMissing: the binary's path holds no file (removed by a
// package manager half-way, say). The reload fails naming the missing
// file, generation 1 serves on.
func TestReloadBinaryMissing(t *testing.T) {
	r := startRig(t, 50, 20*time.Millisecond)
	if err := os.Remove(r.bin); err != nil {
		t.Fatal(err)
	}
	out := r.reloadFails("no such file or directory")
	notStarted(t, out)
	r.servesOnThenRepaired()
	t.Logf("echod reload: %s", out)
}

// TestReloadStoppedAfterListeners: the new generation is stopped
// (SIGSTOP) right after it took its listeners — a hang before its commit.
// It is killed at -upgrade-timeout, the reload fails saying it timed out,
// and generation 1 served every stream all along and accepts (clients
// that came while it paused for the hand-over waited in the backlog).
func TestReloadStoppedAfterListeners(t *testing.T) {
	const timeout = time.Second
	// 1,000 streams: their copies before the commit take a few ms, so
	// the SIGSTOP, sent when generation 2 logs its listener, lands before
	// it (checked below).
	r := startRig(t, 1000, 250*time.Millisecond, "-upgrade-timeout", timeout.String())
	start := time.Now()
	done := r.reloadAsync()
	l := r.in.log.waitFor(t, 10*time.Second, "generation 2 took its listeners", contains("msg=listener", "gen=2 "))
	pid2 := atoi(field(pidRe, l))
	signalPID(t, pid2, unix.SIGSTOP)
	t.Cleanup(func() { procs.signal(pid2, unix.SIGKILL) })
	// A client arriving now: served by generation 1 at once, or — if it
	// paused for the hand-over — once the upgrade timed out.
	probe := make(chan error, 1)
	probeStart := time.Now()
	var probeTook time.Duration
	go func() {
		c, err := dialEcho("tcp", r.addr)
		if err == nil {
			err = c.roundTrip(100)
			c.Close()
		}
		probeTook = time.Since(probeStart)
		probe <- err
	}()
	a := r.answer(done)
	took := time.Since(start)
	if err := <-probe; err != nil {
		t.Fatalf("a client arriving while generation 2 was stopped: %v", err)
	}
	r.checkFailed(a.out, a.err, "timed out")
	if took < timeout {
		t.Fatalf("the reload failed after %v, before the upgrade timeout %v", took, timeout)
	}
	waitExit(t, pid2, 5*time.Second) // tableflip's SIGKILL
	if r.in.log.has(contains("msg=ready", "gen=2 ")) {
		t.Fatalf("generation 2 committed before the SIGSTOP reached it: the test did not stop it in time\n%s", r.in.log)
	}
	r.servesOnThenRepaired()
	where := "before its ready message: generation 1 never paused accepting"
	if strings.Contains(a.out, "during the hand-over") {
		where = "during the copies, after its ready message: generation 1 paused accepting until the timeout"
	}
	t.Logf("stopped %s; a client arriving then was served after %v; echod reload after %v: %s", where, probeTook.Round(time.Millisecond), took.Round(time.Millisecond), a.out)
}

// TestReloadBusyAddress: the new config parses but cannot be served: it
// adds a listen address another socket (the test's) holds. The new
// generation fails to bind it, the reload says "address already in use",
// generation 1 serves on; once the address is free the same config
// reloads and is served.
func TestReloadBusyAddress(t *testing.T) {
	r := startRig(t, 50, 20*time.Millisecond)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := fmt.Sprintf("listen = [\"127.0.0.1:0\", %q]\n", busy.Addr().String())
	r.writeConfig(cfg)
	out := r.reloadFails("address already in use")
	r.servesOn()
	busy.Close()
	r.reloadMovesAll()
	mustEcho(t, "tcp", busy.Addr().String(), 512)
	r.finish()
	t.Logf("echod reload: %s", out)
}

// waitStreamsEnded waits (bounded) until at least n streams have ended,
// checks that none got a wrong byte, and returns how many ended.
func waitStreamsEnded(t *testing.T, st *streams, n int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(st.failures()) < n {
		if time.Now().After(deadline) {
			f := st.failures()
			t.Fatalf("%d streams ended within %v, want %d: %v", len(f), timeout, n, f[:min(len(f), 5)])
		}
		time.Sleep(10 * time.Millisecond) // polling a list, bounded
	}
	noWrongBytes(t, st)
	return len(st.failures())
}

// noWrongBytes checks that every stream that ended ended on a read or
// write error (EOF, reset), never on the comparison.
func noWrongBytes(t *testing.T, st *streams) {
	t.Helper()
	for _, e := range st.failures() {
		if strings.Contains(e, ": verify: ") {
			t.Fatalf("a stream got bytes it did not send: %s", e)
		}
	}
}

// failedBefore returns the load's errors stamped before at.
func failedBefore(errs []string, at string) []string {
	var out []string
	for _, e := range errs {
		if len(e) < len(clockLayout) || e[:len(clockLayout)] < at {
			out = append(out, e)
		}
	}
	return out
}

// dialRefused checks that nothing listens on addr any more.
func dialRefused(t *testing.T, addr string) {
	t.Helper()
	// While the last process holding the listening socket is being torn
	// down, a connect can meet a reset instead (the socket exists but is
	// closing); it ends in refused, which is the state this asserts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("%s still accepts", addr)
		}
		if errors.Is(err, unix.ECONNREFUSED) {
			return
		}
		if !errors.Is(err, unix.ECONNRESET) || time.Now().After(deadline) {
			t.Fatalf("connect to %s: %v, want connection refused", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the socket's teardown, bounded
	}
}

var (
	atRe       = regexp.MustCompile(`\bat=(\S+)`)
	adoptedRe  = regexp.MustCompile(`\bmoved=(\d+)`)
	detachedRe = regexp.MustCompile(`\bdetached=(\d+)`)
	genRe      = regexp.MustCompile(`\bgen=(\d+)`)
)

// TestNewGenerationCrashesAfterServing: the binary at the path crashes
// (SIGABRT, a Go crash) 50 ms after it committed and logged "ready". The
// commit is the point of no return, and this test pins what it means:
// up to the crash nothing failed (generation 1 accepted until the
// hand-over's pause, the backlog held the rest, generation 2 served from
// its commit); nothing was half-moved (the reload answered moved=all
// draining=0, generation 1's hand-over kept=0 lost=0, and it exited 0);
// the reload reported success, which it was. The crash then takes with
// it what only generation 2 held: every stream ends with EOF or a reset,
// never a wrong byte; and — run standalone — the listening socket itself,
// whose last holder it was: connections are refused, and nobody answers
// on the control socket. The crash is in the log (the runtime's
// "SIGABRT: abort" on generation 2's stderr), not in any answer. (Under systemd, Restart= and the fd-store unit
// keep the socket and copies of the connections: TestFDStoreCrash*.)
func TestNewGenerationCrashesAfterServing(t *testing.T) {
	r := startRig(t, 50, 20*time.Millisecond)
	writeFaultWrapper(t, r.bin, "crash-after-ready:50ms", echodBin(t))
	ans, err := r.reloadCmd()
	if err != nil {
		t.Fatalf("echod reload: %v: %s\n%s", err, ans, r.in.log)
	}
	m := movedRe.FindStringSubmatch(ans)
	if m == nil || atoi(m[1]) < r.n || m[2] != "0" {
		t.Fatalf("reload answered %q, want moved=%d or more draining=0", ans, r.n)
	}
	crash := r.in.log.waitFor(t, 10*time.Second, "the crash", contains("fault wrapper: crashing"))
	pid2, at := atoi(field(pidRe, crash)), field(atRe, crash)
	waitExit(t, pid2, 5*time.Second)
	r.in.log.waitFor(t, 5*time.Second, "generation 2's crash on its stderr", contains("SIGABRT: abort"))
	waitExit(t, r.pid1, 5*time.Second)
	if err := r.in.cmd.Wait(); err != nil {
		t.Fatalf("generation 1 exited with %v, want 0", err)
	}
	r.in.log.waitFor(t, time.Second, "generation 1's whole hand-over", contains("connection hand-over", "gen=1 ", "upgrade_succeeded=true", " kept=0 lost=0 "))
	if ended := waitStreamsEnded(t, r.st, r.n, 10*time.Second); ended != r.n {
		t.Fatalf("%d streams ended, want all %d", ended, r.n)
	}
	ok, failed, errs := r.ld.stop()
	if early := failedBefore(errs, at); len(early) > 0 {
		t.Fatalf("short connections failed before the crash at %s: %v", at, early)
	}
	dialRefused(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s, err := control.Request(ctx, r.in.control, "status"); err == nil {
		t.Fatalf("the control socket still answers after the crash: %q", s)
	}
	t.Logf("reload: %s; crash at %s; short connections %d ok, %d failed after the crash (first: %v)", ans, at, ok, failed, errs[:min(len(errs), 3)])
}

// TestNewGenerationKilledAfterReady: SIGKILL of the new generation as
// soon as it logged "ready" — it committed, generation 1 closed its
// listening socket and is moving the streams, a batch at a time. What
// echod guarantees, and this test pins, whatever batch the kill lands in:
// the reload answered success (the commit happened) with what moved and
// what stayed; nothing was lost by the hand-over itself (lost=0); every
// stream whose state was sent dies with generation 2, with EOF or a
// reset, never a wrong byte; every stream not sent yet stays with
// generation 1, which serves it to its end (it drains: exits once they
// close); no short connection failed before the kill; and — standalone,
// generation 2 being the only one accepting — the listening socket is
// gone with it: new connections are refused.
func TestNewGenerationKilledAfterReady(t *testing.T) {
	const n, workers = 1000, 4 // 4 batches to move
	r := startRig(t, n, 250*time.Millisecond)
	done := r.reloadAsync()
	l := r.in.log.waitFor(t, 10*time.Second, "generation 2 ready", contains("msg=ready", "gen=2 "))
	pid2 := atoi(field(pidRe, l))
	at := time.Now().Format(clockLayout)
	signalPID(t, pid2, unix.SIGKILL)
	waitExit(t, pid2, 5*time.Second)
	dead := time.Now()
	a := r.answer(done)
	if a.err != nil && strings.Contains(a.out, fmt.Sprintf("child pid=%d exited: signal: killed", pid2)) {
		// The kill came between the readiness byte leaving generation 2
		// and generation 1 reading it: generation 1 saw its child die
		// first, and the commit never happened. Then nothing moved: the
		// reload failed, and generation 1 serves every stream and accepts.
		// (Generation 2 had begun to accept: a short connection it took
		// in that moment died with it.)
		r.in.log.waitFor(t, 5*time.Second, "the failed upgrade", contains("upgrade failed", "gen=1 "))
		ended, live := r.st.settle(t, dead, 30*time.Second)
		if len(ended) > 0 || len(live) != n {
			f := r.st.failures()
			t.Fatalf("the commit did not happen, yet %d streams ended: %v", len(ended), f[:min(len(f), 5)])
		}
		mustEcho(t, "tcp", r.addr, 4096).Close()
		ok, failed, errs := r.ld.stop()
		if early := failedBefore(errs, at); len(early) > 0 {
			t.Fatalf("short connections failed before the kill at %s: %v", at, early)
		}
		r.st.close()
		t.Logf("the SIGKILL came before generation 1 saw the commit: %s; every stream served on; short connections %d ok, %d failed after the kill", a.out, ok, failed)
		return
	}
	m := movedRe.FindStringSubmatch(a.out)
	if a.err != nil || m == nil || !strings.Contains(a.out, fmt.Sprintf("pid=%d generation=2 ", pid2)) {
		t.Fatalf("echod reload: %q (%v), want the committed generation 2 (pid %d) with moved= and draining=", a.out, a.err, pid2)
	}
	moved, kept := atoi(m[1]), atoi(m[2])
	r.in.log.waitFor(t, 5*time.Second, "generation 1's hand-over", contains("connection hand-over", "gen=1 ", fmt.Sprintf(" moved=%d kept=%d lost=0 ", moved, kept)))
	dialRefused(t, r.addr)
	ok, failed, errs := r.ld.stop() // every connect is refused from now on
	if early := failedBefore(errs, at); len(early) > 0 {
		t.Fatalf("short connections failed before the kill at %s: %v", at, early)
	}
	// Each stream ends (its state went to generation 2) or is served by
	// generation 1 after generation 2 died; moved= and draining= count
	// the workers' short connections open then, too.
	ended, live := r.st.settle(t, dead, 30*time.Second)
	noWrongBytes(t, r.st)
	lost, left := len(ended), len(live)
	if lost > moved || left > kept {
		t.Fatalf("%d streams ended and %d go on, after moved=%d draining=%d", lost, left, moved, kept)
	}
	if left > 0 && !alive(r.pid1) {
		t.Fatalf("generation 1 exited with %d streams it kept", left)
	}
	r.st.close()
	waitExit(t, r.pid1, 10*time.Second) // drained once they closed
	if err := r.in.cmd.Wait(); err != nil {
		t.Fatalf("generation 1 exited with %v, want 0", err)
	}
	t.Logf("reload: %s; SIGKILL at %s; streams: %d ended (EOF or reset), %d served to their end by generation 1; short connections %d ok, %d failed after the kill", a.out, at, lost, left, ok, failed)
}

// TestOldGenerationKilledDuringMove: SIGKILL of the old generation after
// the commit, while it moves 2,000 streams a batch at a time (at its
// second batch). Connections not moved yet are lost — generation 1 held
// them, generation 2 only an unserved copy, which it closes: each ends
// with EOF or a reset, never a wrong byte. Nothing else is: every moved
// stream keeps its exact byte sequence, generation 2 accepts (no short
// connection refused; at most the workers' connections open in the lost
// batches fail, none after the kill), says in its log that the hand-over
// broke, and is a whole generation: the next reload moves every survivor.
// echod reload, whose daemon died mid-request, fails: "no answer".
func TestOldGenerationKilledDuringMove(t *testing.T) {
	// 8 batches to move: killed at the second, with six to go, it dies
	// mid-move unless this test is scheduled out for the ~10 ms they take.
	const n, workers = 2000, 4
	r := startRig(t, n, 500*time.Millisecond)
	done := r.reloadAsync()
	var batches []string
	r.in.log.waitFor(t, 10*time.Second, "generation 1's second batch", func(l string) bool {
		if strings.Contains(l, "connections detached") && strings.Contains(l, "gen=1 ") {
			batches = append(batches, l)
		}
		return len(batches) == 2
	})
	at := time.Now().Format(clockLayout)
	signalPID(t, r.pid1, unix.SIGKILL)
	waitExit(t, r.pid1, 5*time.Second)
	dead := time.Now()
	pid2 := r.in.readyPID(2)
	a := r.answer(done)
	l := r.in.log.waitFor(t, 10*time.Second, "generation 2's adoption", contains("adopted the previous generation's connections", "gen=2 "))
	moved := atoi(field(adoptedRe, l))
	first := atoi(field(detachedRe, batches[0]))
	// The first batch was sent before the second was taken out.
	if moved < first {
		t.Fatalf("generation 2 adopted %d connections, want at least the first batch's %d: %s", moved, first, l)
	}
	all := moved >= n // the kill came after the last batch: nothing to lose
	if !all && !strings.Contains(l, "closed the channel before the end of the hand-over") {
		t.Fatalf("generation 2 does not say the hand-over broke: %s", l)
	}
	if !all && (a.err == nil || !strings.Contains(a.out, "no answer")) {
		t.Fatalf("echod reload: %q (%v), want a failure: its daemon died", a.out, a.err)
	}
	mustEcho(t, "tcp", r.addr, 512)
	// The streams not moved end; the moved ones go on. moved= counts the
	// workers' short connections moved too.
	lostMin := max(n-moved, 0)
	ended, _ := r.st.settle(t, dead, 30*time.Second)
	noWrongBytes(t, r.st)
	lost := len(ended)
	if lost < lostMin || lost > lostMin+workers {
		t.Fatalf("%d streams ended, want %d (those not moved), or up to %d more if short connections were moved", lost, lostMin, workers)
	}
	ok, failed, errs := r.ld.stop()
	if refused := r.ld.refused.Load(); refused > 0 || failed > workers {
		t.Fatalf("short connections: %d failed, %d refused, want none refused and at most %d failed (open in a lost batch): %v", failed, refused, workers, errs)
	}
	if early := failedBefore(errs, at); len(early) > 0 {
		t.Fatalf("short connections failed before the kill at %s: %v", at, early)
	}
	ans, err := r.in.reload()
	if err != nil {
		t.Fatalf("reload from generation 2: %v", err)
	}
	if m := movedRe.FindStringSubmatch(ans); m == nil || atoi(m[1]) < n-lost || m[2] != "0" {
		t.Fatalf("reload from generation 2 answered %q, want moved=%d or more draining=0", ans, n-lost)
	}
	waitExit(t, pid2, 10*time.Second)
	ended, _ = r.st.settle(t, time.Now(), 30*time.Second)
	r.st.close()
	noWrongBytes(t, r.st)
	if len(ended) != lost {
		t.Fatalf("%d more streams ended after generation 3 took over", len(ended)-lost)
	}
	if all {
		t.Logf("the SIGKILL came after the last batch: nothing was left to lose")
	}
	t.Logf("SIGKILL at %s at batch 2 (first %d); generation 2: %s; streams: %d lost (EOF or reset), %d moved with every byte; short connections %d ok, %d failed; echod reload: %q; next reload: %s", at, first, l, lost, n-lost, ok, failed, a.out, ans)
}

// sighupServing sends SIGHUP to the pid the PID file names, as
// `kill -HUP $(cat echod.pid)` does; if that process has just exited, to
// the one the file names next.
func sighupServing(t *testing.T, in *instance) {
	t.Helper()
	for range 100 {
		if err := procs.signal(in.servingPID(t), unix.SIGHUP); err == nil {
			return
		}
	}
	t.Fatal("no process named by the PID file took a SIGHUP")
}

// TestSIGHUPBurstLastConfigWins: 50 SIGHUPs within 100 ms, the config
// file changed before each (a new Unix listener each time), with streams
// open and short-connection load: the upgrades they cause run one after
// another — in the log each "upgrade started" is followed by its outcome
// before the next starts — none fails, accepting never stops (no short
// connection failed), every stream keeps its bytes, and the generation
// serving once it is over runs the last configuration: its listeners are
// the TCP one and the 50th Unix socket, and no listener of an earlier
// configuration is left.
func TestSIGHUPBurstLastConfigWins(t *testing.T) {
	const signals = 50
	r := startRig(t, 50, 20*time.Millisecond)
	dir := filepath.Dir(r.cfg)
	sock := func(i int) string { return filepath.Join(dir, fmt.Sprintf("s%d.sock", i)) }
	start := time.Now()
	for i := 1; i <= signals; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i-1) * time.Millisecond))) // pacing
		r.writeConfig(fmt.Sprintf("listen = [\"127.0.0.1:0\", \"unix:%s\"]\n", sock(i)))
		sighupServing(t, r.in)
	}
	// Reported, not asserted: how fast the signals go out depends on the
	// machine, and what is checked below holds at any pace.
	span := time.Since(start)
	t.Logf("%d SIGHUPs sent in %v", signals, span.Round(time.Millisecond))

	// Over once every SIGHUP a generation took is carried out, and the
	// generation serving the last configuration is the only one left.
	// Signals are not counted one by one: pending ones coalesce, in the
	// kernel and in the Go runtime, and one the runtime holds but has not
	// handed to echod yet shows nowhere. So each SIGHUP echod took is
	// logged ("reload requested") with its end ("reload request ended":
	// carried out, alone or with others, failed, or passed on), and the
	// state must hold for 200 ms — far longer than a runtime takes to hand
	// over a signal it holds — with every request taken ended.
	var pid, gen int
	var stable time.Time
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) { // polling the log, bounded
		if time.Now().After(deadline) {
			t.Fatalf("the upgrades did not settle within 20s\n%s", r.in.log)
		}
		log := r.in.log.String()
		pid = r.in.servingPID(t)
		gen = 0
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "msg=ready") && atoi(field(pidRe, l)) == pid {
				gen = atoi(field(genRe, l))
			}
		}
		settled := gen > 0 && strings.Count(log, `msg="reload requested" `) == strings.Count(log, `msg="reload request ended" `) &&
			r.in.log.has(contains("msg=listener", fmt.Sprintf("gen=%d ", gen), sock(signals)))
		for _, p := range r.in.pids() {
			settled = settled && (p == pid || !alive(p))
		}
		if !settled {
			stable = time.Time{}
			continue
		}
		if stable.IsZero() {
			stable = time.Now()
		}
		if time.Since(stable) > 200*time.Millisecond {
			break
		}
	}

	// One upgrade at a time: started, outcome, started, outcome…
	running, upgrades := 0, 0
	for _, l := range strings.Split(r.in.log.String(), "\n") {
		g := atoi(field(genRe, l))
		switch {
		case strings.Contains(l, `msg="upgrade started"`):
			if running != 0 {
				t.Fatalf("generation %d started an upgrade while generation %d's ran:\n%s", g, running, r.in.log)
			}
			running = g
		case strings.Contains(l, `msg="upgrade succeeded"`), strings.Contains(l, `msg="upgrade failed`):
			if running != g {
				t.Fatalf("an outcome of generation %d's upgrade while generation %d's ran: %s", g, running, l)
			}
			if strings.Contains(l, "upgrade failed") {
				t.Fatalf("an upgrade failed: %s", l)
			}
			running = 0
			upgrades++
		}
	}
	if running != 0 || upgrades != gen-1 {
		t.Fatalf("%d upgrades ended (one running: generation %d) for generation %d serving", upgrades, running, gen)
	}

	// The last configuration serves, and only it.
	var ls []string
	for _, l := range strings.Split(r.in.log.String(), "\n") {
		if strings.Contains(l, "msg=listener") && strings.Contains(l, fmt.Sprintf("gen=%d ", gen)) {
			ls = append(ls, field(addrRe, l))
		}
	}
	if len(ls) != 2 || ls[0] != r.addr || !strings.Contains(ls[1], sock(signals)) {
		t.Fatalf("generation %d (serving) listens on %q, want %s and %s", gen, ls, r.addr, sock(signals))
	}
	mustEcho(t, "unix", sock(signals), 512)
	for i := 1; i < signals; i++ {
		if c, err := net.DialTimeout("unix", sock(i), time.Second); err == nil {
			c.Close()
			t.Fatalf("%s, of configuration %d, still accepts", sock(i), i)
		}
	}
	r.finish()
	log := r.in.log.String()
	t.Logf("%d SIGHUPs in %v: %d reload requests taken by serving generations (pending signals coalesce; %d passed on to a successor), %d upgrades, one at a time; generation %d (pid %d) serves the last configuration",
		signals, span.Round(time.Millisecond), strings.Count(log, `msg="reload requested" `), strings.Count(log, "passing it on"), upgrades, gen, pid)
}

// TestReloadOutOfFDs: both generations run out of file descriptors during
// a reload (RLIMIT_NOFILE 512, inherited across the exec). Generation 1
// serves 350 streams and 2 short-connection workers, and idle clients take
// every descriptor left: it accepts until EMFILE, backs off, and the rest
// wait in the kernel backlog. A SIGHUP then cannot even open the
// hand-over's channel: the upgrade fails saying so in the log, no process
// is started, and generation 1 serves every stream on. Once the idle
// clients leave, `echod status` gives the failure and its reason, and
// `echod reload` starts generation 2 under the same limit: it takes the
// streams its descriptor room holds, generation 1 keeps and serves the
// rest until they close. No stream and no short connection fails
// anywhere.
func TestReloadOutOfFDs(t *testing.T) {
	const limit, n, idle = 512, 350, 300
	in := startEchodVia(t, []string{"sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$@"`, limit), "sh"},
		echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "1m")
	addr, pid1 := in.addrs[0], in.cmd.Process.Pid
	st := mustStreams(t, "tcp", addr, n, 50*time.Millisecond)
	ld := startLoad("tcp", addr, 2)
	t.Cleanup(func() { ld.stop() })

	var idlers []net.Conn
	t.Cleanup(func() {
		for _, c := range idlers {
			c.Close()
		}
	})
	for i := range idle {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("idle client %d: %v", i, err)
		}
		idlers = append(idlers, c)
	}
	in.log.waitFor(t, 10*time.Second, "generation 1 out of descriptors", contains("accept failed; retrying", "gen=1 ", "too many open files"))
	fds := fdCount(t, pid1)

	signalPID(t, pid1, unix.SIGHUP)
	l := in.log.waitFor(t, 10*time.Second, "the failed upgrade", contains("upgrade failed", "gen=1 "))
	if !strings.Contains(l, "too many open files") {
		t.Fatalf("the upgrade failed, but not for the descriptors: %s", l)
	}
	waitRounds(t, st, 2*n)
	if pids := in.pids(); len(pids) != 1 {
		t.Fatalf("processes that logged: %v, want generation 1 (%d) alone", pids, pid1)
	}

	for _, c := range idlers {
		c.Close()
	}
	idlers = nil
	if s := in.status(t); !strings.Contains(s, "last reload failed") || !strings.Contains(s, "too many open files") {
		t.Fatalf("status %q, want the failed reload and why", s)
	}
	ans, err := in.reload()
	if err != nil {
		t.Fatalf("reload once descriptors are free: %v\n%s", err, in.log)
	}
	m := movedRe.FindStringSubmatch(ans)
	if m == nil || atoi(m[1])+atoi(m[2]) < n || atoi(m[1]) == 0 || atoi(m[2]) == 0 {
		t.Fatalf("reload answered %q, want moved= and draining= both above 0 (generation 2's room is less than %d), adding up to %d or more", ans, n, n)
	}
	pid2 := in.readyPID(2)
	waitRounds(t, st, 2*n)
	if s := in.status(t); !strings.Contains(s, fmt.Sprintf("pid %d ", pid2)) {
		t.Fatalf("status %q, want generation 2 (pid %d)", s, pid2)
	}
	ok, failed, errs := ld.stop()
	st.closeIntact(t)
	if failed > 0 {
		t.Fatalf("%d short connections failed: %v", failed, errs)
	}
	waitExit(t, pid1, 10*time.Second)
	t.Logf("generation 1 at its limit (%d descriptors): %s; then: %s; short connections %d ok", fds, l, ans, ok)
}
