//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Upgrade execs a new generation and waits until it is ready or failed, or
// until ctx ends (the upgrade itself goes on). Requests are queued: one
// made while another upgrade runs, or while the previous generation is
// still draining, is carried out after it. Several requests waiting at
// once are coalesced into one upgrade.
//
// A request made after the new generation of a successful upgrade was
// exec'd — while it was starting, or later — was not served by it (it may
// not have seen the binary or configuration the request was for): it gets
// [ErrUpgraded] with the new generation's Result, so the caller can pass
// the request on to that pid. Upgrade returns [ErrNotReady] before Ready
// and [ErrStopped] after Stop. A failed upgrade leaves this generation
// serving; its error says why: it wraps [ErrNotStarted] when no new
// process could be started, [ErrProtocol] when the new one broke the
// hand-over protocol, and otherwise gives the new generation's own reason
// (Fail, ReportFailure) or how it ended.
func (g *Generation) Upgrade(ctx context.Context) (Result, error) {
	g.mu.Lock()
	state := g.state
	g.mu.Unlock()
	switch state {
	case starting:
		return Result{}, ErrNotReady
	case failedReady:
		return Result{}, ErrStopped
	}
	reply := make(chan upgradeReply, 1)
	select {
	case g.reqs <- reply:
	case <-g.exitC:
		return g.result, ErrUpgraded
	case <-g.runDone:
		return Result{}, ErrStopped
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.res, r.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// run owns the upgrade queue.
func (g *Generation) run() {
	defer close(g.runDone)
	var batch []chan upgradeReply
	for {
		if len(batch) == 0 {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			case <-g.stopC:
				return
			}
		}
		if !g.waitParent(&batch) {
			replyAll(batch, upgradeReply{err: ErrStopped})
			return
		}
		done := make(chan upgradeReply, 1)
		go func() { done <- g.upgradeOnce() }()
		var next []chan upgradeReply
		var res upgradeReply
	wait:
		for {
			select {
			case r := <-g.reqs:
				next = append(next, r)
			case res = <-done:
				break wait
			}
		}
		replyAll(batch, res)
		if res.err == nil {
			// Asked for after the new generation was exec'd: not served by
			// it; the callers pass the request on.
			g.result = res.res
			replyAll(next, upgradeReply{res: res.res, err: ErrUpgraded})
			close(g.exitC)
			g.drainRequests()
			return
		}
		batch = next
	}
}

// drainRequests answers requests that arrive after the upgrade until Stop.
func (g *Generation) drainRequests() {
	for {
		select {
		case r := <-g.reqs:
			r <- upgradeReply{res: g.result, err: ErrUpgraded}
		case <-g.stopC:
			return
		}
	}
}

// waitParent waits for the previous generation to exit, queueing requests
// meanwhile. It reports false if Stop came first.
func (g *Generation) waitParent(batch *[]chan upgradeReply) bool {
	for {
		select {
		case <-g.waitDone:
			return true
		default:
		}
		if len(*batch) == 1 {
			g.logger().Info("upgrade waits for the previous generation to finish draining", "waiting", 1)
		}
		select {
		case <-g.waitDone:
			return true
		case r := <-g.reqs:
			*batch = append(*batch, r)
			g.logger().Info("upgrade request joins the one waiting for the previous generation", "waiting", len(*batch))
		case <-g.stopC:
			return false
		}
	}
}

func replyAll(batch []chan upgradeReply, r upgradeReply) {
	for _, c := range batch {
		c <- r
	}
}

// upgradeOnce runs one upgrade (parent.go) with the hooks around it.
func (g *Generation) upgradeOnce() upgradeReply {
	if h := g.opts.Hooks.Starting; h != nil {
		h()
	}
	started := time.Now()
	g.logger().Info("upgrade started", "generation", g.gen+1)
	res, err := g.exec()
	if err != nil {
		err = fmt.Errorf("handoff: upgrade to generation %d: %w", g.gen+1, err)
		g.logger().Error("upgrade failed; this generation keeps serving", "err", err)
		if h := g.opts.Hooks.Failed; h != nil {
			h(err)
		}
		return upgradeReply{err: err}
	}
	g.logger().Info("upgrade succeeded", "new_pid", res.PID, "new_generation", res.Generation, "took", time.Since(started).Round(time.Microsecond))
	if g.opts.PIDFile != "" && res.PID > 0 {
		// After the commit, before anyone hears of the success: the PID
		// file never names a generation that failed.
		if err := writeAtomic(g.opts.PIDFile, strconv.Itoa(res.PID)+"\n"); err != nil {
			g.logger().Error("cannot write the PID file", "file", g.opts.PIDFile, "err", err)
		}
	}
	if h := g.opts.Hooks.Succeeded; h != nil {
		h(res)
	}
	return upgradeReply{res: res}
}

// tableflipUpgrade calls tableflip's Upgrade. It is only called once the
// previous generation has exited (WaitForParent returned), but tableflip's
// loop learns of that exit separately, and may answer "parent hasn't
// exited" without starting anything: its watcher hands WaitForParent the
// result before it closes the channel the loop selects on (so the loop
// may not know yet), and once both are ready the loop's select may take
// our request first. That answer, known only by its text in tableflip
// v1.2.3, is asked again: at once (a fresh draw of that select) at first,
// then every millisecond (the watcher goroutine, preempted between its
// two steps, needs to run), for at most parentRaceBound.
func (g *Generation) tableflipUpgrade() error {
	start := time.Now()
	for i := 0; ; i++ {
		err := g.upg.Upgrade()
		if err != nil && strings.HasPrefix(err.Error(), tableflipStartFailed) {
			return fmt.Errorf("%w: %w", ErrNotStarted, err)
		}
		if err == nil || !strings.Contains(err.Error(), tableflipParentRace) || time.Since(start) > parentRaceBound {
			return err
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// parentRaceBound bounds tableflipUpgrade's retries.
const parentRaceBound = 2 * time.Second

// tableflipStartFailed begins tableflip v1.2.3's error when it cannot
// start the new process at all (the cause — exec format error, no such
// file, no descriptor for its pipes — only in its text).
const tableflipStartFailed = "can't start child: "

// tableflipTimedOut ends tableflip v1.2.3's error when the new process
// was killed at the upgrade timeout, not ready.
const tableflipTimedOut = " timed out"

// ErrNotStarted is wrapped by the error of an upgrade whose new process
// could not be started: the file at the executable's path missing, not
// executable or not a program, or no descriptor left for the pipes to
// it. Nothing ran; the running generation serves on.
var ErrNotStarted = errors.New("handoff: the new process could not be started")

// tableflipParentRace is tableflip v1.2.3's answer to an upgrade request
// its loop takes before it has seen the parent's exit.
const tableflipParentRace = "parent hasn't exited"
