package handoff_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/handoff"
)

// The generation tests run real processes. The test binary itself is the
// daemon when roleEnv is set: TestHelperDaemon then runs a generation,
// and since tableflip re-execs os.Args[0] with the same arguments and
// environment, every later generation runs it too.
//
// All generations share one stdout, a pipe the test reads. A helper
// writes one line per event, each in a single write (shorter than
// PIPE_BUF, so lines of different processes never interleave):
//
//	handoff-test: <kind> pid=<pid> [key=value ...] [msg=<rest of line>]
const (
	roleEnv     = "HANDOFF_TEST_ROLE"      // "daemon" or "pidfile"
	specEnv     = "HANDOFF_TEST_SPEC"      // the listen address
	stateDirEnv = "HANDOFF_TEST_STATE_DIR" // Options.StateDir
	failFileEnv = "HANDOFF_TEST_FAIL_FILE" // while it exists, new processes fail (contents: "fail", "report" or "lose-ready")
	pidFileEnv  = "HANDOFF_TEST_PID_FILE"  // Options.PIDFile
	timeoutEnv  = "HANDOFF_TEST_UPGRADE_TIMEOUT"

	linePrefix = "handoff-test: "

	// failReason is what a generation told to fail gives as its reason.
	failReason = "config says no"
	// reportReason is the reason of a process that fails before New.
	reportReason = "config says no (before New)"
)

// waitTimeout bounds every wait of the tests (race-enabled children start
// slowly on a loaded machine; nothing here takes long when all is well).
const waitTimeout = 60 * time.Second

var emitMu sync.Mutex

// emit writes an event line to stdout, shared by every generation.
func emit(kind string, format string, args ...any) {
	line := fmt.Sprintf("%s%s pid=%d", linePrefix, kind, os.Getpid())
	if format != "" {
		line += " " + fmt.Sprintf(format, args...)
	}
	line = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, line)
	if len(line) > 4000 {
		line = line[:4000]
	}
	emitMu.Lock()
	defer emitMu.Unlock()
	_, _ = os.Stdout.WriteString(line + "\n")
}

