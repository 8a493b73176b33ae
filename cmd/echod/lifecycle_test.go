package main

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSecondSIGTERMForcesStop: a SIGTERM starts a drain bounded by
// -drain-timeout (5 minutes here), during which 50 long-lived streams are
// served on; a second SIGTERM closes them at once — each ends with EOF or
// a reset, never a wrong byte — and the process exits with status 1,
// logging how many it closed.
func TestSecondSIGTERMForcesStop(t *testing.T) {
	const n = 50
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-drain-timeout", "5m")
	st := mustStreams(t, "tcp", in.addrs[0], n, 20*time.Millisecond)
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.log.waitFor(t, 10*time.Second, "draining", contains("msg=draining", "gen=1 "))
	waitRounds(t, st, 2*n) // served during the drain
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.log.waitFor(t, 10*time.Second, "forced stop", contains("forced stop", fmt.Sprintf(`closed="%d connections"`, n)))
	done := make(chan error, 1)
	go func() { done <- in.cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 {
			t.Fatalf("exit after a forced stop: %v, want status 1", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after the second SIGTERM (drain timeout 5m)")
	}
	if ended := waitStreamsEnded(t, st, n, 10*time.Second); ended != n {
		t.Fatalf("%d of %d streams ended after the forced stop", ended, n)
	}
}

// TestSIGHUPToDrainingGeneration: a SIGHUP that reaches a generation
// already replaced (still draining a connection) is passed on to the
// generation that serves, which reloads.
func TestSIGHUPToDrainingGeneration(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-migrate=false")
	c := mustEcho(t, "tcp", in.addrs[0], 10) // keeps generation 1 draining
	defer c.Close()
	pid1 := in.cmd.Process.Pid
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	in.readyPID(2)
	in.log.waitFor(t, 10*time.Second, "generation 1 draining", contains("msg=draining", "gen=1 "))
	signalPID(t, pid1, unix.SIGHUP)
	in.log.waitFor(t, 10*time.Second, "generation 1 passing the SIGHUP on", contains("passing it on", "gen=1 "))
	// Generation 2 queues it until generation 1 has drained (tableflip
	// upgrades only once the previous generation exited).
	in.log.waitFor(t, 10*time.Second, "generation 2 queueing the reload", contains("upgrade waits for the previous generation", "gen=2 "))
	if err := c.roundTrip(100); err != nil {
		t.Fatalf("generation 1's connection: %v", err)
	}
	c.Close()
	if pid3 := in.readyPID(3); pid3 == pid1 {
		t.Fatal("generation 3 has generation 1's pid")
	}
}

// TestNoHandOffStateInEnvironment: the generations speak over their
// channel; nothing of the hand-over is in a new generation's environment
// (as the kernel shows it in /proc/PID/environ, set at exec), and it
// holds no pipe but those generation 1 was started with (tableflip's
// readiness and names pipes are closed).
func TestNoHandOffStateInEnvironment(t *testing.T) {
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0")
	// The pipes generation 1 was started with (the test's stderr, and
	// whatever its own parent left open): a later generation inherits
	// those, and no other.
	inherited := map[string]bool{}
	for _, p := range pipesOf(t, in.cmd.Process.Pid) {
		_, target, _ := strings.Cut(p, "->")
		inherited[target] = true
	}
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	pid2 := in.readyPID(2)
	if env := handOverEnv(t, pid2); len(env) > 0 {
		t.Errorf("generation 2 (pid %d) was exec'd with %v", pid2, env)
	}
	for _, p := range pipesOf(t, pid2) {
		if _, target, _ := strings.Cut(p, "->"); !inherited[target] {
			t.Errorf("generation 2 (pid %d) holds a pipe generation 1 was not started with: %s", pid2, p)
		}
	}
	if s := in.status(t); !bytes.Contains([]byte(s), []byte(fmt.Sprintf("generation 2 pid %d", pid2))) {
		t.Fatalf("status %q, want generation 2 pid %d", s, pid2)
	}
}
