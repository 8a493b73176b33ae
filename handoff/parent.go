//go:build linux

package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/echod/echod/daemon"
)

// childReport is what a new generation said over the channel, and how
// the hand-over went.
type childReport struct {
	hello    *hello
	ready    *ready
	failed   *failed
	protoErr error

	paused      time.Time // the hand-over began (zero: none)
	sent, kept  []daemon.DetachedConn
	detach      time.Duration
	handOverErr error
	// A staged hand-over (staged.go): the copies the child took.
	staged      bool
	stagedConns []net.Conn
	copied      time.Time // the copies were all sent (done)
}

// add records message m.
func (rep *childReport) add(m message) {
	switch m.Type {
	case msgHello:
		var h hello
		if err := decodeBody(m, &h); err != nil || h.PID <= 0 {
			rep.protoErr = fmt.Errorf("%w: bad hello %s", ErrProtocol, m.Body)
			return
		}
		rep.hello = &h
	case msgReady:
		var r ready
		if err := decodeBody(m, &r); err != nil {
			rep.protoErr = err
			return
		}
		rep.ready = &r
	case msgFailed:
		var f failed
		if err := decodeBody(m, &f); err != nil {
			rep.protoErr = err
			return
		}
		rep.failed = &f
	default:
		rep.protoErr = fmt.Errorf("%w: unexpected %s from the new generation", ErrProtocol, m.Type)
	}
}

// merge adds what another read found.
func (rep *childReport) merge(o childReport) {
	if rep.hello == nil {
		rep.hello = o.hello
	}
	if rep.ready == nil {
		rep.ready = o.ready
	}
	if rep.failed == nil {
		rep.failed = o.failed
	}
	if rep.protoErr == nil {
		rep.protoErr = o.protoErr
	}
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
	if carry := g.opts.Carry; carry != nil {
		if b := carry(); len(b) <= MaxCarry {
			o.Carry = b
		} else {
			g.logger().Warn("state to carry to the next generation not passed on: too large", "bytes", len(b), "max", MaxCarry)
		}
	}
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

	upErrC := make(chan error, 1)
	go func() { upErrC <- g.tableflipUpgrade() }()
	msgs, stopReader := startReader(ch)
	rep, upErr, upDone := g.converse(ch, msgs, upErrC)
	if !upDone {
		upErr = <-upErrC
	}
	if held := stopReader(); held != nil {
		// Read, and not taken before tableflip's outcome came.
		closeFDs(held.fds)
		if held.ctrunc || len(held.fds) > 0 {
			rep.protoErr = fmt.Errorf("%w: file descriptors from the new generation", ErrProtocol)
		} else {
			rep.add(held.m)
		}
	}
	// What the child queued and the reader had not read yet (a failed
	// message written just before it exited).
	rest := readReport(ch)
	rep.merge(rest)
	if upErr == nil && g.onCommit != nil {
		g.onCommit()
	}
	g.settle(upErr == nil, &rep, ch)

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
	case errors.Is(upErr, ErrNotStarted):
		return Result{}, upErr
	case rep.failed != nil:
		return Result{}, fmt.Errorf("%s (%w)", rep.failed.Reason, upErr)
	case rep.protoErr != nil:
		return Result{}, fmt.Errorf("%w; %w", rep.protoErr, upErr)
	case rep.hello == nil && strings.HasSuffix(upErr.Error(), tableflipTimedOut):
		return Result{}, fmt.Errorf("the new process neither spoke the hand-over protocol (version %d) nor became ready within the upgrade timeout, and was killed: not a build of this daemon, or it hangs early (%w)", protoVersion, upErr)
	case rep.hello == nil:
		return Result{}, fmt.Errorf("the new process exited before it spoke the hand-over protocol (version %d): not a build of this daemon, a release that does not speak it, or it crashed early (%w)", protoVersion, upErr)
	case rep.handOverErr != nil:
		return Result{}, fmt.Errorf("%w (%w)", rep.handOverErr, upErr)
	}
	return Result{}, upErr
}

// converse reads what the child says until tableflip reports the outcome,
// and runs the connection hand-over when the child is ready for it. It
// returns tableflip's outcome if it received it (upDone).
func (g *Generation) converse(ch *channel, msgs <-chan recvResult, upErrC <-chan error) (rep childReport, upErr error, upDone bool) {
	for {
		select {
		case upErr = <-upErrC:
			return rep, upErr, true
		case r, ok := <-msgs:
			if !ok {
				return rep, nil, false // reader ended (EOF or error): wait for tableflip
			}
			closeFDs(r.fds)
			if r.err == nil && (r.ctrunc || len(r.fds) > 0) {
				r.err = fmt.Errorf("%w: file descriptors from the new generation", ErrProtocol)
			}
			if r.err != nil {
				if !errors.Is(r.err, errEOF) {
					rep.protoErr = r.err
				}
				return rep, nil, false
			}
			rep.add(r.m)
			if rep.protoErr != nil {
				return rep, nil, false
			}
			if r.m.Type == msgReady && rep.ready.Adopts {
				rep.paused = time.Now()
				g.mu.Lock()
				m := g.migration
				g.mu.Unlock()
				var err error
				if rep.ready.Staged && m.staged() {
					rep.staged = true
					m.Pause()
					rep.stagedConns, err = g.stageConns(m, ch, msgs, upErrC)
					rep.copied = time.Now()
				} else {
					rep.sent, rep.kept, rep.detach, err = g.handOver(ch, msgs, upErrC)
				}
				rep.handOverErr = err
				var ended *upgradeEnded
				if errors.As(err, &ended) {
					return rep, ended.err, true
				}
				if err != nil {
					// The child gets no done and will not commit; end the
					// channel so it knows.
					ch.c.CloseWrite()
				}
				return rep, nil, false
			}
		}
	}
}

// startReader reads the channel in its own goroutine until stop (or an
// error), so the parent can wait for a message and for tableflip at once.
// stop returns the message the reader had read and nobody took (nil:
// none): a "failed" the child sent just before it exited may be that one.
func startReader(ch *channel) (<-chan recvResult, func() *recvResult) {
	out := make(chan recvResult)
	quit := make(chan struct{})
	done := make(chan struct{})
	var held *recvResult // set before done is closed
	go func() {
		defer close(done)
		defer close(out)
		for {
			m, fds, ctrunc, err := ch.recv(true, time.Time{})
			r := recvResult{m: m, fds: fds, ctrunc: ctrunc, err: err}
			select {
			case out <- r:
			case <-quit:
				if err == nil {
					held = &r
				}
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out, func() *recvResult {
		close(quit)
		ch.interrupt() // ends a receive in progress, or about to start
		<-done
		ch.resume()
		return held
	}
}

// readReport reads every message still queued on the channel.
func readReport(ch *channel) childReport {
	var rep childReport
	for {
		m, fds, ctrunc, err := ch.recv(false, time.Time{})
		closeFDs(fds)
		if errors.Is(err, errNoMessage) || errors.Is(err, errEOF) {
			return rep
		}
		if err == nil && (ctrunc || len(fds) > 0) {
			err = fmt.Errorf("%w: file descriptors from the new generation", ErrProtocol)
		}
		if err != nil {
			rep.protoErr = err
			return rep
		}
		if rep.add(m); rep.protoErr != nil {
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
