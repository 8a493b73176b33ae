//go:build linux

package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// childReport is what a new generation said over the channel.
type childReport struct {
	hello    *hello
	ready    *ready
	failed   *failed
	protoErr error
}

// exec runs one upgrade from the parent's side: a fresh channel, the
// offer queued on it, tableflip's exec and wait, then what the child said.
// tableflip's outcome decides: nil means the child sent its readiness byte
// and serves, so the upgrade succeeded whatever the channel holds.
func (g *Generation) exec() (Result, error) {
	if err := checkBinary(); err != nil {
		return Result{}, err
	}
	ch, childEnd, err := newChannelPair()
	if err != nil {
		return Result{}, err
	}
	defer ch.Close()
	g.mu.Lock()
	o := offer{
		Generation: g.gen + 1,
		ParentPID:  os.Getpid(),
		Systemd:    append([]string(nil), g.systemd...),
		Stored:     append([]string(nil), g.stored...),
	}
	g.mu.Unlock()
	err = ch.send(msgOffer, o)
	if err == nil {
		// tableflip passes its own duplicate; the registration is replaced
		// at the next upgrade (tableflip has no way to withdraw a file).
		err = g.upg.AddFile(channelKey, childEnd)
	}
	childEnd.Close()
	if err != nil {
		return Result{}, fmt.Errorf("channel: %w", err)
	}

	upErr := g.tableflipUpgrade()
	rep := readReport(ch)

	if upErr == nil {
		res := Result{Generation: g.gen + 1}
		switch {
		case rep.hello != nil:
			res.PID = rep.hello.PID
		default:
			// Ready without a hello: a release before protocol 2 (or a
			// program of its own). It serves; find its pid.
			res.PID = childPID()
			g.logger().Warn("the new generation did not speak the hand-over protocol (a release before protocol 2?): it serves, found as our child", "pid", res.PID, "err", rep.protoErr)
		}
		return res, nil
	}
	switch {
	case rep.failed != nil:
		return Result{}, fmt.Errorf("%s (%w)", rep.failed.Reason, upErr)
	case rep.protoErr != nil:
		return Result{}, fmt.Errorf("%w; %w", rep.protoErr, upErr)
	case rep.hello == nil:
		return Result{}, fmt.Errorf("the new process exited before it spoke the hand-over protocol (version %d): not a build of this daemon, a release that does not speak it, or it crashed early (%w)", protoVersion, upErr)
	}
	return Result{}, upErr
}

// readReport reads every message queued on the channel: a version 2 child
// queues its hello and its ready or failed before tableflip reports the
// outcome, so nothing needs waiting for.
func readReport(ch *channel) childReport {
	var rep childReport
	for {
		m, files, err := ch.recv(false, time.Time{})
		closeFiles(files)
		if errors.Is(err, errNoMessage) || errors.Is(err, errEOF) {
			return rep
		}
		if err != nil {
			rep.protoErr = err
			return rep
		}
		switch m.Type {
		case msgHello:
			var h hello
			if err := decodeBody(m, &h); err != nil || h.PID <= 0 {
				rep.protoErr = fmt.Errorf("%w: bad hello %s", ErrProtocol, m.Body)
				return rep
			}
			rep.hello = &h
		case msgReady:
			var r ready
			if err := decodeBody(m, &r); err != nil {
				rep.protoErr = err
				return rep
			}
			rep.ready = &r
		case msgFailed:
			var f failed
			if err := decodeBody(m, &f); err != nil {
				rep.protoErr = err
				return rep
			}
			rep.failed = &f
		default:
			rep.protoErr = fmt.Errorf("%w: unexpected %s from the new generation", ErrProtocol, m.Type)
			return rep
		}
	}
}

// childPID returns the pid of this process's only child, or 0: the way
// to find a new generation that did not say hello.
func childPID() int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) != 1 {
		return 0
	}
	return pids[0]
}

// Markers of the hand-over protocol in a daemon's binary. protoMarker is
// in every binary linked with this package (checkBinary searches for it);
// a binary of the release before holds legacyEnv but not protoMarker.
const protoMarker = "echod-handoff-protocol-2"

// ErrIncompatible is wrapped when the binary to exec is a release of this
// daemon that does not speak this release's hand-over protocol (a rollback
// across a protocol change): the upgrade is refused before the exec, and
// this generation keeps serving.
var ErrIncompatible = errors.New("handoff: the new binary does not speak this release's hand-over protocol")

// checkBinary refuses, before the exec, a binary that is a release of this
// daemon from before protocol 2: it would not find the sockets systemd
// passed, nor say hello, and could bind the wrong addresses. Anything else
// (a newer release, a program of its own) is exec'd and judged by what it
// does. It reads the file tableflip will exec.
func checkBinary() error {
	path, err := exec.LookPath(os.Args[0])
	if err != nil {
		return nil // tableflip reports it
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	v1, v2 := []byte(legacyEnv), []byte(protoMarker)
	hasV1, hasV2 := false, false
	buf := make([]byte, 1<<20)
	keep := max(len(v1), len(v2)) - 1
	n := 0
	for {
		m, err := f.Read(buf[n:])
		n += m
		hasV1 = hasV1 || bytes.Contains(buf[:n], v1)
		hasV2 = hasV2 || bytes.Contains(buf[:n], v2)
		if err != nil || hasV2 {
			break
		}
		if n > keep {
			copy(buf, buf[n-keep:n])
			n = keep
		}
	}
	if hasV1 && !hasV2 {
		return fmt.Errorf("%w: %s is a release before protocol %d; restart the service to switch to it", ErrIncompatible, path, protoVersion)
	}
	return nil
}
