//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/echod/echod/systemd"
)

// Sentinel errors.
var (
	// ErrStopped: Stop was called.
	ErrStopped = errors.New("handoff: stopped")
	// ErrUpgraded: this generation has been replaced; the request belongs
	// to the new one, whose pid comes with the error (see Upgrade).
	ErrUpgraded = errors.New("handoff: already upgraded; the new generation serves")
	// ErrNotReady: Ready has not been called yet; ask again (the previous
	// generation may still be the one serving).
	ErrNotReady = errors.New("handoff: not ready yet")
)

// Options configure a [Generation].
type Options struct {
	// UpgradeTimeout bounds how long a new generation may take to become
	// ready before it is killed and the upgrade fails. Zero means 10s.
	UpgradeTimeout time.Duration
	// PIDFile, if set, always names the serving generation: the first
	// writes its pid at Ready, and each successful upgrade rewrites it
	// with the new generation's pid (written by the old one, after the
	// commit, so it never names a process that failed). Written
	// atomically.
	PIDFile string
	// StateDir holds the record of the listeners kept in systemd's fd
	// store (see Options.FDStore). Empty means $RUNTIME_DIRECTORY; with
	// neither, no record is kept.
	StateDir string
	// Logger receives one line per event that matters. Nil discards.
	Logger *slog.Logger
	// Hooks are called by the goroutine that runs upgrades, in order.
	Hooks Hooks
	// FDStore, when enabled, keeps every listener this daemon binds in
	// systemd's file descriptor store (FileDescriptorStoreMax= in the
	// unit), so that the socket outlives the process: across systemctl
	// restart, a crash or an OOM kill, clients wait in the backlog
	// instead of being refused. See [Generation.Listeners].
	FDStore *systemd.Notifier
	// Notifier is used to remove listeners from the fd store that a
	// process with FDStore enabled put there, when they are no longer
	// wanted (also when FDStore is now off). Nil: nothing is removed.
	Notifier *systemd.Notifier
	// Carry, if set, is called by each upgrade after Hooks.Starting; what
	// it returns (at most MaxCarry bytes) goes to the new generation with
	// the offer, where [Generation.Carried] returns it: state the program
	// keeps across generations, such as counters. More than MaxCarry is
	// not passed on (and logged); the upgrade goes on.
	Carry func() []byte
}

// MaxCarry bounds what Options.Carry may pass to the next generation.
const MaxCarry = 16 << 10

// Hooks let the program act at each step of an upgrade, for example to
// tell systemd. Each may be nil. Starting, Succeeded and Failed run on the
// upgrade goroutine, so an upgrade does not complete before they return.
type Hooks struct {
	// Starting runs before the new generation is exec'd.
	Starting func()
	// Succeeded runs once the new generation (pid) is ready, before any
	// caller of Upgrade gets the result and before Exit is closed: the
	// place to hand the main pid over.
	Succeeded func(res Result)
	// Failed runs after a failed upgrade; this generation still serves.
	Failed func(err error)
	// Ready runs at the end of a successful [Generation.Ready], on its
	// caller's goroutine: this generation is the serving one (in a first
	// generation too). The connections of a staged hand-over may still
	// be coming over (see [Generation.Adopted]).
	Ready func()
	// PreviousExited runs, on a goroutine of the generation, once the
	// previous generation has exited, with the time since this one's
	// commit: the previous generation's moves after the commit and its
	// drain of what it kept. Never in a first generation, nor after Stop.
	PreviousExited func(took time.Duration)
}

// Result describes a successful upgrade.
type Result struct {
	PID        int // the new generation's process id
	Generation int // its number (this one's plus one)
}

// Generation is one process in the chain of an upgradable daemon. Only one
// may exist per process.
type Generation struct {
	opts Options
	upg  *tableflip.Upgrader
	gen  int
	link *parentLink // nil in the first generation

	mu       sync.Mutex
	log      *slog.Logger
	systemd  []string // names of the systemd sockets registered, in order
	stored   []string // fd store names of this generation's listeners
	result   Result   // the successful upgrade; set before exitC is closed
	toRemove []string // fd store names to remove once listeners are taken
	// connQueues are the connection queues a stopped process of the
	// service left in the fd store (first generation), until Ready.
	connQueues map[string]*os.File
	adopt      *adoption      // set by AcceptConns
	migration  *Migration     // set by MigrateWith
	lastHand   HandOverResult // the last successful upgrade's hand-over
	adopted    HandOverResult // what the previous generation handed over; valid once adoptDone is closed
	state      readyState
	readyErr   error // why Ready or Fail ended this generation

	noStateDir bool // no StateDir: keep no record of stored listeners

	// onCommit, set by Run before Ready, runs on the upgrade goroutine
	// as soon as tableflip reports the new generation's commit, before
	// the connections move and before Hooks.Succeeded.
	onCommit func()

	reqs      chan chan upgradeReply
	stopOnce  sync.Once
	stopC     chan struct{}
	exitC     chan struct{}
	runDone   chan struct{}
	waitDone  chan struct{} // closed when the previous generation exited
	cancel    context.CancelFunc
	adoptDone chan struct{} // closed once the hand-over from the previous generation ended (at once without one)
}

