package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
// and [ErrStopped] after Stop.
func (g *Generation) Upgrade(ctx context.Context) (Result, error) {
	g.mu.Lock()
	ready := g.ready
	g.mu.Unlock()
	if !ready {
		return Result{}, ErrNotReady
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
			g.log.Info("upgrade waits for the previous generation to finish draining")
		}
		select {
		case <-g.waitDone:
			return true
		case r := <-g.reqs:
			*batch = append(*batch, r)
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

// upgradeOnce runs one tableflip upgrade with the state file that lets the
// new generation report back.
func (g *Generation) upgradeOnce() upgradeReply {
	if h := g.opts.Hooks.Starting; h != nil {
		h()
	}
	started := time.Now()
	g.log.Info("upgrade started", "generation", g.gen+1)
	res, err := g.exec()
	if err != nil {
		err = fmt.Errorf("handoff: upgrade to generation %d: %w", g.gen+1, err)
		g.log.Error("upgrade failed; this generation keeps serving", "err", err)
		if h := g.opts.Hooks.Failed; h != nil {
			h(err)
		}
		return upgradeReply{err: err}
	}
	g.log.Info("upgrade succeeded", "new_pid", res.PID, "new_generation", res.Generation, "took", time.Since(started).Round(time.Microsecond))
	if h := g.opts.Hooks.Succeeded; h != nil {
		h(res)
	}
	return upgradeReply{res: res}
}

func (g *Generation) exec() (Result, error) {
	f, err := os.CreateTemp(g.opts.StateDir, ".handoff-*")
	if err != nil {
		return Result{}, fmt.Errorf("status file: %w", err)
	}
	status := f.Name()
	f.Close()
	defer os.Remove(status)

	g.mu.Lock()
	st := state{Generation: g.gen, Status: status, Systemd: append([]string(nil), g.systemd...), Stored: append([]string(nil), g.stored...)}
	g.mu.Unlock()
	raw, err := json.Marshal(st)
	if err != nil {
		return Result{}, err
	}
	// tableflip passes os.Environ() to the new process.
	os.Setenv(stateEnv, string(raw))
	upErr := g.upgrade()
	os.Unsetenv(stateEnv)

	report, _ := os.ReadFile(status)
	line := strings.TrimSpace(string(report))
	if upErr != nil {
		if reason, ok := strings.CutPrefix(line, "error "); ok {
			return Result{}, fmt.Errorf("%s (%w)", reason, upErr)
		}
		return Result{}, upErr
	}
	pidText, ok := strings.CutPrefix(line, "ok ")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || pid <= 0 {
		return Result{}, fmt.Errorf("new generation is ready but reported %q instead of its pid", line)
	}
	return Result{PID: pid, Generation: g.gen + 1}, nil
}

// upgrade calls tableflip's Upgrade. It is only called once the previous
// generation has exited (WaitForParent returned), but tableflip's own
// goroutine learns of that exit through a select that may serve our
// request first and answer "parent hasn't exited": retry that answer a
// bounded number of times.
func (g *Generation) upgrade() error {
	for i := 0; ; i++ {
		err := g.upg.Upgrade()
		if err == nil || !strings.Contains(err.Error(), "parent hasn't exited") || i == 100 {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}
