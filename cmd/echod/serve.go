package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
	"github.com/echod/echod/systemd"
)

// serve runs one generation of echod until it is replaced or stopped.
func serve(cfg config, stderr io.Writer) error {
	base := newLogger(stderr, cfg.LogLevel)
	notifier := systemd.NewNotifier()

	// Signals first: a SIGHUP that arrives while this generation starts is
	// kept and served once it is ready.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	e := &echod{cfg: cfg, notifier: notifier, stopReq: make(chan struct{}, 1)}
	var store *systemd.Notifier
	if cfg.FDStore {
		store = notifier
	}
	g, err := handoff.New(handoff.Options{
		FDStore:        store,
		Notifier:       notifier,
		UpgradeTimeout: cfg.UpgradeTimeout.Duration,
		PIDFile:        cfg.PIDFile,
		Logger:         base,
		Hooks: handoff.Hooks{
			Starting:  e.upgradeStarting,
			Succeeded: e.upgradeSucceeded,
			Failed:    e.upgradeFailed,
		},
	})
	if err != nil {
		return err
	}
	e.gen = g
	e.log = base.With("gen", g.Number(), "pid", os.Getpid())
	g.SetLogger(e.log)
	e.log.Info("starting", "version", version, "inherited", g.HasParent())
	if cfg.FDStore && !notifier.Enabled() {
		e.log.Warn("fdstore: not running under systemd (NOTIFY_SOCKET unset): listeners are not stored")
	}

	if err := e.start(); err != nil {
		g.Fail(err)
		g.Stop()
		return err
	}
	return e.loop(sigs)
}

// echod is one running generation.
type echod struct {
	cfg      config
	gen      *handoff.Generation
	log      *slog.Logger
	notifier *systemd.Notifier
	srv      *daemon.Server
	ctl      *controlServer
	serving  sync.WaitGroup
	nls      int

	stopReq chan struct{} // a control-socket "stop"

	mu       sync.Mutex
	draining bool
	lastErr  string
}

// start takes the listeners, starts serving and tells the previous
// generation and systemd that this one is ready.
func (e *echod) start() error {
	var fallback []handoff.Spec
	if s, err := handoff.ParseSpec(defaultListen); err == nil {
		fallback = append(fallback, s)
	}
	ls, err := e.gen.Listeners(e.cfg.specs, fallback)
	if err != nil {
		return err
	}
	for _, l := range ls {
		e.log.Info("listener", "name", l.Name, "addr", l.Addr().String(), "origin", l.Origin.String(), "inherited", l.Inherited, "stored", l.Stored, "restored", l.Restored)
	}
	if e.cfg.Control != "" {
		cl, err := e.gen.Listen(handoff.Spec{Network: "unix", Address: e.cfg.Control})
		if err != nil {
			closeListeners(ls)
			return fmt.Errorf("control socket: %w", err)
		}
		if !cl.Inherited {
			if err := os.Chmod(e.cfg.Control, 0o600); err != nil {
				cl.Close()
				closeListeners(ls)
				return fmt.Errorf("control socket: %w", err)
			}
		}
		e.ctl = newControlServer(cl, e.log, e.control)
	}
	e.srv = daemon.New(daemon.Config{
		IdleTimeout: e.cfg.IdleTimeout.Duration,
		MaxConns:    e.cfg.MaxConns,
		Logger:      e.log,
	})
	e.nls = len(ls)
	for _, l := range ls {
		e.serving.Add(1)
		go func() {
			defer e.serving.Done()
			if err := e.srv.Serve(l.Listener); err != nil && !errors.Is(err, daemon.ErrServerClosed) {
				e.log.Error("listener failed", "name", l.Name, "err", err)
			}
		}()
	}
	if err := e.gen.Ready(); err != nil {
		e.srv.Close()
		e.serving.Wait()
		if e.ctl != nil {
			e.ctl.ln.Close()
		}
		return err
	}
	// Control requests only once ready: before, the previous generation
	// (which shares the control socket) is the one to answer them.
	if e.ctl != nil {
		e.ctl.start()
	}
	e.log.Info("ready", "listeners", len(ls))
	e.notify(systemd.Ready, systemd.Status(e.status()))
	return nil
}