// readyState is where a generation stands with Ready.
type readyState int

const (
	starting    readyState = iota
	serving                // Ready succeeded
	failedReady            // Ready or Fail ended it: it must exit
)

type upgradeReply struct {
	res Result
	err error
}

// New starts this process's generation. In a process exec'd by a
// generation's Upgrade it reads what that generation passed (protocol
// version 2 over the channel, or version 1 from a release before) and
// greets it; an error there fails the upgrade with that reason.
func New(opts Options) (*Generation, error) {
	if opts.UpgradeTimeout <= 0 {
		opts.UpgradeTimeout = 10 * time.Second
	}
	noStateDir := false
	if opts.StateDir == "" {
		opts.StateDir, _, _ = strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
		noStateDir = opts.StateDir == ""
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The PID file is written by this package (see Options.PIDFile), not
	// by tableflip, whose child writes it before telling its parent.
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout})
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	link, err := openParentLink(upg)
	if err != nil {
		return nil, err
	}
	g := &Generation{
		opts:       opts,
		log:        log,
		upg:        upg,
		gen:        1,
		link:       link,
		reqs:       make(chan chan upgradeReply),
		stopC:      make(chan struct{}),
		exitC:      make(chan struct{}),
		runDone:    make(chan struct{}),
		waitDone:   make(chan struct{}),
		adoptDone:  make(chan struct{}),
		noStateDir: noStateDir,
	}
	if link != nil {
		g.gen = link.offer.Generation
	}
	return g, nil
}

// Number is the generation's number: 1 for the process that started the
// chain, one more for each upgrade.
func (g *Generation) Number() int { return g.gen }

// HasParent reports whether this generation was started by an upgrade.
func (g *Generation) HasParent() bool { return g.upg.HasParent() }

// Carried returns what the previous generation's Options.Carry passed to
// this one: nil in a first generation, or from a release without it.
func (g *Generation) Carried() []byte {
	if g.link == nil {
		return nil
	}
	return g.link.offer.Carry
}

// Protocol is the hand-over protocol version spoken with the previous
// generation: 2 (this release), 1 (a release before it), or 0 in a first
// generation.
func (g *Generation) Protocol() int {
	if g.link == nil {
		return 0
	}
	return g.link.version
}

// Fail tells the generation that started this one why it will not become
// ready, so its Upgrade returns that reason; the caller exits afterwards
// (Stop first). Fail does nothing more in the first generation, and
// nothing after Ready.
func (g *Generation) Fail(reason error) {
	g.mu.Lock()
	if g.state != starting {
		g.mu.Unlock()
		return
	}
	g.state, g.readyErr = failedReady, reason
	g.mu.Unlock()
	if g.link != nil {
		g.link.fail(reason.Error())
		g.link.close()
	}
}

