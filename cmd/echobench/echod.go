package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parseLogLine splits a log/slog text line (key=value, values quoted Go
// style when they need it) into its fields.
func parseLogLine(line string) map[string]string {
	kv := map[string]string{}
	s := strings.TrimSpace(line)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		sp := strings.IndexByte(s, ' ')
		if sp >= 0 && sp < eq { // a bare word: skip it
			s = strings.TrimLeft(s[sp:], " ")
			continue
		}
		key, rest := s[:eq], s[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				val, rest = rest, ""
			} else {
				val, _ = strconv.Unquote(q)
				rest = rest[len(q):]
			}
		} else if i := strings.IndexByte(rest, ' '); i >= 0 {
			val, rest = rest[:i], rest[i:]
		} else {
			val, rest = rest, ""
		}
		kv[key] = val
		s = strings.TrimLeft(rest, " ")
	}
	return kv
}

// listenerAddr returns the bound address announced by an echod
// "msg=listener" log line (parsed by parseLogLine), or "" if it is not one.
func listenerAddr(kv map[string]string) string {
	if kv["msg"] != "listener" {
		return ""
	}
	return kv["addr"]
}

// logTime returns the time a log line was written (its time= field, with
// millisecond precision), or now if it has none: when the machine is
// busy, reading the pipe may lag behind the daemon.
func logTime(kv map[string]string, now time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, kv["time"]); err == nil {
		return t
	}
	return now
}

// handOver is what an old generation's "connection hand-over" log line
// tells (see handoff.HandOverResult).
type handOver struct {
	gen               int // the old generation
	at                time.Time
	succeeded         bool // upgrade_succeeded
	moved, kept, lost int
	took              time.Duration // from the pause to the outcome; -1 if absent
	copy, move        time.Duration // a staged hand-over's parts (copy=, move=); -1 if absent
	err               string        // "" for err=<nil>
}

// parseHandOver reads a "connection hand-over" line (parsed by
// parseLogLine); ok is false for any other line.
func parseHandOver(kv map[string]string) (h handOver, ok bool) {
	if kv["msg"] != "connection hand-over" {
		return handOver{}, false
	}
	h = handOver{succeeded: kv["upgrade_succeeded"] == "true", took: -1, copy: -1, move: -1}
	h.gen, _ = strconv.Atoi(kv["gen"])
	h.moved, _ = strconv.Atoi(kv["moved"])
	h.kept, _ = strconv.Atoi(kv["kept"])
	h.lost, _ = strconv.Atoi(kv["lost"])
	for k, p := range map[string]*time.Duration{"took": &h.took, "copy": &h.copy, "move": &h.move} {
		if d, err := time.ParseDuration(kv[k]); err == nil {
			*p = d
		}
	}
	if e := kv["err"]; e != "<nil>" {
		h.err = e
	}
	return h, true
}

// genInfo is what the log tells about one generation.
type genInfo struct {
	gen     int
	pid     int
	readyAt time.Time // zero until "msg=ready"
	exitAt  time.Time // zero until "msg=exiting"
}

// echodProc is a running echod and every generation it spawned. The
// first generation is started in its own process group, which later
// generations (forked by tableflip) inherit.
type echodProc struct {
	argv    []string
	cmd     *exec.Cmd
	pidFile string
	addr    string

	mu      sync.Mutex
	gens    map[int]*genInfo      // by pid
	waits   int                   // "upgrade waits for the previous generation" lines
	hands   []handOver            // "connection hand-over" lines, in order
	detach  map[int]time.Duration // detach= of the last "connection hand-over" line, by generation
	tail    []string              // last log lines, for error messages
	changed chan struct{}         // closed and replaced on every log line

	logDone  chan struct{} // the log pipe reached EOF: every generation is gone
	waitDone chan struct{} // cmd.Wait returned
	reapStop chan struct{}
	reapDone chan struct{}
	logFile  *os.File
}

