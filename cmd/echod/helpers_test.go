package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/echod/echod/handoff/control"

	"golang.org/x/sys/unix"
)

// binDir holds the echod binaries built once for the process tests.
var binDir string

// buildEchod builds ./cmd/echod with the given version into dir/name.
func buildEchod(dir, name, ver string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+ver, "-o", out, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return out, nil
}

// echodBin returns the path of the test build of echod (version "test").
func echodBin(t testing.TB) string {
	t.Helper()
	p := filepath.Join(binDir, "echod")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test binary missing: %v", err)
	}
	return p
}

// logWatcher collects the log lines of every generation (they share the
// stderr pipe) and lets tests wait for a line.
type logWatcher struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	done    chan struct{}
}

func newLogWatcher(r io.Reader) *logWatcher {
	w := &logWatcher{changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if pid, err := strconv.Atoi(field(pidRe, sc.Text())); err == nil {
				// It just wrote: a pidfd names it from now on, even once
				// its pid is recycled.
				procs.open(pid)
			}
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

// waitFor returns the first line for which match is true, waiting up to
// timeout for it to be logged.
func (w *logWatcher) waitFor(t testing.TB, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; ; {
		w.mu.Lock()
		for ; i < len(w.lines); i++ {
			if match(w.lines[i]) {
				l := w.lines[i]
				w.mu.Unlock()
				return l
			}
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-w.done:
			w.mu.Lock()
			n := len(w.lines)
			w.mu.Unlock()
			if i >= n {
				t.Fatalf("waiting for %s: every echod process exited; log:\n%s", what, w.String())
			}
		case <-deadline:
			t.Fatalf("waiting for %s: not logged within %v; log:\n%s", what, timeout, w.String())
		}
	}
}

func (w *logWatcher) has(match func(string) bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if match(l) {
			return true
		}
	}
	return false
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

func contains(parts ...string) func(string) bool {
	return func(l string) bool {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return false
			}
		}
		return true
	}
}

var (
	pidRe  = regexp.MustCompile(`\bpid=(\d+)`)
	addrRe = regexp.MustCompile(`\baddr=(\S+)`)
)

func field(re *regexp.Regexp, line string) string {
	m := re.FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return m[1]
}

// instance is an echod started by a test, followed across generations.
type instance struct {
	t       testing.TB
	cmd     *exec.Cmd
	log     *logWatcher
	dir     string
	control string
	pidFile string
	addrs   []string // listening addresses of generation 1, in log order
	stopped sync.Once
}

// startEchod starts bin with args plus -pid-file and -control in a temp dir
// and waits until generation 1 is ready. Cleanup stops every generation.
func startEchod(t testing.TB, bin string, args ...string) *instance {
	t.Helper()
	return startEchodVia(t, nil, bin, args...)
}

// startEchodVia is startEchod through a wrapper that execs its arguments
// (wrap[0] is run with wrap[1:], then bin and its arguments).
func startEchodVia(t testing.TB, wrap []string, bin string, args ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, dir: dir, control: filepath.Join(dir, "ctl.sock"), pidFile: filepath.Join(dir, "echod.pid")}
	args = append([]string{"-pid-file", in.pidFile, "-control", in.control, "-log-level", "debug"}, args...)
	argv := append(append(append([]string(nil), wrap...), bin), args...)
	in.cmd = exec.Command(argv[0], argv[1:]...)
	in.cmd.Env = cleanEnv()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	in.cmd.Stderr = pw
	in.cmd.Stdout = pw
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	in.log = newLogWatcher(pr)
	t.Cleanup(in.stopAll)
	in.log.waitFor(t, 10*time.Second, "generation 1 ready", contains("msg=ready", "gen=1 "))
	for _, l := range strings.Split(in.log.String(), "\n") {
		if strings.Contains(l, "msg=listener") && strings.Contains(l, "gen=1 ") {
			in.addrs = append(in.addrs, field(addrRe, l))
		}
	}
	return in
}

