package handoff_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	echodaemon "github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
)

// releaseEnv names a FIFO a "run" generation told to "pause-then-fail"
// reads from before it gives up.
const releaseEnv = "HANDOFF_TEST_RELEASE"

// greeter is the server of the "run" role: it greets like runDaemon and
// says "ready" when Run first calls Serve — which Run does only once the
// generation is ready.
type greeter struct {
	*echodaemon.Server
	gen  int
	once sync.Once
}

func (s *greeter) Serve(l net.Listener) error {
	s.once.Do(func() { emit("ready", "gen=%d addr=%s inherited=true", s.gen, l.Addr()) })
	return s.Server.Serve(l)
}

// greetEcho greets a new connection like runDaemon, then echoes; it can
// be detached and resumed in another generation (daemon.Resumer).
type greetEcho struct {
	echodaemon.Echo
	gen int
}

func (h *greetEcho) ServeConn(ctx context.Context, c net.Conn) error {
	if _, err := fmt.Fprintf(c, "pid %d gen %d\n", os.Getpid(), h.gen); err != nil {
		return err
	}
	return h.Echo.ServeConn(ctx, c)
}

// runLifecycleDaemon is one generation run by handoff.Run.
func runLifecycleDaemon() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	emit("start", "ppid=%d", os.Getppid())
	spec, err := handoff.ParseSpec(os.Getenv(specEnv))
	if err != nil {
		emit("error", "msg=%v", err)
		os.Exit(1)
	}
	var gen int
	if b, err := os.ReadFile(os.Getenv(failFileEnv)); err == nil && strings.TrimSpace(string(b)) == "pause-then-fail" {
		// Ready holds just before its commit until the test has made
		// its connections; then the channel breaks and the commit fails.
		handoff.SetBeforeCommitForTest(func(g *handoff.Generation) {
			if !g.HasParent() {
				return
			}
			emit("paused", "gen=%d", g.Number())
			if f, err := os.Open(os.Getenv(releaseEnv)); err == nil {
				_, _ = f.Read(make([]byte, 1))
				f.Close()
			}
			emit("failing", "mode=pause-then-fail gen=%d", g.Number())
			handoff.BreakChannelForTest(g)
		})
	}
	if b, err := os.ReadFile(os.Getenv(failFileEnv)); err == nil && strings.TrimSpace(string(b)) == "hold-mid-takeover" {
		handoff.SetAfterAcceptForTest(func(batch int) {
			if batch == 2 {
				// Holds what it took, uncommitted, until the test kills it.
				emit("failing", "mode=hold-mid-takeover")
				select {}
			}
		})
	}
	err = handoff.Run(context.Background(), handoff.Config{
		Migrate: true,
		Options: handoff.Options{
			StateDir:       os.Getenv(stateDirEnv),
			UpgradeTimeout: waitTimeout,
			Logger:         slog.New(slog.NewTextHandler(logWriter{}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			Hooks: handoff.Hooks{
				Succeeded: func(r handoff.Result) { emit("upgraded", "gen=%d newpid=%d newgen=%d", gen, r.PID, r.Generation) },
				Failed:    func(err error) { emit("upgrade-failed", "gen=%d msg=%v", gen, err) },
			},
		},
		Listen:  []handoff.Spec{spec},
		Signals: sigs,
		NewServer: func(g *handoff.Generation, ls []*handoff.Listener) (handoff.Server, error) {
			gen = g.Number()
			return &greeter{gen: gen, Server: echodaemon.New(echodaemon.Config{Handler: &greetEcho{gen: gen}})}, nil
		},
	})
	emit("exit", "gen=%d err=%v", gen, err)
	if err != nil {
		os.Exit(1)
	}
}

// TestRunServesOnlyWhenReady: a new generation that has taken the
// listening socket and built its server, but has not committed, accepts
// nothing — every connection made meanwhile is served by the old
// generation, and stays with it when the new one then fails its commit.
func TestRunServesOnlyWhenReady(t *testing.T) {
	dir := t.TempDir()
	failFile := filepath.Join(dir, "fail")
	release := filepath.Join(dir, "release")
	if err := unix.Mkfifo(release, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonConfig{role: "run", failFile: failFile, env: []string{releaseEnv + "=" + release}})
	r1 := d.ready(1)
	addr := r1.kv["addr"]
	if err := os.WriteFile(failFile, []byte("pause-then-fail"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	paused := d.nextEvent("generation 2 paused before ready", kind("paused"))
	var conns []net.Conn
	for i := range 10 {
		pid, gen, c := dialID(t, addr, true)
		if pid != r1.pid || gen != 1 {
			t.Fatalf("connection %d made while generation 2 (pid %d) was not ready was served by pid %d generation %d", i, paused.pid, pid, gen)
		}
		conns = append(conns, c)
	}
	// Read and write: opening the FIFO so neither blocks nor fails
	// (ENXIO) when generation 2 has not opened it yet; the byte waits in
	// the FIFO, kept open until the upgrade's outcome, for its read.
	w, err := os.OpenFile(release, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgrade-failed" {
		t.Fatalf("upgrade result %s, want a failure", up)
	}
	d.waitExit(paused.pid)
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := io.WriteString(c, "again\n"); err != nil {
			t.Fatalf("connection %d after the failed upgrade: %v", i, err)
		}
		b := make([]byte, len("again\n"))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "again\n" {
			t.Fatalf("connection %d after the failed upgrade: %q %v", i, b, err)
		}
	}
	// The next upgrade works, and generation 1 drains and exits.
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.ready(2)
	checkUpgraded(t, d.upgradeResult(r1.pid), r2.pid, 2)
	for _, c := range conns {
		c.Close()
	}
	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
}

// TestLostReadyReportDoesNotCommit: a new generation that cannot tell its
// parent it is ready (the channel broke) does not commit: it exits, the
// parent reports the failure and keeps serving, and the next upgrade works.
// Never two generations serving, never a success reported as a failure.
func TestLostReadyReportDoesNotCommit(t *testing.T) {
	failFile := filepath.Join(t.TempDir(), "fail")
	d := startDaemon(t, daemonConfig{failFile: failFile})
	r1 := d.ready(1)
	addr := r1.kv["addr"]
	if err := os.WriteFile(failFile, []byte("lose-report"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	failing := d.nextEvent("child losing its channel", kind("failing"))
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgrade-failed" {
		t.Fatalf("generation 1's upgrade: %s, want a failure", up)
	}
	d.waitExit(failing.pid)
	if pid, gen, _ := dialID(t, addr, false); pid != r1.pid || gen != 1 {
		t.Fatalf("after the failed upgrade %s is served by pid %d generation %d, want generation 1 (pid %d)", addr, pid, gen, r1.pid)
	}
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.nextEvent("generation 2 ready", func(e event) bool { return readyGen(2)(e) && e.pid != failing.pid })
	checkUpgraded(t, d.upgradeResult(r1.pid), r2.pid, 2)
	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
}

// TestMigrationSurvivesChildKilledMidTakeover: the new generation stops in
// the middle of taking over 1,000 connections (after its second batch),
// and generation 1 serves every one of them meanwhile (the staged
// hand-over takes none out before the commit: with the plain one they
// would wait for generation 1 to give up on its child); it is then killed
// (SIGKILL): none is lost, generation 1 serves them all and accepts again,
// and the next reload moves them all.
func TestMigrationSurvivesChildKilledMidTakeover(t *testing.T) {
	failFile := filepath.Join(t.TempDir(), "fail")
	d := startDaemon(t, daemonConfig{role: "run", failFile: failFile})
	r1 := d.ready(1)
	addr := r1.kv["addr"]
	const n = 1000
	conns := make([]net.Conn, n)
	for i := range conns {
		_, _, conns[i] = dialID(t, addr, true)
	}
	echoAll := func(what string) {
		t.Helper()
		for i, c := range conns {
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			msg := fmt.Sprintf("%s %d\n", what, i)
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatalf("%s: connection %d: %v", what, i, err)
			}
			b := make([]byte, len(msg))
			if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
				t.Fatalf("%s: connection %d echoed %q, %v; want %q", what, i, b, err, msg)
			}
		}
	}
	if err := os.WriteFile(failFile, []byte("hold-mid-takeover"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	dying := d.nextEvent("generation 2 holding mid-takeover", kind("failing"))
	echoAll("while generation 2 holds copies")
	if i := d.index(kindPid("upgrade-failed", r1.pid)); i >= 0 || !d.alive(dying.pid) {
		t.Fatalf("the connections were echoed only once the upgrade had ended (failed: %v, generation 2 alive: %v)", i >= 0, d.alive(dying.pid))
	}
	d.signal(dying.pid, unix.SIGKILL)
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgrade-failed" {
		t.Fatalf("upgrade with a child killed mid-takeover: %s, want a failure", up)
	}
	d.waitExit(dying.pid)
	echoAll("after the failed takeover")
	if pid, gen, _ := dialID(t, addr, false); pid != r1.pid || gen != 1 {
		t.Fatalf("a new connection is served by pid %d generation %d, want generation 1 (pid %d)", pid, gen, r1.pid)
	}

	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.nextEvent("generation 2 ready", func(e event) bool { return readyGen(2)(e) && e.pid != dying.pid })
	checkUpgraded(t, d.upgradeResult(r1.pid), r2.pid, 2)
	// Generation 1 handed every connection over: it exits while they are
	// still open.
	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
	echoAll("after the hand-over")
}