// logWriter turns the generation's slog records into "log" events.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) {
	emit("log", "msg=%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// TestHelperDaemon is not a test: it is the daemon process of the
// generation tests. It skips unless roleEnv is set.
func TestHelperDaemon(t *testing.T) {
	switch role := os.Getenv(roleEnv); role {
	case "":
		t.Skip("the daemon process of the generation tests; runs only when " + roleEnv + " is set")
	case "daemon":
		runDaemon()
	case "pidfile":
		runPIDFileDaemon()
	case "run":
		runLifecycleDaemon()
	default:
		emit("error", "msg=unknown role %q", role)
		os.Exit(2)
	}
}

// runDaemon is one generation of an echo daemon: it greets each
// connection with "pid <pid> gen <n>" and echoes what it reads. SIGHUP
// asks for an upgrade; after a successful one it stops accepting, waits
// for its connections to close and returns (exit status 0). SIGTERM stops
// it at once.
func runDaemon() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	emit("start", "ppid=%d", os.Getppid())

	if b, err := os.ReadFile(os.Getenv(failFileEnv)); err == nil {
		if strings.TrimSpace(string(b)) == "report" {
			emit("failing", "mode=report")
			handoff.ReportFailure(errors.New(reportReason))
			os.Exit(1)
		}
	}

	upgradeTimeout := waitTimeout
	if d, err := time.ParseDuration(os.Getenv(timeoutEnv)); err == nil {
		upgradeTimeout = d
	}
	gen, err := handoff.New(handoff.Options{
		StateDir:       os.Getenv(stateDirEnv),
		PIDFile:        os.Getenv(pidFileEnv),
		UpgradeTimeout: upgradeTimeout,
		Logger:         slog.New(slog.NewTextHandler(logWriter{}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		emit("error", "msg=New: %v", err)
		os.Exit(1)
	}
	spec, err := handoff.ParseSpec(os.Getenv(specEnv))
	if err != nil {
		emit("error", "msg=%v", err)
		os.Exit(1)
	}
	ls, err := gen.Listeners([]handoff.Spec{spec}, nil)
	if err != nil {
		emit("error", "msg=Listeners: %v", err)
		os.Exit(1)
	}

	if b, err := os.ReadFile(os.Getenv(failFileEnv)); err == nil {
		switch strings.TrimSpace(string(b)) {
		case "fail":
			emit("failing", "mode=fail gen=%d", gen.Number())
			gen.Fail(errors.New(failReason))
			os.Exit(1)
		case "lose-report":
			// The channel to the parent breaks before Ready: the "ready"
			// report cannot be sent, so this process must not commit.
			handoff.BreakChannelForTest(gen)
			emit("failing", "mode=lose-report gen=%d", gen.Number())
		case "lose-ready":
			// tableflip's readiness pipe (fd 3) now leads nowhere: this
			// process believes it is ready, its parent never hears so
			// and kills it at the upgrade timeout.
			null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				err = unix.Dup3(null, 3, unix.O_CLOEXEC)
			}
			emit("failing", "mode=lose-ready gen=%d err=%v", gen.Number(), err)
		}
	}

	if err := gen.Ready(); err != nil {
		emit("ready-failed", "gen=%d msg=Ready: %v", gen.Number(), err)
		os.Exit(1)
	}
	// Serve only once ready (see Generation.Ready).
	var accepting, serving sync.WaitGroup
	for _, l := range ls {
		accepting.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				serving.Go(func() {
					defer c.Close()
					fmt.Fprintf(c, "pid %d gen %d\n", os.Getpid(), gen.Number())
					_, _ = io.Copy(c, c)
				})
			}
		})
	}
	closeListeners := func() {
		for _, l := range ls {
			l.Close()
		}
		accepting.Wait()
	}

	emit("ready", "gen=%d addr=%s inherited=%t", gen.Number(), ls[0].Addr(), ls[0].Inherited)

	var upgrading sync.WaitGroup
	hups := 0
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				closeListeners()
				gen.Stop()
				upgrading.Wait()
				emit("stopped", "gen=%d", gen.Number())
				return
			}
			hups++
			emit("hup", "gen=%d n=%d", gen.Number(), hups)
			upgrading.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
				defer cancel()
				res, err := gen.Upgrade(ctx)
				if err != nil {
					emit("upgrade-failed", "gen=%d notstarted=%t msg=%v", gen.Number(), errors.Is(err, handoff.ErrNotStarted), err)
					return
				}
				emit("upgraded", "gen=%d newpid=%d newgen=%d", gen.Number(), res.PID, res.Generation)
			})
		case <-gen.Exit():
			closeListeners()
			serving.Wait() // drain
			upgrading.Wait()
			gen.Stop()
			emit("exit", "gen=%d", gen.Number())
			return
		}
	}
}

// runPIDFileDaemon makes Ready fail (tableflip cannot write the PID file)
// and then checks that the generation can still be shut down.
func runPIDFileDaemon() {
	emit("start", "ppid=%d", os.Getppid())
	dir := os.Getenv(stateDirEnv)
	gen, err := handoff.New(handoff.Options{
		StateDir: dir,
		PIDFile:  filepath.Join(dir, "no-such-dir", "echod.pid"),
	})
	if err != nil {
		emit("error", "msg=New: %v", err)
		os.Exit(1)
	}
	err = gen.Ready()
	emit("ready-result", "msg=%v", err)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = gen.Upgrade(ctx)
	cancel()
	emit("upgrade-result", "deadline=%t msg=%v", errors.Is(err, context.DeadlineExceeded), err)

	stopped := make(chan any, 1)
	go func() {
		defer func() { stopped <- recover() }()
		gen.Stop()
	}()
	select {
	case r := <-stopped:
		if r != nil {
			emit("stop-panicked", "msg=%v", r)
		} else {
			emit("stop-returned", "")
		}
	case <-time.After(10 * time.Second):
		emit("stop-hung", "")
	}
	// Return: os.Exit(0) during a test counts as a failure.
}

