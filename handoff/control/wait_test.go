//go:build linux

package control

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// startChild starts a process that runs until its stdin is closed.
func startChild(t *testing.T) (*exec.Cmd, func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), noExitSleep, roleEnv+"=wait-stdin")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() { stdin.Close() }
	t.Cleanup(func() {
		stop()
		_ = cmd.Wait() // reaped here unless the test did
	})
	return cmd, stop
}

func TestWaitExit(t *testing.T) {
	cmd, stop := startChild(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		done <- WaitExit(ctx, cmd.Process.Pid)
	}()
	select {
	case err := <-done:
		t.Fatalf("WaitExit returned %v while the process runs", err)
	default:
	}
	stop() // the child exits; it is a zombie until the cleanup reaps it
	if err := wait(t, done, "WaitExit"); err != nil {
		t.Fatalf("WaitExit: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	// Gone (reaped): nothing to wait for.
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if err := WaitExit(ctx, cmd.Process.Pid); err != nil {
		t.Errorf("WaitExit on a reaped process: %v", err)
	}
}

func TestWaitExitContext(t *testing.T) {
	cmd, _ := startChild(t)
	pid := cmd.Process.Pid

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := WaitExit(ctx, pid); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: have %v, want DeadlineExceeded", err)
	}

	// Cancelled, without a deadline.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- WaitExit(ctx, pid) }()
	cancel()
	if err := wait(t, done, "WaitExit"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: have %v, want Canceled", err)
	}

	for _, pid := range []int{0, -1} {
		if err := WaitExit(t.Context(), pid); err == nil {
			t.Errorf("WaitExit(%d): no error", pid)
		}
	}
}
