package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/echod/echod/systemd"
)

// stateEnv carries a generation's hand-over state to the next one: its
// number, the systemd-activated sockets it passes on, and where the new
// generation reports success or failure. The new generation removes it
// from its environment at once.
const stateEnv = "ECHOD_HANDOFF"

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
	// PIDFile, if set, is written atomically with the pid of each
	// generation when it becomes ready.
	PIDFile string
	// StateDir holds the short-lived file through which a new generation
	// reports its pid or its failure. Empty means $RUNTIME_DIRECTORY, or
	// the system's temporary directory.
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
}

// Hooks let the program act at each step of an upgrade, for example to
// tell systemd. Each may be nil. They run on the upgrade goroutine, so an
// upgrade does not complete before they return.
type Hooks struct {
	// Starting runs before the new generation is exec'd.
	Starting func()
	// Succeeded runs once the new generation (pid) is ready, before any
	// caller of Upgrade gets the result and before Exit is closed: the
	// place to hand the main pid over.
	Succeeded func(res Result)
	// Failed runs after a failed upgrade; this generation still serves.
	Failed func(err error)
}

// Result describes a successful upgrade.
type Result struct {
	PID        int // the new generation's process id
	Generation int // its number (this one's plus one)
}

// state is what stateEnv holds.
type state struct {
	Generation int      `json:"generation"`
	Status     string   `json:"status"`
	Systemd    []string `json:"systemd,omitempty"` // names of passed systemd sockets, in order
	Stored     []string `json:"stored,omitempty"`  // fd store names of the listeners kept there
}

// Generation is one process in the chain of an upgradable daemon. Only one
// may exist per process.
type Generation struct {
	opts Options
	log  *slog.Logger
	upg  *tableflip.Upgrader
	gen  int

	parentState *state // nil in the first generation

	mu      sync.Mutex
	systemd []string // names of the systemd sockets registered, in order
	stored  []string // fd store names of this generation's listeners
	result  Result   // the successful upgrade; set before exitC is closed

	tempState bool     // opts.StateDir is the shared temporary directory
	toRemove  []string // fd store names to remove once listeners are taken
	ready     bool

	reqs     chan chan upgradeReply
	stopOnce sync.Once
	stopC    chan struct{}
	exitC    chan struct{}
	runDone  chan struct{}
	waitDone chan struct{} // closed when the previous generation exited
	cancel   context.CancelFunc
}

type upgradeReply struct {
	res Result
	err error
}

// New starts this process's generation. In a process exec'd by a
// generation's Upgrade it takes over the sockets that generation passed.
func New(opts Options) (*Generation, error) {
	if opts.UpgradeTimeout <= 0 {
		opts.UpgradeTimeout = 10 * time.Second
	}
	tempState := false // StateDir is the shared temporary directory
	if opts.StateDir == "" {
		opts.StateDir = os.Getenv("RUNTIME_DIRECTORY")
		if i := strings.IndexByte(opts.StateDir, ':'); i >= 0 {
			opts.StateDir = opts.StateDir[:i]
		}
		if opts.StateDir == "" {
			opts.StateDir = os.TempDir()
			tempState = true
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var ps *state
	if raw, ok := os.LookupEnv(stateEnv); ok {
		os.Unsetenv(stateEnv)
		ps = new(state)
		if err := json.Unmarshal([]byte(raw), ps); err != nil {
			return nil, fmt.Errorf("handoff: %s from the previous generation: %w", stateEnv, err)
		}
	}
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout, PIDFile: opts.PIDFile})
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if ps != nil && !upg.HasParent() {
		ps = nil // stale variable, not from a live parent
	}
	g := &Generation{
		opts:        opts,
		log:         log,
		upg:         upg,
		gen:         1,
		parentState: ps,
		reqs:        make(chan chan upgradeReply),
		stopC:       make(chan struct{}),
		exitC:       make(chan struct{}),
		runDone:     make(chan struct{}),
		waitDone:    make(chan struct{}),
		tempState:   tempState,
	}
	if ps != nil {
		g.gen = ps.Generation + 1
	}
	return g, nil
}

// Number is the generation's number: 1 for the process that started the
// chain, one more for each upgrade.
func (g *Generation) Number() int { return g.gen }

// HasParent reports whether this generation was started by an upgrade.
func (g *Generation) HasParent() bool { return g.upg.HasParent() }

// Fail tells the generation that started this one why it will not become
// ready, so its Upgrade returns that reason. The caller exits afterwards.
// Fail does nothing in the first generation.
func (g *Generation) Fail(reason error) {
	g.writeStatus("error " + oneLine(reason.Error()))
}

func (g *Generation) writeStatus(line string) {
	if g.parentState == nil {
		return
	}
	if err := writeStatusFile(g.parentState.Status, line); err != nil {
		g.log.Warn("cannot report to the previous generation", "err", err)
	}
}

func writeStatusFile(path, line string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	return err
}

// ReportFailure is [Generation.Fail] for a process that fails before it
// could call New, for example on a configuration that does not validate:
// if an upgrading generation started this process, its Upgrade returns
// reason. It does nothing otherwise.
func ReportFailure(reason error) {
	raw, ok := os.LookupEnv(stateEnv)
	if !ok {
		return
	}
	var st state
	if json.Unmarshal([]byte(raw), &st) == nil {
		_ = writeStatusFile(st.Status, "error "+oneLine(reason.Error()))
	}
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 {
			return ' '
		}
		return r
	}, s)
}

// Ready tells the previous generation, if any, that this one serves: it
// stops accepting and drains. Inherited sockets that were not claimed
// through Listeners or Listen are closed (stale Unix socket files of
// listeners no longer configured are removed). After Ready, Upgrade
// requests are served.
func (g *Generation) Ready() error {
	g.mu.Lock()
	if g.ready {
		g.mu.Unlock()
		return nil
	}
	g.ready = true
	g.mu.Unlock()
	g.dropParentStored()
	g.writeStatus("ok " + strconv.Itoa(os.Getpid()))
	if err := g.upg.Ready(); err != nil {
		g.mu.Lock()
		g.ready = false
		g.mu.Unlock()
		return fmt.Errorf("handoff: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.mu.Lock()
	g.cancel = cancel
	g.mu.Unlock()
	go func() {
		defer close(g.waitDone)
		if err := g.upg.WaitForParent(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("previous generation misbehaved while exiting", "err", err)
		}
	}()
	go g.run()
	return nil
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
	failedChild := g.HasParent() && !g.ready
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
	}
	<-g.upg.Exit()
}

// SetLogger replaces the logger, for example with one that names the
// generation once its number is known.
func (g *Generation) SetLogger(l *slog.Logger) {
	if l != nil {
		g.log = l
	}
}
