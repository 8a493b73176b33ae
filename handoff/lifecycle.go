//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff/control"
	"github.com/echod/echod/systemd"
)

// Server is what [Run] serves on a generation's listeners: *daemon.Server
// and *net/http.Server both are one. Serve is called once per listener,
// only after the generation is ready; Shutdown drains; Close is the hard
// stop after the drain timeout or a forced stop.
type Server interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

// Migrator is a Server whose live connections can move to the next
// generation on reload instead of draining: *daemon.Server is one (with a
// handler that is a daemon.Resumer).
type Migrator interface {
	Server
	// DetachN stops accepting and takes up to n connections (n <= 0:
	// every one) out of the server, at a safe point, with their state;
	// none once none is left. Connections not taken are served on.
	DetachN(ctx context.Context, n int) ([]daemon.DetachedConn, error)
	// Adopt serves a connection another generation detached.
	Adopt(c net.Conn, state []byte) error
}

// Stager is a Migrator that lists its live connections and takes named
// ones out: with it the hand-over is staged (a copy of every connection
// moves before the commit while it is served on, and each batch is taken
// out and resumed in the new generation after it), so a stream pauses
// only while its own batch moves, instead of for the whole hand-over.
// *daemon.Server is one.
type Stager interface {
	Migrator
	// Conns lists the live connections served at least minAge.
	Conns(minAge time.Duration) []net.Conn
	// DetachConns is DetachN for the connections of conns the server
	// still serves.
	DetachConns(ctx context.Context, conns []net.Conn) ([]daemon.DetachedConn, error)
}

// Config configures [Run].
type Config struct {
	// Options configure the generation. Run adds its own Hooks (the
	// systemd hand-over) and calls those given here after its own.
	Options
	// Listen are the configured addresses; Fallback is used when Listen
	// is empty and systemd passed no socket (see Generation.Listeners).
	Listen, Fallback []Spec
	// Control is the path of the control socket (package control):
	// reload (waits for the outcome), reload-status (the outcome of the
	// last reload that ended), status and stop requests with truthful
	// answers, for ExecReload= and ExecStop=. Empty: none.
	Control string
	// ControlIfFree says Control is a default nobody asked for: a first
	// generation that finds another process answering there (another
	// daemon started with the same default) runs without a control socket
	// and says so, instead of taking the path over. Its parent directory
	// is created (0700) if missing.
	ControlIfFree bool
	// DrainTimeout bounds the drain of a replaced or stopping generation;
	// then its remaining connections are closed. Zero means 30s.
	DrainTimeout time.Duration
	// Signals delivers the signals the program asked for with
	// signal.Notify (Run never calls it): SIGHUP reloads, SIGTERM and
	// SIGINT stop; one more SIGTERM or SIGINT during the drain forces
	// the stop. Nil: no signals.
	Signals <-chan os.Signal
	// Systemd is told READY, RELOADING, MAINPID of the new generation
	// (then BARRIER, before this one may exit), STATUS, STOPPING and
	// WATCHDOG. Nil or disabled: not under systemd.
	Systemd *systemd.Notifier
	// NewServer builds this generation's server once its listeners are
	// taken and before it is ready. An error fails the upgrade with that
	// reason (the previous generation keeps serving). Required.
	NewServer func(g *Generation, ls []*Listener) (Server, error)
	// Status, if set, adds to the status line (STATUS= and the control
	// socket's status), for example the open connections.
	Status func() string
	// Version names the build in the status line.
	Version string
	// Migrate hands every live connection to the new generation on
	// reload, when the server is a Migrator (in both generations): the
	// old generation exits as soon as they are handed over, instead of
	// draining them. Connections that cannot move drain as before.
	Migrate bool
	// HTTP are more endpoints, each served by its own net/http server
	// (metrics, for example). See [HTTPEndpoint].
	HTTP []HTTPEndpoint
}