// ReportFailure is [Generation.Fail] for a process that fails before it
// built its Generation, for example on a configuration that does not
// validate: if an upgrading generation started this process, its Upgrade
// returns reason. It does nothing otherwise. Only one Generation may exist
// per process: call it instead of New, never after.
func ReportFailure(reason error) {
	g, err := New(Options{})
	if err != nil {
		return
	}
	g.Fail(reason)
	g.Stop()
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// beforeCommit, set only by tests (export_test.go), runs in Ready just
// before the commit.
var beforeCommit func(*Generation)

// ErrFailed is wrapped by Ready after Fail or a failed Ready: the
// generation never serves and must exit.
var ErrFailed = errors.New("handoff: this generation failed to become ready")

// Ready makes this generation the serving one; start serving only once it
// returned nil. With a previous generation it is the commit of the
// upgrade: the previous generation is told (protocol "ready", then
// tableflip's readiness byte), stops accepting and drains, and inherited
// sockets nobody claimed through Listeners or Listen are closed (stale
// Unix socket files of listeners no longer configured are removed). In a
// first generation the PID file is written first, and its failure is
// Ready's. After Ready, Upgrade requests are served.
//
// Ready is not retried: after an error the generation must exit (the
// previous one, if any, goes on serving) and later calls return the same
// error.
func (g *Generation) Ready() error {
	g.mu.Lock()
	switch g.state {
	case serving:
		g.mu.Unlock()
		return nil
	case failedReady:
		err := g.readyErr
		g.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	stored := append([]string(nil), g.stored...)
	g.mu.Unlock()
	if beforeCommit != nil {
		beforeCommit(g)
	}
	g.mu.Lock()
	restoring := len(g.connQueues) > 0
	g.mu.Unlock()
	restoreGC := holdGC(g.link != nil || restoring)
	// The hand-over's time runs from the ready message, sent first by
	// commit: the previous generation pauses on it.
	handStart := time.Now()
	pending, staged, err := g.commit(stored)
	if err != nil {
		restoreGC()
		g.mu.Lock()
		g.state, g.readyErr = failedReady, err
		g.mu.Unlock()
		if g.link != nil {
			g.link.close()
		}
		return err
	}
	g.mu.Lock()
	g.state = serving
	g.mu.Unlock()
	committed := time.Now()
	// Committed: this generation serves; what follows cannot undo it.
	if g.link != nil {
		if g.link.version == 1 && g.opts.PIDFile != "" {
			// A version 1 parent leaves the PID file to its child.
			if err := writeAtomic(g.opts.PIDFile, strconv.Itoa(os.Getpid())+"\n"); err != nil {
				g.logger().Error("cannot write the PID file", "file", g.opts.PIDFile, "err", err)
			}
		}
		g.dropParentStored()
	}
	g.mu.Lock()
	handsOver := g.link != nil && g.link.version == protoVersion && g.adopt != nil
	g.mu.Unlock()
	res := g.serveAdopted(pending)
	if len(staged) > 0 {
		// A staged hand-over: the connections come after the commit, each
		// batch served as its states arrive (staged.go). The collector
		// stays off meanwhile, for a bounded time.
		gcTimer := time.AfterFunc(stagedGCHold, restoreGC)
		go g.rollIn(g.link, staged, func(r HandOverResult) {
			gcTimer.Stop()
			restoreGC()
			r.Lost += res.Lost
			r.Took = time.Since(handStart)
			g.adoptEnded(r)
		})
	} else {
		if g.link != nil {
			g.link.close()
		}
		restoreGC()
		if handsOver {
			res.Took = time.Since(handStart)
		}
		g.adoptEnded(res)
	}
	if h := g.opts.Hooks.Ready; h != nil {
		h() // before the goroutines that run the other hooks
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.mu.Lock()
	g.cancel = cancel
	g.mu.Unlock()
	go func() {
		defer close(g.waitDone)
		err := g.upg.WaitForParent(ctx)
		if err != nil && ctx.Err() == nil {
			g.logger().Warn("previous generation misbehaved while exiting", "err", err)
		}
		if h := g.opts.Hooks.PreviousExited; h != nil && g.HasParent() && ctx.Err() == nil {
			h(time.Since(committed))
		}
		// An upgrade also waits for the connections still coming over.
		select {
		case <-g.adoptDone:
		case <-ctx.Done():
		}
	}()
	go g.run()
	return nil
}

// commit is Ready's step that can fail: the PID file of a first
// generation, or "ready" to the parent, the connections it hands over
// (held, not served), and then tableflip's readiness byte. On error
// nothing is committed and the connections taken are closed (the parent
// still has them).
func (g *Generation) commit(stored []string) (pending []adoptedConn, staged []net.Conn, err error) {
	if g.link == nil && g.opts.PIDFile != "" {
		if err := writeAtomic(g.opts.PIDFile, strconv.Itoa(os.Getpid())+"\n"); err != nil {
			return nil, nil, fmt.Errorf("handoff: PID file: %w", err)
		}
	}
	if g.link != nil {
		g.mu.Lock()
		adopt := g.adopt
		g.mu.Unlock()
		adopts := adopt != nil && g.link.version == protoVersion
		if err := g.link.ready(stored, adopts); err != nil {
			return nil, nil, fmt.Errorf("handoff: tell the previous generation: %w", err)
		}
		if adopts {
			pending, staged, err = g.link.receiveConns(adopt.room)
			if err != nil {
				closeAdopted(pending)
				closeConns(staged)
				return nil, nil, fmt.Errorf("handoff: taking over connections: %w", err)
			}
		}
	}
	if err := g.upg.Ready(); err != nil {
		closeAdopted(pending)
		closeConns(staged)
		return nil, nil, fmt.Errorf("handoff: %w", err)
	}
	if g.link == nil {
		// A first generation, committed: the connections a stopped
		// process of the service left in the fd store, if any.
		pending = g.restoreStored()
	}
	return pending, staged, nil
}

// holdGC turns the garbage collector off (when on is true) until the
// function it returns is called. A hand-over runs without it, on both
// sides: a collection then scans the stack of every goroutine (one per
// connection, thousands) and taxes each allocation with assists, and the
// hand-over of 10,000 idle connections took 150–190 ms with it, 105–130
// without (this 2-core machine). The time is bounded (each batch by
// ackTimeout, the whole by the upgrade timeout), and so is what is
// allocated meanwhile; a GOMEMLIMIT still applies.
func holdGC(on bool) (restore func()) {
	if !on {
		return func() {}
	}
	prev := debug.SetGCPercent(-1)
	return sync.OnceFunc(func() { debug.SetGCPercent(prev) })
}

func closeAdopted(cs []adoptedConn) {
	for _, c := range cs {
		c.c.Close()
	}
}

func closeConns(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// stagedGCHold bounds how long the collector stays off in a new
// generation while a staged hand-over goes on after its commit.
const stagedGCHold = 2 * time.Second

// adoptEnded records what the previous generation handed over, and says
// it ended (Adopted).
func (g *Generation) adoptEnded(res HandOverResult) {
	g.mu.Lock()
	g.adopted = res
	g.mu.Unlock()
	close(g.adoptDone)
}

// serveAdopted serves, after the commit, the connections taken over.
func (g *Generation) serveAdopted(pending []adoptedConn) HandOverResult {
	res := HandOverResult{}
	if len(pending) == 0 {
		return res
	}
	g.mu.Lock()
	adopt := g.adopt
	g.mu.Unlock()
	for _, p := range pending {
		if err := adopt.fn(p.c, p.state); err != nil {
			// Ours now, and refused: nothing else can serve it.
			p.c.Close()
			res.Lost++
			res.Err = fmt.Errorf("handoff: adopt %s: %w", p.c.RemoteAddr(), err)
			continue
		}
		res.Moved++
	}
	return res
}

// WaitForParent blocks until the previous generation has exited, or ctx
// ends. It returns at once in the first generation.
func (g *Generation) WaitForParent(ctx context.Context) error {
	if !g.HasParent() {
		return nil
	}
	if err := g.upg.WaitForParent(ctx); err != nil {
		return fmt.Errorf("handoff: %w", err)
	}
	return nil
}

// Exit is closed after a successful upgrade, once Hooks.Succeeded has
// returned: this generation should stop accepting, drain and exit.
func (g *Generation) Exit() <-chan struct{} { return g.exitC }

// Successor is the generation that replaced this one: valid once Exit is
// closed, the zero Result before.
func (g *Generation) Successor() Result {
	select {
	case <-g.exitC:
		return g.result
	default:
		return Result{}
	}
}

// Stop ends the generation for good: no more upgrades; an upgrade in
// flight is cancelled (the new process is killed) and pending requests
// fail with ErrStopped. If no upgrade succeeded, the Unix socket files of
// the listeners bound by this daemon (not the socket-activated ones, not
// the ones in the fd store) are removed. A generation started by an
// upgrade that stops before it was ready — it failed — leaves every socket
// alone: the previous generation still serves them. Stop waits for its
// goroutines to end.
func (g *Generation) Stop() {
	g.mu.Lock()
	failedChild := g.HasParent() && g.state != serving
	g.mu.Unlock()
	if failedChild {
		// tableflip's Stop would unlink the inherited Unix socket paths.
		g.stopOnce.Do(func() { close(g.stopC) })
		return
	}
	g.stopOnce.Do(func() {
		close(g.stopC)
		g.upg.Stop()
	})
	g.mu.Lock()
	cancel := g.cancel
	g.mu.Unlock()
	if cancel != nil {
		cancel()
		<-g.runDone
		<-g.waitDone
		<-g.adoptDone
	}
	<-g.upg.Exit()
}

// adoption is what AcceptConns registered.
type adoption struct {
	fn   Adopter
	room func() int
}

// AcceptConns makes this generation take the live connections the
// previous generation hands over after the commit: each is served through
// adopt (daemon's Server.Adopt), within room (how many more connections it
// can hold now, for example its fd headroom; nil: no bound but the
// kernel's). Call it before Ready; without it, the previous generation is
// told not to hand anything over and drains instead.
func (g *Generation) AcceptConns(adopt Adopter, room func() int) {
	if room == nil {
		room = func() int { return maxFDsPerMessage }
	}
	g.mu.Lock()
	g.adopt = &adoption{fn: adopt, room: room}
	g.mu.Unlock()
}

// Adopted is closed once the previous generation's hand-over ended (at
// once in a first generation, or without AcceptConns); then
// AdoptedResult tells what came over.
func (g *Generation) Adopted() <-chan struct{} { return g.adoptDone }

// AdoptedResult is what the previous generation handed over (Moved, and
// Err if the hand-over stopped early); valid once Adopted is closed. Its
// Took runs from this generation's ready message (the previous one
// pauses on it) to the end of the hand-over; zero when there was none.
func (g *Generation) AdoptedResult() HandOverResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.adopted
}

// SetLogger replaces the logger, for example with one that names the
// generation once its number is known.
func (g *Generation) SetLogger(l *slog.Logger) {
	if l != nil {
		g.mu.Lock()
		g.log = l
		g.mu.Unlock()
	}
}

func (g *Generation) logger() *slog.Logger {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log
}