// cleanEnv is the test's environment without systemd variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "RUNTIME_DIRECTORY=") || strings.HasPrefix(kv, "JOURNAL_STREAM=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// pids returns every pid that logged a line.
func (in *instance) pids() []int {
	seen := map[int]bool{}
	var out []int
	for _, l := range strings.Split(in.log.String(), "\n") {
		if p, err := strconv.Atoi(field(pidRe, l)); err == nil && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// stopAll sends SIGTERM to every generation and waits for the log pipe to
// close (every process exited); SIGKILL after a bound.
func (in *instance) stopAll() { in.stopped.Do(in.stopAllOnce) }

func (in *instance) stopAllOnce() {
	for _, p := range in.pids() {
		procs.signal(p, unix.SIGTERM)
	}
	select {
	case <-in.log.done:
	case <-time.After(15 * time.Second):
		for _, p := range in.pids() {
			procs.signal(p, unix.SIGKILL)
		}
		<-in.log.done
	}
	in.cmd.Wait()
	for _, p := range in.pids() {
		procs.forget(p)
	}
}

// procs holds a pidfd for every echod process that logged a line, so the
// tests signal and wait for the process they mean, not a recycled pid.
var procs = &pidfds{fds: map[int]int{}}

type pidfds struct {
	mu  sync.Mutex
	fds map[int]int
}

func (p *pidfds) open(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.fds[pid]; ok {
		return
	}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.fds[pid] = fd
	}
}

// fd returns pid's pidfd, opening one for a process no log line named.
func (p *pidfds) fd(pid int) (int, error) {
	p.mu.Lock()
	fd, ok := p.fds[pid]
	p.mu.Unlock()
	if ok {
		return fd, nil
	}
	p.open(pid)
	p.mu.Lock()
	defer p.mu.Unlock()
	if fd, ok := p.fds[pid]; ok {
		return fd, nil
	}
	return -1, unix.ESRCH
}

func (p *pidfds) signal(pid int, sig unix.Signal) error {
	fd, err := p.fd(pid)
	if err != nil {
		return err
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

func (p *pidfds) forget(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fd, ok := p.fds[pid]; ok {
		unix.Close(fd)
		delete(p.fds, pid)
	}
}

// signalPID sends sig to the echod process pid (through its pidfd).
func signalPID(t testing.TB, pid int, sig unix.Signal) {
	t.Helper()
	if err := procs.signal(pid, sig); err != nil {
		t.Fatalf("signal %v to pid %d: %v", sig, pid, err)
	}
}

// readyPID waits for generation gen to be ready and returns its pid.
func (in *instance) readyPID(gen int) int {
	in.t.Helper()
	l := in.log.waitFor(in.t, 15*time.Second, fmt.Sprintf("generation %d ready", gen), contains("msg=ready", fmt.Sprintf("gen=%d ", gen)))
	p, _ := strconv.Atoi(field(pidRe, l))
	return p
}

// reload asks the running generation to reload over the control socket.
func (in *instance) reload() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return control.Request(ctx, in.control, "reload")
}

// waitExit waits until process pid has exited (pidfd readable).
func waitExit(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	fd, err := procs.fd(pid)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd: %v", err)
		}
		if n == 0 {
			t.Fatalf("process %d still running after %v", pid, timeout)
		}
		return
	}
}

func alive(pid int) bool {
	fd, err := procs.fd(pid)
	if err != nil {
		return false
	}
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
	return err == nil && n == 0
}

// listenInode returns the inode of the TCP socket listening on addr, from
// /proc/net/tcp (or tcp6).
func listenInode(t testing.TB, addr string) string {
	t.Helper()
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" {
				return fs[9]
			}
		}
	}
	t.Fatalf("no listening socket for %s", addr)
	return ""
}

// holdsSocket reports whether process pid has an fd on socket inode.
func holdsSocket(t testing.TB, pid int, inode string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

// fdTargets lists what process pid's descriptors point at.
func fdTargets(t testing.TB, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+l)
	}
	return out
}

func fdCount(t testing.TB, pid int) int { return len(fdTargets(t, pid)) }

// pipesOf lists process pid's descriptors that are pipes ("4->pipe:[…]"),
// once tableflip has closed its own (see settledFDCount).
func pipesOf(t testing.TB, pid int) []string {
	t.Helper()
	settledFDCount(t, pid)
	var out []string
	for _, target := range fdTargets(t, pid) {
		if strings.Contains(target, "->pipe:") {
			out = append(out, target)
		}
	}
	return out
}

// handOverEnv lists the variables of process pid's environment, as the
// kernel shows it (set at exec), that carry activation or hand-over
// state: LISTEN_* and ECHOD_*. (tableflip's TABLEFLIP_HAS_PARENT_7DIU3,
// which only says that a parent exists, is not one of them.)
func handOverEnv(t testing.TB, pid int) []string {
	t.Helper()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "ECHOD_") {
			out = append(out, kv)
		}
	}
	return out
}

// settledFDCount returns pid's fd count once tableflip has closed its end
// of the pipe that told it the previous generation exited (fd 4, closed by
// a goroutine of its own just after that exit, with nothing to wait on):
// polled through /proc, bounded. (A first generation's fd 4 is no pipe.)
func settledFDCount(t testing.TB, pid int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/4", pid))
		if err != nil || !strings.HasPrefix(l, "pipe:") || time.Now().After(deadline) {
			return fdCount(t, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoConn is a client connection that checks every echo byte for byte.
type echoConn struct {
	net.Conn
	buf []byte
}

func dialEcho(network, addr string) (*echoConn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &echoConn{Conn: c, buf: make([]byte, 64<<10)}, nil
}

// mustEcho dials addr, checks one echo of n bytes and closes the
// connection at the end of the test.
func mustEcho(t testing.TB, network, addr string, n int) *echoConn {
	t.Helper()
	c, err := dialEcho(network, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.roundTrip(n); err != nil {
		t.Fatalf("echo on %s: %v", addr, err)
	}
	return c
}

// roundTrip sends n random bytes and checks they come back intact.
func (c *echoConn) roundTrip(n int) error {
	msg := make([]byte, n)
	rand.Read(msg)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := c.buf[:n]
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo corrupted")
	}
	return nil
}

// load runs short connections (connect, echo, close) from workers until
// stopped, and counts what failed.
type load struct {
	ok       atomic.Int64
	failures atomic.Int64
	refused  atomic.Int64 // of failures: connect refused
	mu       sync.Mutex
	errs     []string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func startLoad(network, addr string, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				err := func() error {
					c, err := dialEcho(network, addr)
					if err != nil {
						return fmt.Errorf("connect: %w", err)
					}
					defer c.Close()
					return c.roundTrip(256)
				}()
				if err != nil {
					l.failures.Add(1)
					if errors.Is(err, unix.ECONNREFUSED) {
						l.refused.Add(1)
					}
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000000")+" "+err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

// stop ends the load and returns (successes, failures, first errors).
func (l *load) stop() (int64, int64, []string) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failures.Load(), l.errs
}