// HTTPEndpoint is an address served over HTTP by [Run] beside the
// server's listeners. Its socket is taken like the control socket's
// (inherited from the previous generation, else bound; never kept in the
// fd store) and passed to the next, so a client is never refused during a
// reload: the same socket, one accept queue. A generation serves it from
// Ready on, and stops accepting on it as soon as a new generation
// committed or when it stops: keep-alives off, idle connections closed,
// the requests already read or arriving on an accepted connection
// answered (given 5 s at exit).
type HTTPEndpoint struct {
	// Name names the endpoint in the log ("http listener name=… addr=…").
	Name    string
	Spec    Spec
	Handler http.Handler
}

// ErrForced is returned by Run when a second stop request (SIGTERM,
// SIGINT or a control "stop") came during the drain: the connections still
// open were closed without waiting.
var ErrForced = errors.New("handoff: stop forced during the drain: open connections were closed")

// Run runs this process's generation of the daemon from start to exit:
// it takes the listeners, builds the server, becomes ready and only then
// serves; it handles reload and stop requests (signals, the control
// socket, ctx) and upgrades one at a time; once replaced or stopped it
// drains and returns. It returns nil after a clean exit, ErrForced after a
// forced stop, or the reason this generation could not start (reported to
// the previous generation, which keeps serving).
func Run(ctx context.Context, cfg Config) error {
	if cfg.NewServer == nil {
		return errors.New("handoff: Run: Config.NewServer is required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &runner{cfg: cfg, started: time.Now(), stopReq: make(chan struct{}, 1), handedOver: make(chan struct{})}
	opts := cfg.Options
	opts.Hooks = Hooks{Starting: r.upgradeStarting, Succeeded: r.upgradeSucceeded, Failed: r.upgradeFailed, Ready: cfg.Hooks.Ready, PreviousExited: cfg.Hooks.PreviousExited}
	g, err := New(opts)
	if err != nil {
		return err
	}
	r.g = g
	g.onCommit = r.stopAcceptingHTTP // the new generation serves them now
	r.log = cfg.Logger.With("gen", g.Number(), "pid", os.Getpid())
	g.SetLogger(r.log)
	r.log.Info("starting", "version", cfg.Version, "inherited", g.HasParent(), "protocol", g.Protocol())
	if err := r.start(); err != nil {
		g.Fail(err)
		g.Stop()
		return err
	}
	return r.loop(ctx)
}

// phase is where a running generation stands.
type phase int

const (
	phaseServing  phase = iota
	phaseStopping       // asked to stop: draining
	phaseReplaced       // a new generation serves: draining
)

func (p phase) String() string {
	return [...]string{"serving", "stopping", "replaced"}[p]
}

// runner is one generation run by Run. Its loop goroutine owns the phase;
// the fields under mu are read by control requests.
type runner struct {
	cfg Config
	g   *Generation
	log *slog.Logger
	srv Server
	ctl *control.Server
	ls  []*Listener

	webMu      sync.Mutex     // guards web, webStopped
	web        []*webEndpoint // the HTTP endpoints served, once ready
	webStopped bool

	serving   sync.WaitGroup // Serve goroutines
	acceptMu  sync.Mutex     // guards dups, paused, closing
	dups      []net.Listener // the duplicates being served
	paused    bool
	closing   bool
	accepting sync.WaitGroup // Serve goroutines on dups
	upgrades  sync.WaitGroup // SIGHUP upgrades
	stopReq   chan struct{}  // a control "stop"

	handedOver chan struct{} // closed once replaced or stopping: LastHandOver is final
	snaps      *snapshots    // the copies of the connections kept against a crash; nil: none
	snapHold   atomic.Bool   // a hand-over is under way: no copy is renewed

	started time.Time // when this process started serving its generation

	mu        sync.Mutex
	phase     phase
	lastErr   string
	lastErrAt time.Time
	failed    int
	succeeded int
}

// start takes the listeners, builds the server, becomes ready, and only
// then serves: a generation that fails before ready has taken no
// connection from the shared accept queues.
func (r *runner) start() error {
	ls, err := r.g.Listeners(r.cfg.Listen, r.cfg.Fallback)
	if err != nil {
		return err
	}
	r.ls = ls
	for _, l := range ls {
		r.log.Info("listener", "name", l.Name, "addr", l.Addr().String(), "origin", l.Origin.String(), "inherited", l.Inherited, "stored", l.Stored, "restored", l.Restored)
	}
	var ctlLn net.Listener
	if r.cfg.Control != "" && r.cfg.ControlIfFree && !r.g.HasParent() {
		if err := os.MkdirAll(filepath.Dir(r.cfg.Control), 0o700); err != nil {
			r.log.Warn("no control socket: cannot make its directory", "path", r.cfg.Control, "err", err)
			r.cfg.Control = ""
		} else if c, err := net.DialTimeout("unix", r.cfg.Control, time.Second); err == nil {
			c.Close()
			r.log.Warn("no control socket: another process serves the default path; give -control to have one", "path", r.cfg.Control)
			r.cfg.Control = ""
		}
	}
	if r.cfg.Control != "" {
		cl, err := r.g.ListenFunc(Spec{Network: "unix", Address: r.cfg.Control}, func(s Spec) (net.Listener, error) {
			return control.Listen(s.Address)
		})
		if err != nil {
			closeAll(ls)
			return fmt.Errorf("control socket: %w", err)
		}
		ctlLn = cl
	}
	webLns, err := r.listenHTTP()
	if err != nil {
		closeAll(ls)
		if ctlLn != nil {
			ctlLn.Close()
		}
		return err
	}
	srv, err := r.cfg.NewServer(r.g, ls)
	if err != nil {
		closeAll(ls)
		closeAll(webLns)
		if ctlLn != nil {
			ctlLn.Close()
		}
		return err
	}
	r.srv = srv
	if m, ok := srv.(Migrator); ok && r.cfg.Migrate {
		room := fdRoom
		if rs, ok := srv.(interface{ Room() int }); ok {
			// The server's own bound (daemon: MaxConns) too: a connection
			// it would refuse after the commit could not go back.
			room = func() int { return min(fdRoom(), rs.Room()) }
		}
		r.g.AcceptConns(m.Adopt, room)
		mig := Migration{
			// No copy against a crash is renewed during a hand-over: the
			// copy and the hand-over's batches would count twice against
			// the descriptors this user may have in flight.
			Pause:  func() { r.snapHold.Store(true); r.pause() },
			Resume: func() { r.serveAll(); r.snapHold.Store(false) },
			Detach: m.DetachN,
			Adopt:  m.Adopt,
		}
		if st, ok := srv.(Stager); ok {
			mig.Live = func() []net.Conn { return st.Conns(0) }
			mig.DetachConns = st.DetachConns
		}
		r.g.MigrateWith(mig)
	}
	if err := r.g.Ready(); err != nil {
		closeAll(ls)
		closeAll(webLns)
		if ctlLn != nil {
			ctlLn.Close()
		}
		return err
	}
	r.serveAll()
	r.serveHTTP(webLns)
	r.startSnapshots()
	// Control requests only once ready: before, the previous generation
	// (which shares the control socket) answers them.
	if ctlLn != nil {
		r.ctl = control.NewServer(control.HandlerFunc(r.control), r.log)
		r.serving.Add(1)
		ctlLn := ctlLn
		go func() {
			defer r.serving.Done()
			if err := r.ctl.Serve(ctlLn); err != nil && r.currentPhase() == phaseServing {
				r.log.Error("control socket failed", "err", err)
			}
		}()
	}
	r.log.Info("ready", "listeners", len(ls))
	if r.g.HasParent() {
		// The previous generation tells systemd MAINPID= and READY=1 for
		// this one after the commit. A READY=1 from here could come after
		// that and end the next reload before it started under
		// Type=notify-reload (systemd 254 took it as the reload's end:
		// TestSystemd254NotifyReload saw a reload succeed with the same
		// MainPID).
		r.notify(systemd.Status(r.status()))
	} else {
		r.notify(systemd.Ready, systemd.Status(r.status()))
	}
	return nil
}

// serveAll serves every listener, each through a duplicate of its socket,
// so that accepting can pause (the duplicates closed, the sockets open)
// and resume.
func (r *runner) serveAll() {
	r.acceptMu.Lock()
	defer r.acceptMu.Unlock()
	if r.closing {
		return
	}
	for _, l := range r.ls {
		ln, err := dupListener(l.Listener)
		if err != nil {
			r.log.Error("cannot serve a listener", "name", l.Name, "err", err)
			continue
		}
		r.dups = append(r.dups, ln)
		r.accepting.Add(1)
		r.serving.Add(1)
		go func() {
			defer r.serving.Done()
			defer r.accepting.Done()
			if err := r.srv.Serve(ln); err != nil && r.currentPhase() == phaseServing && !r.isPaused() {
				r.log.Error("listener failed", "name", l.Name, "err", err)
			}
		}()
	}
	r.paused = false
}

// pause stops accepting: the duplicates are closed and their accept loops
// have returned; the sockets stay open (the backlog holds new clients).
func (r *runner) pause() {
	r.acceptMu.Lock()
	r.paused = true
	dups := r.dups
	r.dups = nil
	r.acceptMu.Unlock()
	for _, ln := range dups {
		ln.Close()
	}
	r.accepting.Wait()
}

func (r *runner) isPaused() bool {
	r.acceptMu.Lock()
	defer r.acceptMu.Unlock()
	return r.paused
}

// closeListeners stops accepting for good: duplicates and originals.
func (r *runner) closeListeners() {
	r.pause()
	r.acceptMu.Lock()
	r.closing = true
	r.acceptMu.Unlock()
	for _, l := range r.ls {
		l.Close()
	}
}

// dupListener returns a listener on a duplicate of ln's socket.
func dupListener(ln net.Listener) (net.Listener, error) {
	f, err := fileOf(ln)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

func closeAll(ls []*Listener) {
	for _, l := range ls {
		l.Close()
	}
}

func (r *runner) currentPhase() phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase
}

// loop handles requests until the generation is replaced or stopped, then
// drains.
func (r *runner) loop(ctx context.Context) error {
	var wdC <-chan time.Time
	if wd, err := systemd.WatchdogInterval(r.g.HasParent()); err != nil {
		r.log.Warn("watchdog disabled", "err", err)
	} else if wd > 0 && r.cfg.Systemd.Enabled() {
		t := time.NewTicker(wd)
		defer t.Stop()
		wdC = t.C
		r.notify(systemd.Watchdog)
	}
	statusT := time.NewTicker(5 * time.Second)
	defer statusT.Stop()

	next := phaseServing
	adopted := r.g.Adopted()
wait:
	for {
		select {
		case <-adopted:
			adopted = nil
			if res := r.g.AdoptedResult(); res.Moved > 0 || res.Err != nil {
				r.log.Info("adopted the previous generation's connections", "moved", res.Moved, "err", res.Err)
				r.notify(systemd.Status(r.status()))
			}
		case sig := <-r.cfg.Signals:
			if sig == syscall.SIGHUP {
				r.log.Info("reload requested", "signal", "SIGHUP")
				r.upgrades.Add(1)
				go func() {
					defer r.upgrades.Done()
					r.reloadSignal()
				}()
				continue
			}
			r.log.Info("stopping", "signal", sig.String())
			next = phaseStopping
			break wait
		case <-r.stopReq:
			r.log.Info("stopping", "request", "control socket")
			next = phaseStopping
			break wait
		case <-ctx.Done():
			r.log.Info("stopping", "reason", ctx.Err())
			next = phaseStopping
			break wait
		case <-r.g.Exit():
			next = phaseReplaced
			break wait
		case <-wdC:
			r.notify(systemd.Watchdog)
		case <-statusT.C:
			r.notify(systemd.Status(r.status()))
		}
	}
	r.mu.Lock()
	r.phase = next
	r.mu.Unlock()
	if r.ctl != nil {
		r.ctl.StopAccepting()
	}
	r.stopAcceptingHTTP()
	if next == phaseStopping {
		r.notify(systemd.Stopping, systemd.Status(r.status()))
		// Before draining: cancel an upgrade in flight (its process is
		// killed) and answer queued requests, so a stop is a stop.
		r.g.Stop()
		if succ := r.g.Successor(); succ.PID > 0 {
			// The upgrade completed just as the stop came: stop the new
			// generation too.
			r.log.Info("stopping the new generation too", "pid", succ.PID)
			if err := syscall.Kill(succ.PID, syscall.SIGTERM); err != nil {
				r.log.Warn("cannot stop the new generation", "pid", succ.PID, "err", err)
			}
		}
	}
	// The copies kept against a crash go first: a stop stores the
	// connections themselves next (the two would count twice against the
	// descriptors this user may have in flight, RLIMIT_NOFILE), and after
	// an upgrade the next generation keeps its own.
	r.dropSnapshot()
	if next == phaseStopping {
		r.storeConns()
	}
	close(r.handedOver)
	forced := r.drain(next)
	r.upgrades.Wait()
	if next == phaseStopping {
		r.waitParent()
	}
	r.g.Stop()
	if r.ctl != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.ctl.Shutdown(sctx); err != nil {
			r.ctl.Close()
		}
		cancel()
	}
	r.shutdownHTTP()
	r.serving.Wait()
	if next == phaseStopping {
		r.removePIDFile()
	}
	r.log.Info("exiting", "replaced", next == phaseReplaced, "forced", forced)
	if forced {
		return ErrForced
	}
	return nil
}

// storeConns, on a stop with the fd store, leaves the live connections
// there for the next process of the service (connstore.go) instead of
// draining them: what it cannot store is served again and drains.
func (r *runner) storeConns() {
	m, ok := r.srv.(Migrator)
	if !ok || !r.cfg.Migrate || !r.g.opts.FDStore.Enabled() {
		return
	}
	r.pause()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	conns, err := m.DetachN(ctx, 0)
	cancel()
	if err != nil {
		r.log.Warn("detaching connections to store them", "err", err)
	}
	if len(conns) == 0 {
		r.g.recordConnQueues(nil) // nothing to expect back
		return
	}
	_, kept, err := r.g.StoreConns(conns)
	if err != nil {
		r.log.Error("connections not stored: they drain", "err", err, "connections", len(kept))
	}
	for _, d := range kept {
		if err := m.Adopt(d.Conn, d.State); err != nil {
			d.Conn.Close()
		}
	}
}

// drain stops accepting and waits for the open connections, up to the
// drain timeout, then closes the rest. Requests go on being handled
// meanwhile: a SIGHUP goes to the generation that serves now; one more
// stop request forces the stop. It reports whether the stop was forced.
func (r *runner) drain(p phase) bool {
	var open string
	if r.cfg.Status != nil {
		open = r.cfg.Status()
	}
	r.log.Info("draining", "timeout", r.cfg.DrainTimeout, "why", p.String(), "connections", open)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DrainTimeout)
	defer cancel()
	// Every listener of this process is closed now (the control socket's
	// before the drain), but for tableflip's copies, closed before its
	// Exit channel is: after a successful upgrade, or a Stop.
	r.closeListeners()
	released := r.g.upg.Exit()
	done := make(chan error, 1)
	go func() { done <- r.srv.Shutdown(ctx) }()
	forced := false
	stops := 0
	if p == phaseStopping {
		stops = 1 // the request that started this drain
	}
	force := func(why string) {
		stops++
		if stops < 2 {
			r.log.Info("stop requested while draining: the drain goes on; ask again to force", "request", why)
			return
		}
		if !forced {
			r.log.Warn("stop forced: closing the open connections", "request", why)
			forced = true
			cancel()
		}
	}
	for {
		select {
		case <-released:
			r.log.Info("stopped accepting: this process holds no listening socket any more")
			released = nil
		case err := <-done:
			if err != nil {
				var left string
				if r.cfg.Status != nil {
					left = r.cfg.Status()
				}
				r.srv.Close()
				msg := "drain timeout: closed the connections still open"
				if forced {
					msg = "forced stop: closed the connections still open"
				}
				r.log.Warn(msg, "closed", left, "took", time.Since(start).Round(time.Millisecond))
			} else {
				r.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
			}
			return forced
		case sig := <-r.cfg.Signals:
			if sig != syscall.SIGHUP {
				force(sig.String())
				continue
			}
			if succ := r.g.Successor(); succ.PID > 0 {
				r.passOn(succ, "SIGHUP while draining: passing it on to the generation that serves")
			} else {
				r.log.Warn("SIGHUP ignored: this generation is stopping")
			}
		case <-r.stopReq:
			force("control socket")
		}
	}
}