func closeListeners(ls []*handoff.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// loop handles signals until the generation is replaced or stopped, then
// drains.
func (e *echod) loop(sigs <-chan os.Signal) error {
	watchdog, err := systemd.WatchdogInterval(e.gen.HasParent())
	if err != nil {
		e.log.Warn("watchdog disabled", "err", err)
	}
	var wdC <-chan time.Time
	if watchdog > 0 {
		t := time.NewTicker(watchdog)
		defer t.Stop()
		wdC = t.C
		e.notify(systemd.Watchdog)
	}
	status := time.NewTicker(5 * time.Second)
	defer status.Stop()

	var upgrades sync.WaitGroup
	defer upgrades.Wait()
	replaced := false
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				upgrades.Add(1)
				go func() {
					defer upgrades.Done()
					e.reloadSignal()
				}()
				continue
			}
			e.log.Info("stopping", "signal", sig.String())
			e.notify(systemd.Stopping, systemd.Status("stopping: draining "+strconv.Itoa(e.srv.Stats().Active)+" connections"))
			break wait
		case <-e.stopReq:
			e.log.Info("stopping", "request", "control socket")
			e.notify(systemd.Stopping, systemd.Status("stopping: draining "+strconv.Itoa(e.srv.Stats().Active)+" connections"))
			break wait
		case <-e.gen.Exit():
			replaced = true
			break wait
		case <-wdC:
			e.notify(systemd.Watchdog)
		case <-status.C:
			e.notify(systemd.Status(e.status()))
		}
	}
	e.mu.Lock()
	e.draining = true
	e.mu.Unlock()
	if e.ctl != nil {
		e.ctl.stopAccepting()
	}
	if !replaced {
		// Before draining: cancel an upgrade in flight (its new process is
		// killed) and answer queued requests, so a stop is a stop.
		e.gen.Stop()
		if succ := e.gen.Successor(); succ.PID > 0 {
			// The upgrade completed just as the stop came: stop the new
			// generation too.
			e.log.Info("stopping the new generation too", "pid", succ.PID)
			if err := syscall.Kill(succ.PID, syscall.SIGTERM); err != nil {
				e.log.Warn("cannot stop the new generation", "pid", succ.PID, "err", err)
			}
		}
	}
	e.drain()
	if !replaced {
		e.waitParent()
	}
	e.gen.Stop()
	if e.ctl != nil {
		e.ctl.close(5 * time.Second)
	}
	if !replaced {
		e.removePIDFile()
	}
	e.log.Info("exiting", "replaced", replaced)
	return nil
}

// drain stops accepting and waits for open connections, up to the drain
// timeout; then it closes what is left.
func (e *echod) drain() {
	active := e.srv.Stats().Active
	e.log.Info("draining", "connections", active, "timeout", e.cfg.DrainTimeout.Duration)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout.Duration)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	closed := 0
	if err != nil {
		closed = e.srv.Close()
	}
	e.serving.Wait()
	if closed > 0 {
		e.log.Warn("drain timeout: closed connections still open", "closed", closed, "took", time.Since(start).Round(time.Millisecond))
	} else {
		e.log.Info("drained", "connections", active, "took", time.Since(start).Round(time.Millisecond))
	}
}

// waitParent waits, on final stop, for a previous generation that is still
// draining, so the main process exits last and 'echod stop' returns when
// every generation is gone. It is bounded by the drain timeout (the
// previous generation's own drain has the same bound) plus a margin.
func (e *echod) waitParent() {
	if !e.gen.HasParent() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout.Duration+5*time.Second)
	defer cancel()
	if err := e.gen.WaitForParent(ctx); err != nil {
		e.log.Warn("previous generation still running at exit", "err", err)
	}
}