// cleanEnv is the environment for servers: without anything that would
// make echod believe it runs under systemd or share a control socket.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "RUNTIME_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM":
			continue
		}
		env = append(env, e)
	}
	return env
}

// startEchod starts echod listening on 127.0.0.1:0 with a pid file in
// dir, waits until generation 1 is ready and returns it. logPath receives
// a copy of all generations' stderr.
func startEchod(ctx context.Context, bin, dir, name string, extra ...string) (*echodProc, error) {
	pidFile := dir + "/" + name + ".pid"
	argv := append([]string{bin, "-listen", "127.0.0.1:0", "-pid-file", pidFile, "-control", ""}, extra...)
	logFile, err := os.Create(dir + "/" + name + ".log")
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	cmd.Stdout = pw
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	e := &echodProc{
		argv: argv, cmd: cmd, pidFile: pidFile,
		gens:     map[int]*genInfo{},
		detach:   map[int]time.Duration{},
		changed:  make(chan struct{}),
		logDone:  make(chan struct{}),
		waitDone: make(chan struct{}),
		reapStop: make(chan struct{}),
		reapDone: make(chan struct{}),
		logFile:  logFile,
	}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logFile.Close()
		return nil, fmt.Errorf("start echod: %w", err)
	}
	pw.Close() // the generations hold the write end; EOF when all are gone
	go e.readLog(pr)
	go func() { _ = cmd.Wait(); close(e.waitDone) }()
	go e.reap()

	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		ready := e.addr != "" && e.readyGen() > 0
		ch := e.changed
		e.mu.Unlock()
		if ready {
			return e, nil
		}
		select {
		case <-ch:
		case <-e.logDone:
			e.Stop()
			return nil, fmt.Errorf("echod exited before it was ready:\n%s", e.logTail())
		case <-deadline.C:
			e.Stop()
			return nil, fmt.Errorf("echod not ready after 15s:\n%s", e.logTail())
		case <-ctx.Done():
			e.Stop()
			return nil, ctx.Err()
		}
	}
}

func (e *echodProc) readLog(r io.ReadCloser) {
	defer close(e.logDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		_, _ = e.logFile.WriteString(line + "\n")
		kv := parseLogLine(line)
		now := logTime(kv, time.Now())
		e.mu.Lock()
		e.tail = append(e.tail, line)
		if len(e.tail) > 20 {
			e.tail = e.tail[1:]
		}
		pid, _ := strconv.Atoi(kv["pid"])
		gen, _ := strconv.Atoi(kv["gen"])
		if h, ok := parseHandOver(kv); ok {
			h.at = now
			e.hands = append(e.hands, h)
			// The connections are taken out of the server a batch at a
			// time; the hand-over line sums it up.
			if d, err := time.ParseDuration(kv["detach"]); err == nil && gen > 0 {
				e.detach[gen] = d
			}
		}
		if pid > 0 {
			g := e.gens[pid]
			if g == nil {
				g = &genInfo{gen: gen, pid: pid}
				e.gens[pid] = g
			}
			switch kv["msg"] {
			case "ready":
				g.readyAt = now
			case "exiting":
				g.exitAt = now
			case "listener":
				if e.addr == "" {
					e.addr = listenerAddr(kv)
				}
			case "upgrade waits for the previous generation to finish draining":
				e.waits++
			}
		}
		close(e.changed)
		e.changed = make(chan struct{})
		e.mu.Unlock()
	}
	_ = e.logFile.Close()
}

// reap waits for generations that were re-parented to this process (it is
// a child subreaper), so they do not linger as zombies. Only pids seen in
// the log are waited for; the first generation is cmd's.
func (e *echodProc) reap() {
	defer close(e.reapDone)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	done := map[int]bool{}
	pass := func() {
		e.mu.Lock()
		var pids []int
		for pid := range e.gens {
			if pid != e.cmd.Process.Pid && !done[pid] {
				pids = append(pids, pid)
			}
		}
		e.mu.Unlock()
		for _, pid := range pids {
			var ws unix.WaitStatus
			n, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if n == pid || (errors.Is(err, unix.ECHILD) && !exists(pid)) {
				done[pid] = true
			}
		}
	}
	for {
		pass()
		select {
		case <-e.reapStop:
			pass()
			return
		case <-t.C:
		}
	}
}