// fdRoom is how many more connections this process can take over: its
// fd headroom under the soft RLIMIT_NOFILE, less a margin: a batch's
// received fds (up to maxFDsPerMessage) arrive at once, and the process
// opens a few files of its own.
func fdRoom() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	return int(rl.Cur) - len(names) - (maxFDsPerMessage + fdRoomSpare)
}

// fdRoomSpare is the part of fdRoom's margin left for the process's own
// files.
const fdRoomSpare = 16

// waitParent waits, on final stop, for a previous generation that is still
// draining, so the main process exits last and a synchronous stop returns
// when every generation is gone; bounded by the drain timeout (the
// previous generation's own bound) plus a margin.
func (r *runner) waitParent() {
	if !r.g.HasParent() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DrainTimeout+5*time.Second)
	defer cancel()
	if err := r.g.WaitForParent(ctx); err != nil {
		r.log.Warn("previous generation still running at exit", "err", err)
	}
}

// reloadSignal runs a SIGHUP's upgrade. One that reached this generation
// after it was replaced (or while its successor was starting) is passed on
// to the new generation, so no reload is lost.
func (r *runner) reloadSignal() {
	res, err := r.g.Upgrade(context.Background())
	if errors.Is(err, ErrUpgraded) && res.PID > 0 {
		r.passOn(res, "SIGHUP came after this generation was replaced: passing it on")
	}
	// Every "reload requested" has its end: the request was carried out
	// (alone or with others that came meanwhile), failed, or passed on.
	if err != nil {
		r.log.Info("reload request ended", "signal", "SIGHUP", "err", err)
	} else {
		r.log.Info("reload request ended", "signal", "SIGHUP", "new_generation", res.Generation, "new_pid", res.PID)
	}
}

