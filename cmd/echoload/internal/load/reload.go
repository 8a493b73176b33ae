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

// Run triggers a reload every cfg.Every until ctx is done. Reloads never
// overlap: a tick that arrives while a reload is running is dropped. A
// reload in progress when ctx is done runs to completion (it is bounded by
// cfg.Timeout).
func (r *Reloader) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Once()
		}
	}
}

// Once performs one reload, records it and returns it.
func (r *Reloader) Once() ReloadEvent {
	ev := ReloadEvent{Start: r.rec.Since(), ExitStatus: -1}
	r.rec.ReloadBegin(ev.Start)
	var err error
	if r.cfg.Cmd != "" {
		ev.ExitStatus, err = r.runCmd()
	} else {
		ev.OldPID, ev.NewPID, err = r.signal()
	}
	ev.End = r.rec.Since()
	ev.OK = err == nil
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
			err = fmt.Errorf("timed out after %v: %w", r.cfg.Timeout, err)
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
// the timeout.
func (r *Reloader) signal() (oldPID, newPID int, err error) {
	oldPID, err = readPID(r.cfg.PidFile)
	if err != nil {
		return 0, 0, err
	}
	if err := unix.Kill(oldPID, r.sig); err != nil {
		return oldPID, 0, fmt.Errorf("send %v to pid %d: %w", r.sig, oldPID, err)
	}
	deadline := time.NewTimer(r.cfg.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pidPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			return oldPID, 0, fmt.Errorf("pid file %s still names pid %d %v after sending %v", r.cfg.PidFile, oldPID, r.cfg.Timeout, r.sig)
		case <-tick.C:
			// A missing, empty or half-written file just means "not yet".
			if pid, err := readPID(r.cfg.PidFile); err == nil && pid != oldPID {
				return oldPID, pid, nil
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