// event is one line a helper wrote.
type event struct {
	kind string
	pid  int
	kv   map[string]string
	msg  string
	line string
}

func (e event) String() string { return e.line }

func (e event) int(key string) int {
	n, err := strconv.Atoi(e.kv[key])
	if err != nil {
		return -1
	}
	return n
}

func parseEvent(line string) (event, bool) {
	i := strings.Index(line, linePrefix)
	if i < 0 {
		return event{}, false
	}
	rest := line[i+len(linePrefix):]
	e := event{kv: map[string]string{}, line: rest}
	if head, msg, ok := strings.Cut(rest, " msg="); ok {
		rest, e.msg = head, msg
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return event{}, false
	}
	e.kind = fields[0]
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			e.kv[k] = v
		}
	}
	e.pid = e.int("pid")
	return e, true
}

// daemon is a chain of generations started by a test.
type daemon struct {
	t        *testing.T
	cmd      *exec.Cmd  // generation 1
	gen1Done chan error // its exit status
	out      *os.File   // read end of the shared stdout
	readDone chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when events or raw grow
	events  []event
	raw     []string     // every line, for failure reports
	pidfds  map[int]int  // pid -> pidfd, for every process that said "start"
	closing bool         // cleanup runs: kill every process at once
	used    map[int]bool // indexes of the events nextEvent returned
}

type daemonConfig struct {
	role           string
	spec           string
	failFile       string
	pidFile        string
	upgradeTimeout time.Duration
	env            []string // more variables for every generation
	bin            string   // the executable: the test binary if empty
}

func startDaemon(t *testing.T, cfg daemonConfig) *daemon {
	t.Helper()
	if cfg.role == "" {
		cfg.role = "daemon"
	}
	if cfg.spec == "" {
		cfg.spec = "127.0.0.1:0"
	}
	stateDir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	bin := cfg.bin
	if bin == "" {
		bin = os.Args[0]
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperDaemon$", "-test.v", "-test.timeout=5m")
	cmd.Stdout, cmd.Stderr = w, w
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "HANDOFF_TEST_"), strings.HasPrefix(name, "LISTEN_"),
			name == "NOTIFY_SOCKET", name == "ECHOD_HANDOFF", strings.HasPrefix(name, "TABLEFLIP_"):
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env,
		roleEnv+"="+cfg.role,
		specEnv+"="+cfg.spec,
		stateDirEnv+"="+stateDir,
		failFileEnv+"="+cfg.failFile,
		pidFileEnv+"="+cfg.pidFile,
		timeoutEnv+"="+cfg.upgradeTimeout.String(),
	)
	cmd.Env = append(cmd.Env, cfg.env...)
	d := &daemon{
		t:        t,
		cmd:      cmd,
		gen1Done: make(chan error, 1),
		out:      r,
		readDone: make(chan struct{}),
		changed:  make(chan struct{}),
		pidfds:   map[int]int{},
		used:     map[int]bool{},
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	go func() { d.gen1Done <- cmd.Wait() }()
	go d.read()
	t.Cleanup(d.cleanup)
	return d
}