// passOn sends the successor a SIGHUP that reached this generation too
// late, logging msg first.
func (r *runner) passOn(res Result, msg string) {
	r.log.Info(msg, "pid", res.PID)
	if err := syscall.Kill(res.PID, syscall.SIGHUP); err != nil {
		r.log.Warn("cannot pass the SIGHUP on", "pid", res.PID, "err", err)
	}
}

// control answers a control-socket request.
func (r *runner) control(ctx context.Context, cmd string) control.Reply {
	switch cmd {
	case "reload":
		res, err := r.g.Upgrade(ctx)
		switch {
		case errors.Is(err, ErrUpgraded):
			return control.Reply{Kind: control.Retry, Text: fmt.Sprintf("generation %d (pid %d) serves now", res.Generation, res.PID)}
		case errors.Is(err, ErrNotReady):
			return control.Reply{Kind: control.Retry, Text: "this generation is not ready yet"}
		case errors.Is(err, ErrStopped):
			return control.Reply{Kind: control.Error, Text: "stopping: no reload"}
		case err != nil:
			return control.Reply{Kind: control.Error, Text: err.Error()}
		}
		text := fmt.Sprintf("pid=%d generation=%d", res.PID, res.Generation)
		if r.cfg.Migrate {
			// Truthful about the connections too: answer once they moved.
			select {
			case <-r.handedOver:
				h := r.g.LastHandOver()
				text += fmt.Sprintf(" moved=%d draining=%d handover=%s", h.Moved, h.Kept, h.Took.Round(time.Microsecond))
			case <-ctx.Done():
			}
		}
		return control.Reply{Kind: control.OK, Text: text}
	case "status":
		return control.Reply{Kind: control.OK, Text: r.status()}
	case "status-json":
		js, err := r.reportJSON()
		if err != nil {
			return control.Reply{Kind: control.Error, Text: err.Error()}
		}
		return control.Reply{Kind: control.OK, Text: js}
	case "reload-status":
		// The outcome of the last reload that ended (after a SIGHUP, say);
		// it does not wait for one in progress. (Not for ExecReload= of
		// a Type=notify-reload unit: systemd 254 starts ExecReload= at
		// the same moment as it sends the signal, so this could answer
		// before the signal's upgrade ended; the shipped units run
		// "reload" there.) The generation answering is the new one after
		// a success, the one that stayed after a failure.
		r.mu.Lock()
		lastErr := r.lastErr
		r.mu.Unlock()
		if lastErr != "" {
			return control.Reply{Kind: control.Error, Text: "last reload failed: " + lastErr}
		}
		return control.Reply{Kind: control.OK, Text: fmt.Sprintf("pid=%d generation=%d", os.Getpid(), r.g.Number())}
	case "stop":
		select {
		case r.stopReq <- struct{}{}:
		default: // already asked
		}
		return control.Reply{Kind: control.OK, Text: "pid=" + strconv.Itoa(os.Getpid())}
	}
	return control.Reply{Kind: control.Error, Text: fmt.Sprintf("unknown command %q (want reload, reload-status, status, status-json or stop)", cmd)}
}

