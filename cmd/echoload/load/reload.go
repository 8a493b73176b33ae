package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pidPollInterval is how often the pid file is read while waiting for the
// new generation after a reload signal.
const pidPollInterval = time.Millisecond

// maxReloadOutput bounds how much of a failed reload command's output is
// kept in its error message.
const maxReloadOutput = 256

// ParseSignal parses a signal name ("HUP", "SIGHUP", "usr2") or number.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// Reloader triggers reloads and records them in a Recorder.
type Reloader struct {
	cfg ReloadConfig
	sig syscall.Signal
	rec *Recorder

	onReload func(ReloadEvent) // test hook, called after each reload
	onSkip   func()            // test hook, called after each skipped tick
}

// NewReloader returns a reloader for cfg, which must be Enabled.
func NewReloader(cfg ReloadConfig, rec *Recorder) (*Reloader, error) {
	r := &Reloader{cfg: cfg, rec: rec}
	if cfg.Timeout <= 0 {
		return nil, errors.New("reload timeout must be positive")
	}
	switch cfg.Mode() {
	case "cmd":
	case "signal":
		sig, err := ParseSignal(cmp(cfg.Signal, "HUP"))
		if err != nil {
			return nil, err
		}
		r.sig = sig
	default:
		return nil, errors.New("no reload command or pid file configured")
	}
	return r, nil
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Run triggers a reload every cfg.Every until ctx (the run) is done.
// Reloads never overlap: a tick that arrives while a reload is in progress
// is skipped and counted (Recorder.ReloadSkipped). When ctx is done, Run
// waits for the reload in progress: in command mode the command runs to
// completion (bounded by cfg.Timeout: a "systemctl reload" must not be
// killed halfway); in signal mode the wait for the new pid stops at once
// and the reload is recorded as pending.
func (r *Reloader) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	busy := make(chan struct{}, 1) // holds a token while a reload runs
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil {
				return // both were ready; the run is over
			}
			select {
			case busy <- struct{}{}:
				wg.Go(func() {
					defer func() { <-busy }()
					r.Once(ctx)
				})
			default:
				r.rec.ReloadSkipped()
				if r.onSkip != nil {
					r.onSkip()
				}
			}
		}
	}
}

// Once performs one reload, records it and returns it. ctx is the run: in
// signal mode, a reload whose new generation has not appeared when ctx is
// done is recorded as pending (see ReloadEvent.Pending). In command mode
// ctx is ignored: the command always runs to completion or to the reload
// timeout.
func (r *Reloader) Once(ctx context.Context) ReloadEvent {
	ev := ReloadEvent{Start: r.rec.Since(), ExitStatus: -1}
	r.rec.ReloadBegin(ev.Start)
	var err error
	if r.cfg.Cmd != "" {
		ev.ExitStatus, err = r.runCmd()
	} else {
		ev.OldPID, ev.NewPID, ev.Pending, err = r.signal(ctx)
	}
	ev.End = r.rec.Since()
	ev.OK = err == nil && !ev.Pending
	if err != nil {
		ev.Err = err.Error()
	}
	r.rec.ReloadEnd(ev)
	if r.onReload != nil {
		r.onReload(ev)
	}
	return ev
}

// runCmd runs the reload command with sh -c, bounded by the timeout.
func (r *Reloader) runCmd() (exitStatus int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", r.cfg.Cmd)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second // do not wait forever for orphaned pipes
	err = cmd.Run()
	exitStatus = -1
	if cmd.ProcessState != nil {
		exitStatus = cmd.ProcessState.ExitCode()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v (-reload-timeout): %w", r.cfg.Timeout, err)
		}
		msg := strings.TrimSpace(out.String())
		if len(msg) > maxReloadOutput {
			msg = "..." + msg[len(msg)-maxReloadOutput:]
		}
		if msg != "" {
			return exitStatus, fmt.Errorf("reload command: %w: %s", err, msg)
		}
		return exitStatus, fmt.Errorf("reload command: %w", err)
	}
	return exitStatus, nil
}

// signal sends the signal to the pid in the pid file, then polls the file
// until it names a different pid (the new generation is ready), bounded by
// the reload timeout. If ctx is done first, it stops waiting and reports
// the reload as pending: the daemon may legitimately hold it back (echod
// queues a reload while the previous generation drains its connections).
func (r *Reloader) signal(ctx context.Context) (oldPID, newPID int, pending bool, err error) {
	oldPID, err = readPID(r.cfg.PidFile)
	if err != nil {
		return 0, 0, false, err
	}
	if err := unix.Kill(oldPID, r.sig); err != nil {
		return oldPID, 0, false, fmt.Errorf("send %v to pid %d: %w", r.sig, oldPID, err)
	}
	// changed reads the pid file; a missing, empty or half-written file
	// just means "not yet".
	changed := func() bool {
		pid, err := readPID(r.cfg.PidFile)
		if err == nil && pid != oldPID {
			newPID = pid
			return true
		}
		return false
	}
	deadline := time.NewTimer(r.cfg.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pidPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if changed() {
				return oldPID, newPID, false, nil
			}
			return oldPID, 0, true, nil
		case <-deadline.C:
			if changed() {
				return oldPID, newPID, false, nil
			}
			return oldPID, 0, false, fmt.Errorf("pid file %s still names pid %d %v after sending %v (-reload-timeout)", r.cfg.PidFile, oldPID, r.cfg.Timeout, r.sig)
		case <-tick.C:
			if changed() {
				return oldPID, newPID, false, nil
			}
		}
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: invalid pid %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}