// read collects the lines of every generation until the last one closed
// the pipe.
func (d *daemon) read() {
	defer close(d.readDone)
	sc := bufio.NewScanner(d.out)
	for sc.Scan() {
		line := sc.Text()
		e, ok := parseEvent(line)
		d.mu.Lock()
		d.raw = append(d.raw, line)
		if ok {
			if e.kind == "start" && e.pid > 0 {
				// The process is alive: it just wrote. A pidfd keeps
				// naming it even after it exits, so signals never hit a
				// recycled pid.
				fd, err := unix.PidfdOpen(e.pid, 0)
				if err != nil {
					// Gone already (and reaped by its parent
					// generation): a quickly failing child.
					fd = -1
				} else if d.closing {
					_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				}
				d.pidfds[e.pid] = fd
			}
			d.events = append(d.events, e)
		}
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

func (d *daemon) cleanup() {
	t := d.t
	d.mu.Lock()
	d.closing = true
	for _, fd := range d.pidfds {
		if fd >= 0 {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
	}
	d.mu.Unlock()
	_ = d.cmd.Process.Kill()
	select {
	case <-d.gen1Done:
	case <-time.After(waitTimeout):
		t.Errorf("generation 1 (pid %d) did not exit after SIGKILL", d.cmd.Process.Pid)
	}
	// The pipe reaches EOF when every process that holds it exited.
	select {
	case <-d.readDone:
	case <-time.After(waitTimeout):
		t.Errorf("some process still holds the helpers' stdout after SIGKILL")
	}
	d.out.Close()
	<-d.readDone
	d.mu.Lock()
	for pid, fd := range d.pidfds {
		if fd < 0 {
			continue
		}
		if err := waitPidfd(fd, waitTimeout); err != nil {
			t.Errorf("pid %d: %v", pid, err)
		}
		unix.Close(fd)
	}
	d.pidfds = nil
	raw := d.raw
	d.mu.Unlock()
	// HANDOFF_TEST_SHOW=1 shows the output of passing tests too.
	if t.Failed() || os.Getenv("HANDOFF_TEST_SHOW") != "" {
		t.Logf("output of the daemon's processes:\n\t%s", strings.Join(raw, "\n\t"))
	}
}

// waitPidfd waits until the process behind pidfd has exited.
func waitPidfd(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("still running")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// nextEvent waits for the first event that satisfies match and was not
// returned before, and returns it. Lines of different processes may come
// in any order, so it looks at every line, not only at the later ones.
func (d *daemon) nextEvent(what string, match func(event) bool) event {
	d.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		d.mu.Lock()
		for i := range d.events {
			if !d.used[i] && match(d.events[i]) {
				d.used[i] = true
				e := d.events[i]
				d.mu.Unlock()
				return e
			}
		}
		changed := d.changed
		d.mu.Unlock()
		select {
		case <-changed:
		case <-d.readDone:
			d.drainThenFail(what, match)
		case <-deadline:
			d.t.Fatalf("no %s after %v", what, waitTimeout)
		}
	}
}

func (d *daemon) drainThenFail(what string, match func(event) bool) {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.events {
		if !d.used[i] && match(d.events[i]) {
			return // nextEvent finds it on the next round
		}
	}
	d.t.Fatalf("no %s: every process closed its output", what)
}

// index returns the position of the first event matching match, or -1.
func (d *daemon) index(match func(event) bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, e := range d.events {
		if match(e) {
			return i
		}
	}
	return -1
}

// all returns every event so far that matches.
func (d *daemon) all(match func(event) bool) []event {
	d.mu.Lock()
	defer d.mu.Unlock()
	var es []event
	for _, e := range d.events {
		if match(e) {
			es = append(es, e)
		}
	}
	return es
}

func kind(k string) func(event) bool {
	return func(e event) bool { return e.kind == k }
}

func kindPid(k string, pid int) func(event) bool {
	return func(e event) bool { return e.kind == k && e.pid == pid }
}

func readyGen(n int) func(event) bool {
	return func(e event) bool { return e.kind == "ready" && e.int("gen") == n }
}

func (d *daemon) ready(n int) event {
	d.t.Helper()
	return d.nextEvent(fmt.Sprintf("ready line of generation %d", n), readyGen(n))
}

// signal sends sig to pid through the pidfd taken when it started.
func (d *daemon) signal(pid int, sig unix.Signal) {
	d.t.Helper()
	d.mu.Lock()
	fd, ok := d.pidfds[pid]
	d.mu.Unlock()
	if !ok || fd < 0 {
		d.t.Fatalf("pid %d is not one of the daemon's running processes", pid)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		d.t.Fatalf("signal %v to pid %d: %v", sig, pid, err)
	}
}

// waitExit waits until pid has exited.
func (d *daemon) waitExit(pid int) {
	d.t.Helper()
	d.mu.Lock()
	fd, ok := d.pidfds[pid]
	d.mu.Unlock()
	if !ok {
		d.t.Fatalf("pid %d is not one of the daemon's processes", pid)
	}
	if fd < 0 {
		return // it had exited when its start line was read
	}
	if err := waitPidfd(fd, waitTimeout); err != nil {
		d.t.Fatalf("pid %d: %v", pid, err)
	}
}

// alive reports whether pid is still running.
func (d *daemon) alive(pid int) bool {
	d.mu.Lock()
	fd, ok := d.pidfds[pid]
	d.mu.Unlock()
	if !ok || fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 0
}

// waitGen1 waits for generation 1 to exit and returns its status.
func (d *daemon) waitGen1() error {
	d.t.Helper()
	select {
	case err := <-d.gen1Done:
		d.gen1Done <- err // for cleanup
		return err
	case <-time.After(waitTimeout):
		d.t.Fatalf("generation 1 (pid %d) did not exit", d.cmd.Process.Pid)
		return nil
	}
}

// dialID connects to addr and returns the pid and generation the server
// greets with, after checking that it echoes. The connection is closed
// unless keep is set.
func dialID(t *testing.T, addr string, keep bool) (pid, gen int, c net.Conn) {
	t.Helper()
	d := net.Dialer{Timeout: waitTimeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if !keep {
		defer c.Close()
	} else {
		t.Cleanup(func() { c.Close() })
	}
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	br := bufio.NewReader(c)
	greeting, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read the greeting from %s: %v", addr, err)
	}
	if _, err := fmt.Sscanf(greeting, "pid %d gen %d\n", &pid, &gen); err != nil {
		t.Fatalf("greeting %q from %s: %v", greeting, addr, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Fatalf("echo from %s = %q, %v; want %q", addr, echo, err, "ping\n")
	}
	_ = c.SetDeadline(time.Time{})
	return pid, gen, c
}

// listenInode returns the inode of the TCP socket listening on
// 127.0.0.1:port, from /proc/net/tcp.
func listenInode(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("cannot read /proc/net/tcp: %v", err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	var found []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != local || f[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		found = append(found, f[9])
	}
	if len(found) != 1 {
		t.Fatalf("%d sockets listen on 127.0.0.1:%d, want 1: inodes %v", len(found), port, found)
	}
	return found[0]
}

// holdsSocket reports whether pid has a descriptor for the socket inode.
func holdsSocket(t *testing.T, pid int, inode string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err == nil && target == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		t.Fatalf("address %q has no port", addr)
	}
	return n
}

// upgradeResult waits for the outcome of the upgrade run by pid.
func (d *daemon) upgradeResult(pid int) event {
	return d.nextEvent(fmt.Sprintf("upgrade result of pid %d", pid), func(e event) bool {
		return e.pid == pid && (e.kind == "upgraded" || e.kind == "upgrade-failed")
	})
}

func checkUpgraded(t *testing.T, e event, newPID, newGen int) {
	t.Helper()
	if got := e.int("newpid"); got != newPID {
		t.Errorf("Result.PID = %d, want %d (the pid of the generation that said ready): %s", got, newPID, e)
	}
	if got := e.int("newgen"); got != newGen {
		t.Errorf("Result.Generation = %d, want %d: %s", got, newGen, e)
	}
}

func TestUpgradeHandsOverTheSocket(t *testing.T) {
	d := startDaemon(t, daemonConfig{})
	r1 := d.ready(1)
	addr := r1.kv["addr"]
	port := portOf(t, addr)
	if r1.kv["inherited"] != "false" {
		t.Errorf("generation 1 says its listener is inherited: %s", r1)
	}
	if pid, gen, _ := dialID(t, addr, false); pid != r1.pid || gen != 1 {
		t.Fatalf("%s is served by pid %d generation %d, want pid %d generation 1", addr, pid, gen, r1.pid)
	}
	inode := listenInode(t, port)
	if !holdsSocket(t, r1.pid, inode) {
		t.Fatalf("generation 1 (pid %d) holds no descriptor for the socket listening on %s (inode %s)", r1.pid, addr, inode)
	}

	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.ready(2)
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgraded" {
		t.Fatalf("generation 1's upgrade failed: %s", up)
	}
	checkUpgraded(t, up, r2.pid, 2)
	if r2.pid == r1.pid {
		t.Fatalf("generation 2 has generation 1's pid %d", r1.pid)
	}
	if r2.kv["addr"] != addr {
		t.Errorf("generation 2 listens on %s, want %s", r2.kv["addr"], addr)
	}
	if r2.kv["inherited"] != "true" {
		t.Errorf("generation 2 says its listener is not inherited: %s", r2)
	}
	if !holdsSocket(t, r2.pid, inode) {
		t.Errorf("generation 2 (pid %d) does not hold the socket generation 1 listened on (inode %s)", r2.pid, inode)
	}

	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
	d.nextEvent("exit line of generation 1", kindPid("exit", r1.pid))
	// The very same socket still listens, and generation 2 serves it.
	if got := listenInode(t, port); got != inode {
		t.Errorf("after generation 1 exited the socket on %s has inode %s, want %s", addr, got, inode)
	}
	if pid, gen, _ := dialID(t, addr, false); pid != r2.pid || gen != 2 {
		t.Fatalf("after the upgrade %s is served by pid %d generation %d, want pid %d generation 2", addr, pid, gen, r2.pid)
	}

	d.signal(r2.pid, unix.SIGTERM)
	d.nextEvent("stopped line of generation 2", kindPid("stopped", r2.pid))
	d.waitExit(r2.pid)
	if fails := d.all(kind("upgrade-failed")); len(fails) > 0 {
		t.Errorf("failed upgrades: %v", fails)
	}
}

func TestUpgradeFailureReason(t *testing.T) {
	failFile := filepath.Join(t.TempDir(), "fail")
	d := startDaemon(t, daemonConfig{failFile: failFile})
	r1 := d.ready(1)
	addr := r1.kv["addr"]

	for _, tc := range []struct {
		mode, reason string
	}{
		{"fail", failReason},     // Generation.Fail after New
		{"report", reportReason}, // ReportFailure before New
	} {
		if err := os.WriteFile(failFile, []byte(tc.mode), 0o644); err != nil {
			t.Fatal(err)
		}
		d.signal(r1.pid, unix.SIGHUP)
		failing := d.nextEvent("failing child ("+tc.mode+")", kind("failing"))
		if failing.kv["mode"] != tc.mode {
			t.Errorf("child failed with mode %s, want %s", failing.kv["mode"], tc.mode)
		}
		if tc.mode == "fail" && failing.int("gen") != 2 {
			t.Errorf("the failing child is generation %s, want 2", failing.kv["gen"])
		}
		up := d.upgradeResult(r1.pid)
		if up.kind != "upgrade-failed" {
			t.Fatalf("mode %s: generation 1's upgrade did not fail: %s", tc.mode, up)
		}
		if !strings.Contains(up.msg, tc.reason) {
			t.Errorf("mode %s: generation 1's Upgrade error %q does not contain the child's reason %q", tc.mode, up.msg, tc.reason)
		}
		d.waitExit(failing.pid)
		if !d.alive(r1.pid) {
			t.Fatalf("generation 1 exited after a failed upgrade")
		}
		if pid, gen, _ := dialID(t, addr, false); pid != r1.pid || gen != 1 {
			t.Fatalf("after a failed upgrade %s is served by pid %d generation %d, want pid %d generation 1", addr, pid, gen, r1.pid)
		}
	}

	// From now on the configuration is fine.
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.ready(2)
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgraded" {
		t.Fatalf("the upgrade after the failed ones failed: %s", up)
	}
	checkUpgraded(t, up, r2.pid, 2)
	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
	if pid, gen, _ := dialID(t, addr, false); pid != r2.pid || gen != 2 {
		t.Fatalf("after the upgrade %s is served by pid %d generation %d, want pid %d generation 2", addr, pid, gen, r2.pid)
	}
}

// TestUpgradeNotStarted: with no file at the executable's path, the
// upgrade fails before anything runs, with an error wrapping
// ErrNotStarted that names the cause; the generation serves on, and once
// the file is back the next upgrade succeeds.
func TestUpgradeNotStarted(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "daemon.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonConfig{bin: bin})
	r1 := d.ready(1)
	if err := os.Rename(bin, bin+".away"); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgrade-failed" || up.kv["notstarted"] != "true" || !strings.Contains(up.msg, "no such file or directory") {
		t.Fatalf("upgrade with no executable: %s, want a failure wrapping ErrNotStarted saying no such file", up)
	}
	if pid, gen, _ := dialID(t, r1.kv["addr"], false); pid != r1.pid || gen != 1 {
		t.Fatalf("after the failed upgrade %s is served by pid %d generation %d, want pid %d generation 1", r1.kv["addr"], pid, gen, r1.pid)
	}
	if err := os.Rename(bin+".away", bin); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.ready(2)
	checkUpgraded(t, d.upgradeResult(r1.pid), r2.pid, 2)
}

// TestPIDFileNeverNamesAFailedGeneration: the PID file names the serving
// generation, never one whose upgrade failed, even one that went as far as
// believing itself ready (its readiness byte lost, it is killed at the
// upgrade timeout). tableflip's own PIDFile is written by the child before
// it tells its parent.
func TestPIDFileNeverNamesAFailedGeneration(t *testing.T) {
	dir := t.TempDir()
	failFile := filepath.Join(dir, "fail")
	pidFile := filepath.Join(dir, "daemon.pid")
	d := startDaemon(t, daemonConfig{failFile: failFile, pidFile: pidFile, upgradeTimeout: 2 * time.Second})
	r1 := d.ready(1)
	checkPIDFile(t, pidFile, r1.pid)
	if err := os.WriteFile(failFile, []byte("lose-ready"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	failing := d.nextEvent("child losing its readiness byte", kind("failing"))
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgrade-failed" || !strings.Contains(up.msg, "timed out") {
		t.Fatalf("generation 1's upgrade: %s, want a timeout", up)
	}
	d.waitExit(failing.pid)
	checkPIDFile(t, pidFile, r1.pid)

	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.nextEvent("generation 2 ready", func(e event) bool {
		return readyGen(2)(e) && e.pid != failing.pid // that one said ready too
	})
	checkUpgraded(t, d.upgradeResult(r1.pid), r2.pid, 2)
	checkPIDFile(t, pidFile, r2.pid)
}

func checkPIDFile(t *testing.T, path string, want int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(want) {
		t.Fatalf("PID file names %s, want %d (the serving generation)", got, want)
	}
}

func TestUpgradeQueuedBehindDrainingParent(t *testing.T) {
	d := startDaemon(t, daemonConfig{})
	r1 := d.ready(1)
	addr := r1.kv["addr"]
	// A connection generation 1 serves until the test closes it, so it
	// keeps draining.
	pid, _, conn := dialID(t, addr, true)
	if pid != r1.pid {
		t.Fatalf("connection served by pid %d, want generation 1 (pid %d)", pid, r1.pid)
	}

	d.signal(r1.pid, unix.SIGHUP)
	r2 := d.ready(2)
	up := d.upgradeResult(r1.pid)
	if up.kind != "upgraded" {
		t.Fatalf("upgrade to generation 2 failed: %s", up)
	}

	// Two requests to generation 2 while generation 1 drains: the first
	// waits for the parent (and says so), the second joins it.
	d.signal(r2.pid, unix.SIGHUP)
	d.nextEvent("first SIGHUP taken by generation 2", func(e event) bool {
		return e.kind == "hup" && e.pid == r2.pid && e.int("n") == 1
	})
	d.nextEvent("generation 2 saying it waits for generation 1", func(e event) bool {
		return e.kind == "log" && e.pid == r2.pid && strings.Contains(e.msg, "waits for the previous generation")
	})
	d.signal(r2.pid, unix.SIGHUP)
	d.nextEvent("second request queued by generation 2", func(e event) bool {
		return e.kind == "log" && e.pid == r2.pid && strings.Contains(e.msg, "joins the one waiting") && strings.Contains(e.msg, "waiting=2")
	})
	if !d.alive(r1.pid) {
		t.Fatal("generation 1 exited while the test still holds a connection to it")
	}
	if starts := d.all(kind("start")); len(starts) != 2 {
		t.Fatalf("a third process started while generation 1 still drains: %v", starts)
	}
	if fails := d.all(kind("upgrade-failed")); len(fails) > 0 {
		t.Fatalf("an upgrade request failed instead of waiting: %v", fails)
	}

	conn.Close()
	if err := d.waitGen1(); err != nil {
		t.Fatalf("generation 1 exited with %v, want status 0", err)
	}
	r3 := d.ready(3)
	// Both requests get the one upgrade's result.
	for i := range 2 {
		up := d.nextEvent(fmt.Sprintf("Upgrade result %d of generation 2", i+1), func(e event) bool {
			return e.pid == r2.pid && (e.kind == "upgraded" || e.kind == "upgrade-failed")
		})
		if up.kind != "upgraded" {
			t.Fatalf("generation 2's request %d failed: %s", i+1, up)
		}
		checkUpgraded(t, up, r3.pid, 3)
	}
	// Generation 2 has no connections: it exits, and can start nothing
	// after that.
	d.nextEvent("exit line of generation 2", kindPid("exit", r2.pid))
	d.waitExit(r2.pid)

	gen1Exit := d.index(kindPid("exit", r1.pid))
	gen3Start := d.index(kindPid("start", r3.pid))
	upgradeStarted := d.index(func(e event) bool {
		return e.kind == "log" && e.pid == r2.pid && strings.Contains(e.msg, "upgrade started")
	})
	if gen1Exit < 0 || gen3Start < 0 || upgradeStarted < 0 {
		t.Fatalf("missing lines: exit of generation 1 at %d, upgrade started by generation 2 at %d, start of generation 3 at %d", gen1Exit, upgradeStarted, gen3Start)
	}
	if upgradeStarted < gen1Exit || gen3Start < gen1Exit {
		t.Errorf("generation 2 started its upgrade (line %d) or generation 3 started (line %d) before generation 1 exited (line %d)", upgradeStarted, gen3Start, gen1Exit)
	}
	if starts := d.all(kind("start")); len(starts) != 3 {
		t.Errorf("%d processes started, want 3 (one per generation): %v", len(starts), starts)
	}
	if readies := d.all(readyGen(3)); len(readies) != 1 {
		t.Errorf("%d generations 3 became ready, want 1: %v", len(readies), readies)
	}
	if fails := d.all(kind("upgrade-failed")); len(fails) > 0 {
		t.Errorf("failed upgrades: %v", fails)
	}
	if pid, gen, _ := dialID(t, addr, false); pid != r3.pid || gen != 3 {
		t.Errorf("%s is served by pid %d generation %d, want pid %d generation 3", addr, pid, gen, r3.pid)
	}
}

// TestReadyFailureThenStop: when Ready fails (here tableflip cannot write
// the PID file), the generation must still shut down cleanly, and Upgrade
// must not block until its context ends.
func TestReadyFailureThenStop(t *testing.T) {
	d := startDaemon(t, daemonConfig{role: "pidfile"})
	res := d.nextEvent("result of Ready", kind("ready-result"))
	if res.msg == "<nil>" {
		t.Fatalf("Ready succeeded although the PID file cannot be written")
	}
	up := d.nextEvent("result of Upgrade", kind("upgrade-result"))
	if up.kv["deadline"] == "true" || up.msg == "<nil>" {
		t.Errorf("Upgrade after a failed Ready = %s; want an error at once, not a wait until the context ends", up.msg)
	}
	stop := d.nextEvent("result of Stop", func(e event) bool { return strings.HasPrefix(e.kind, "stop-") })
	if stop.kind != "stop-returned" {
		t.Errorf("Stop after a failed Ready: %s", stop)
	}
	if err := d.waitGen1(); err != nil {
		t.Errorf("helper exited with %v", err)
	}
}