// status is the one-line summary for STATUS= and the status request.
func (r *runner) status() string {
	r.mu.Lock()
	p, lastErr, failed := r.phase, r.lastErr, r.failed
	r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d pid %d version %s: %s, %d listeners", r.g.Number(), os.Getpid(), r.cfg.Version, p, len(r.ls))
	if r.cfg.Status != nil {
		b.WriteString(", " + r.cfg.Status())
	}
	select {
	case <-r.g.Adopted():
		if a := r.g.AdoptedResult(); a.Moved > 0 || a.Lost > 0 {
			fmt.Fprintf(&b, "; adopted %d connections from generation %d", a.Moved, r.g.Number()-1)
		}
	default:
	}
	if p == phaseReplaced {
		if h := r.g.LastHandOver(); h.Moved+h.Kept+h.Lost > 0 {
			fmt.Fprintf(&b, "; handed %d connections to generation %d in %s, %d draining here", h.Moved, r.g.Number()+1, h.Took.Round(time.Millisecond), h.Kept)
		}
	}
	if failed > 0 {
		fmt.Fprintf(&b, "; %d failed reloads", failed)
	}
	if lastErr != "" {
		b.WriteString("; last reload failed: " + lastErr)
	}
	return b.String()
}

func (r *runner) upgradeStarting() {
	// MONOTONIC_USEC= with RELOADING=1: under Type=notify-reload (systemd
	// 253 and later) the reload counts as started only with it.
	lines := []string{systemd.Reloading, systemd.Status(fmt.Sprintf("reloading: starting generation %d", r.g.Number()+1))}
	if mu := systemd.MonotonicUsec(); mu != "" {
		lines = append(lines, mu)
	}
	r.notify(lines...)
	if h := r.cfg.Hooks.Starting; h != nil {
		h()
	}
}