func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// readyGen returns the highest generation that logged "ready". e.mu held.
func (e *echodProc) readyGen() int {
	n := 0
	for _, g := range e.gens {
		if !g.readyAt.IsZero() {
			n = max(n, g.gen)
		}
	}
	return n
}

// ReadyGen returns the highest generation that is ready.
func (e *echodProc) ReadyGen() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.readyGen()
}

// Gens returns what is known of every generation, by generation number.
func (e *echodProc) Gens() map[int]genInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[int]genInfo{}
	for _, g := range e.gens {
		m[g.gen] = *g
	}
	return m
}

// UpgradeWaits returns how many upgrades had to wait for a draining
// generation.
func (e *echodProc) UpgradeWaits() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waits
}

// HandOver returns the last "connection hand-over" logged by generation
// gen, if any.
func (e *echodProc) HandOver(gen int) (handOver, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.hands) - 1; i >= 0; i-- {
		if e.hands[i].gen == gen {
			return e.hands[i], true
		}
	}
	return handOver{}, false
}

// HandOverList returns every "connection hand-over" logged, in order.
func (e *echodProc) HandOverList() []handOver {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]handOver(nil), e.hands...)
}

// HandOvers returns how many "connection hand-over" lines were logged.
func (e *echodProc) HandOvers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hands)
}

// DetachTook returns how long generation gen's last hand-over spent
// taking connections out of its server ("connection hand-over" detach=),
// if it logged one.
func (e *echodProc) DetachTook(gen int) (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.detach[gen]
	return d, ok
}

// ServingPID returns the pid in the pid file.
func (e *echodProc) ServingPID() (int, error) {
	b, err := os.ReadFile(e.pidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// WaitReadyGen waits until generation gen (or a later one) is ready.
func (e *echodProc) WaitReadyGen(gen int, timeout time.Duration) bool {
	return e.waitFor(timeout, func() bool { return e.readyGen() >= gen })
}

// WaitExited waits until generation gen has logged "exiting" (or every
// generation is gone).
func (e *echodProc) WaitExited(gen int, timeout time.Duration) bool {
	return e.waitFor(timeout, func() bool {
		for _, g := range e.gens {
			if g.gen == gen && !g.exitAt.IsZero() {
				return true
			}
		}
		return false
	})
}

// waitFor waits until cond, called with e.mu held, is true; false when
// the log ended or timeout passed first.
func (e *echodProc) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		ok := cond()
		ch := e.changed
		e.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-e.logDone:
			return false
		case <-deadline.C:
			return false
		}
	}
}

func (e *echodProc) logTail() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.tail, "\n")
}

// Stop sends SIGTERM to every generation still alive, waits up to 15s for
// them to exit, then SIGKILLs the process group (anything left, including
// a generation that had not logged yet).
func (e *echodProc) Stop() {
	deadline := time.Now().Add(15 * time.Second)
	sent := map[int]bool{}
	for {
		e.mu.Lock()
		var live []int
		for pid := range e.gens {
			if alive(pid) {
				live = append(live, pid)
			}
		}
		e.mu.Unlock()
		if len(live) == 0 || time.Now().After(deadline) {
			break
		}
		for _, pid := range live {
			if !sent[pid] {
				sent[pid] = true
				_ = unix.Kill(pid, unix.SIGTERM)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = unix.Kill(-e.cmd.Process.Pid, unix.SIGKILL)
	select {
	case <-e.logDone:
	case <-time.After(5 * time.Second):
	}
	select {
	case <-e.waitDone:
	case <-time.After(5 * time.Second):
	}
	select {
	case <-e.reapStop:
	default:
		close(e.reapStop)
	}
	<-e.reapDone
}