// reload runs one upgrade request and returns the control answer. A
// request this generation can no longer serve (replaced, or not ready yet)
// is answered "retry": the client asks again and reaches the serving one.
func (e *echod) reload(ctx context.Context) string {
	res, err := e.gen.Upgrade(ctx)
	switch {
	case errors.Is(err, handoff.ErrUpgraded):
		return fmt.Sprintf("retry generation %d (pid %d) serves now", res.Generation, res.PID)
	case errors.Is(err, handoff.ErrNotReady):
		return "retry this generation is not ready yet"
	case err != nil:
		return "error " + err.Error()
	}
	return fmt.Sprintf("ok pid=%d generation=%d", res.PID, res.Generation)
}

// reloadSignal runs a SIGHUP's upgrade. One that reached this generation
// after it was replaced (or while its successor was starting) is passed on
// to the new generation, so no reload is lost.
func (e *echod) reloadSignal() {
	res, err := e.gen.Upgrade(context.Background())
	if errors.Is(err, handoff.ErrUpgraded) && res.PID > 0 {
		e.log.Info("SIGHUP came after this generation was replaced: passing it on", "pid", res.PID)
		if err := syscall.Kill(res.PID, syscall.SIGHUP); err != nil {
			e.log.Warn("cannot pass the SIGHUP on", "pid", res.PID, "err", err)
		}
	}
}

// control answers a control-socket request.
func (e *echod) control(ctx context.Context, cmd string) string {
	switch cmd {
	case "reload":
		return e.reload(ctx)
	case "status":
		return "ok " + e.status()
	case "stop":
		select {
		case e.stopReq <- struct{}{}:
		default: // already asked
		}
		return fmt.Sprintf("ok pid=%d", os.Getpid())
	default:
		return fmt.Sprintf("error unknown command %q (want reload, status or stop)", cmd)
	}
}

// status is a one-line human summary for STATUS= and 'echod status'.
func (e *echod) status() string {
	st := e.srv.Stats()
	e.mu.Lock()
	draining, lastErr := e.draining, e.lastErr
	e.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d pid %d version %s: %d listeners, %d connections", e.gen.Number(), os.Getpid(), version, e.nls, st.Active)
	if draining {
		b.WriteString(", draining")
	}
	if lastErr != "" {
		b.WriteString("; last reload failed: " + lastErr)
	}
	return b.String()
}

func (e *echod) upgradeStarting() {
	e.notify(systemd.Reloading, systemd.Status(fmt.Sprintf("reloading: starting generation %d", e.gen.Number()+1)))
}

// upgradeSucceeded hands the main pid to the new generation and waits until
// systemd has taken it: only then may this generation exit.
func (e *echod) upgradeSucceeded(res handoff.Result) {
	e.mu.Lock()
	e.lastErr = ""
	e.mu.Unlock()
	if !e.notifier.Enabled() {
		return
	}
	e.notify(systemd.MainPID(res.PID), systemd.Ready)
	if _, err := e.notifier.Barrier(5 * time.Second); err != nil {
		e.log.Warn("systemd did not confirm the new main pid", "new_pid", res.PID, "err", err)
	}
}

func (e *echod) upgradeFailed(err error) {
	e.mu.Lock()
	e.lastErr = err.Error()
	e.mu.Unlock()
	e.notify(systemd.Ready, systemd.Status(e.status()))
}

func (e *echod) notify(lines ...string) {
	if _, err := e.notifier.Notify(lines...); err != nil {
		e.log.Warn("systemd notify failed", "err", err)
	}
}

// removePIDFile removes the pid file on final stop if it still names this
// process.
func (e *echod) removePIDFile() {
	if e.cfg.PIDFile == "" {
		return
	}
	b, err := os.ReadFile(e.cfg.PIDFile)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(e.cfg.PIDFile)
	}
}