// upgradeSucceeded hands the main pid to the new generation and waits until
// systemd has taken it: only then may this generation exit.
func (r *runner) upgradeSucceeded(res Result) {
	r.mu.Lock()
	r.lastErr = ""
	r.succeeded++
	r.mu.Unlock()
	if r.cfg.Systemd.Enabled() && res.PID > 0 {
		r.notify(systemd.MainPID(res.PID), systemd.Ready)
		if _, err := r.cfg.Systemd.Barrier(5 * time.Second); err != nil {
			r.log.Warn("systemd did not confirm the new main pid", "new_pid", res.PID, "err", err)
		}
	}
	if h := r.cfg.Hooks.Succeeded; h != nil {
		h(res)
	}
}

func (r *runner) upgradeFailed(err error) {
	r.mu.Lock()
	r.lastErr = oneLine(err.Error())
	r.lastErrAt = time.Now()
	r.failed++
	r.mu.Unlock()
	r.notify(systemd.Ready, systemd.Status(r.status()))
	if h := r.cfg.Hooks.Failed; h != nil {
		h(err)
	}
}

func (r *runner) notify(lines ...string) {
	if _, err := r.cfg.Systemd.Notify(lines...); err != nil {
		r.log.Warn("systemd notify failed", "err", err)
	}
}

// removePIDFile removes the PID file on final stop if it still names this
// process.
func (r *runner) removePIDFile() {
	if r.cfg.PIDFile == "" {
		return
	}
	b, err := os.ReadFile(r.cfg.PIDFile)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(r.cfg.PIDFile)
	}
}
