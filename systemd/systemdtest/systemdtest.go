// Package systemdtest boots a throwaway, real systemd user manager for a
// test, so that code meant to run under systemd (sd_notify, socket
// activation, reload, restart) can be tested against systemd itself rather
// than a mock.
//
// # How it works
//
// [Start] runs, as root, essentially (the full script also moves the manager
// into its own cgroup, bind-mounts a private terminal over /dev/console and
// passes --unit=[BootTarget]; see below)
//
//	unshare --mount --propagation private sh -c \
//	  'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd &&
//	   mkdir -p /run/systemd/system && exec /lib/systemd/systemd --user'
//
// with XDG_RUNTIME_DIR set to a fresh 0700 directory. The tmpfs on
// /run/systemd is private to the manager's mount namespace, so the host is
// not touched even when PID 1 is not systemd. The manager's control socket,
// notify socket ($XDG_RUNTIME_DIR/systemd/notify) and the unit directory
// [Manager.UnitDir] all live below that directory. The manager shares the
// network namespace with the test, so a ListenStream=127.0.0.1:PORT socket
// unit is reachable from the test.
//
// Each manager also gets:
//
//   - a cgroup of its own (/sdtest-N, in the cgroup2 and name=systemd
//     hierarchies), which it uses as the root of its tree, so its units run
//     in /sdtest-N/app.slice/<unit> and not in cgroups shared with other
//     managers; Stop kills anything left there and removes it;
//   - a private pseudo-terminal bind-mounted over /dev/console, where the
//     manager writes its own log; it is copied into [Manager.Log] instead of
//     going to the machine's (slow, shared) console;
//   - an empty boot target ([BootTarget]) and an empty basic.target, so
//     none of the distribution's default user units (dbus.socket, gpg-agent
//     sockets, timers) run.
//
// # Rules for tests
//
//   - Give every unit a unique name ([UniqueName]): without a private
//     cgroup (see above) cgroups are named after units and shared between
//     concurrently running managers, so stopping "same.service" in one
//     manager can kill "same.service" of another; names also show up in
//     shared places such as file names.
//   - There is no journald: let services log with
//     StandardOutput=append:/some/file (for example below
//     [Manager.RuntimeDir]).
//   - A unit restarted more than 5 times in 10s hits systemd's start rate
//     limit; tests that restart a lot should add a drop-in
//     ([Manager.DropIn]) with "[Unit]\nStartLimitIntervalSec=0\n".
//   - Do not use "systemctl --user is-system-running": it answers "offline"
//     here. [Start] waits for the SystemState property instead.
//
// Everything is bounded: boot (20s), each systemctl call (30s unless the
// caller's context has a deadline), [Manager.WaitFor] (caller's timeout) and
// shutdown (SIGTERM, 20s, then SIGKILL of the manager's process group).
// Cleanup is registered with t.Cleanup, so the manager is stopped and its
// runtime directory removed even when the test fails or panics.
//
// [Start] skips the test when systemd, systemctl, sh or unshare is missing,
// when not running as root, or when creating the mount namespace is not
// permitted (as in unprivileged containers).
//
// # System manager
//
// A user manager cannot set up a service's sandbox (DynamicUser=,
// ProtectSystem=, PrivateTmp=, ... fail with 226/NAMESPACE), so tests using
// [Start] switch the hardening off. [StartSystem] (Linux) boots systemd as
// the system manager instead: PID 1 of fresh cgroup, pid, mount, UTS, IPC
// and network namespaces, in cgroups of its own below the test's, on an
// overlay of the machine's root whose writes stay in memory, with the unit
// files and binaries of [SystemConfig] installed there (/etc/systemd/system,
// /usr/local/bin/echod). Unit files then run unchanged, hardening included,
// on their own loopback. [SystemConfig.Systemd] boots another systemd than
// the machine's: systemd 254 from [Backports254], whose tree is then
// installed in the root over the machine's. [System.Command] runs a program
// (a client, cat, journalctl) inside its namespaces through nsenter;
// [System.Dial] connects the test process itself to the manager's loopback;
// [System.Stop] powers it off and removes its cgroups. It is no security
// boundary.
package systemdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts used by the harness.
const (
	// BootTimeout bounds how long Start waits for the manager to be ready.
	BootTimeout = 20 * time.Second
	// StopTimeout bounds how long cleanup waits after SIGTERM before it
	// kills the manager's process group with SIGKILL.
	StopTimeout = 20 * time.Second
	// SystemctlTimeout is applied to a systemctl call whose context has no
	// deadline.
	SystemctlTimeout = 30 * time.Second
	// PollInterval is the interval between two polls in Start and WaitFor.
	PollInterval = 20 * time.Millisecond
)

// SystemdPath is the systemd binary started with --user.
const SystemdPath = "/lib/systemd/systemd"

// BootTarget is the unit the manager starts at boot instead of
// default.target. Start writes it, empty, to UnitDir, together with an
// empty basic.target (which every service requires by default) that
// replaces the distribution's. So none of the distribution's default user
// units (dbus.socket, gpg-agent sockets, timers) run: their cgroups would be
// shared with every other manager on the machine. dbus.socket, whose
// ExecStartPost runs in /app.slice/dbus.socket, was seen to hang in
// final-sigterm at shutdown with several managers around, keeping its
// manager from exiting. Tests that want such a unit must start it
// themselves.
const BootTarget = "systemdtest.target"

var bootUnits = map[string]string{
	BootTarget:     "[Unit]\nDescription=systemdtest boot target\n",
	"basic.target": "[Unit]\nDescription=Basic System (systemdtest: without the default sockets, timers and paths)\n",
}

// wrapperScript runs inside the private mount namespace created by unshare.
// $0 is the systemd binary, $1 what to bind-mount over /dev/console, and
// the remaining arguments are cgroup directories to move into.
const wrapperScript = `con=$1; shift; for cg; do echo $$ > "$cg/cgroup.procs" || echo "systemdtest: cannot move into cgroup $cg" >&2; done; ` +
	`mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && ` +
	`{ ! [ -e /dev/console ] || mount --bind "$con" /dev/console; } && exec "$0" --user --unit=` + BootTarget

// Manager is a running systemd user manager owned by one test.
type Manager struct {
	sd      Systemd
	rt      string
	logPath string
	cmd     *exec.Cmd
	cancel  context.CancelFunc // SIGKILLs the manager's process group
	done    chan struct{}      // closed once cmd.Wait has returned
	cgroups []string           // the manager's own cgroups, removed by Stop
	waitErr error              // result of cmd.Wait, valid after done

	stopMu  sync.Mutex
	stopped bool // Stop has run
	stopErr error
}

// Start boots a throwaway systemd user manager for t and waits (at most
// BootTimeout) until its SystemState is "running" or "degraded". It
// registers a cleanup that stops the manager (see [Manager.Stop]) and removes
// its runtime directory.
//
// Start calls t.Skip when a required program is missing, when the test does
// not run as root, or when the manager fails with a "not permitted"-like
// error; it calls t.Fatal, with the manager's log, on any other failure.
func Start(t testing.TB) *Manager {
	t.Helper()
	return StartWith(t, Installed())
}

// StartWith is [Start] with the given installation of systemd (see
// [Backports254]); [Manager.Systemctl] then runs its systemctl.
func StartWith(t testing.TB, sd Systemd) *Manager {
	t.Helper()
	if fi, err := os.Stat(sd.Manager); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Skipf("systemdtest: %s not available (%v); a real systemd is needed", sd.Manager, err)
	}
	for _, prog := range []string{sd.Systemctl, "unshare", "sh"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("systemdtest: %s not found in PATH: %v", prog, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skipf("systemdtest: a systemd user manager in a private mount namespace needs root (euid %d)", os.Geteuid())
	}

	// Keep the path short: unix socket paths below it are limited to 108
	// bytes, and t.TempDir() paths can get long.
	rt, err := os.MkdirTemp("", "sdtest-")
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	if err := os.Chmod(rt, 0o700); err != nil {
		_ = os.RemoveAll(rt)
		t.Fatalf("systemdtest: %v", err)
	}
	m := &Manager{sd: sd, rt: rt, logPath: filepath.Join(rt, "manager.log"), done: make(chan struct{})}
	if err := os.MkdirAll(m.UnitDir(), 0o755); err != nil {
		_ = os.RemoveAll(rt)
		t.Fatalf("systemdtest: %v", err)
	}
	for name, content := range bootUnits {
		if err := os.WriteFile(filepath.Join(m.UnitDir(), name), []byte(content), 0o644); err != nil {
			_ = os.RemoveAll(rt)
			t.Fatalf("systemdtest: %v", err)
		}
	}
	logf, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		_ = os.RemoveAll(rt)
		t.Fatalf("systemdtest: %v", err)
	}
	// The manager's own log goes to /dev/console: give it a private
	// terminal whose output is appended to the log file too. Without one,
	// silence it rather than write to the machine's console.
	consoleDev := "/dev/null"
	var cons *console
	if clog, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		if cons, err = newConsole(clog); err == nil {
			consoleDev = cons.path
		} else {
			clog.Close()
			fmt.Fprintf(logf, "systemdtest: no private console, manager log discarded: %v\n", err)
		}
	}

	cgroups, err := makeCgroups(filepath.Base(rt))
	if err != nil {
		fmt.Fprintf(logf, "systemdtest: no private cgroup, units share cgroups with other managers: %v\n", err)
	}
	m.cgroups = cgroups

	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--mount", "--propagation", "private",
		"sh", "-c", wrapperScript, sd.Manager, consoleDev}, cgroups...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = m.env()
	cmd.Dir = rt
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so cleanup can kill leftovers.
		Setpgid: true,
		// If the test binary dies without running cleanups, ask the
		// manager to shut down (SIGTERM makes it stop its units and exit).
		Pdeathsig: syscall.SIGTERM,
	}
	// Only used when cancel is called, i.e. when SIGTERM was not enough.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	m.cmd, m.cancel = cmd, cancel

	err = cmd.Start()
	logf.Close() // the child has its own copy
	if err != nil {
		cancel()
		if cons != nil {
			cons.close()
		}
		m.removeCgroups()
		_ = os.RemoveAll(rt)
		t.Fatalf("systemdtest: starting manager: %v", err)
	}
	go func() {
		m.waitErr = cmd.Wait()
		if cons != nil {
			cons.close()
		}
		close(m.done)
	}()
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("systemdtest: %v", err)
		}
		if err := os.RemoveAll(rt); err != nil {
			t.Errorf("systemdtest: removing runtime dir: %v", err)
		}
	})

	if err := m.waitReady(); err != nil {
		log := m.Log()
		if m.exited() && notPermitted(log) {
			t.Skipf("systemdtest: cannot run a systemd user manager here (not permitted): %v\nmanager log:\n%s", err, log)
		}
		t.Fatalf("systemdtest: %v\nmanager log:\n%s", err, log)
	}
	return m
}

// waitReady polls the manager's SystemState until it is running or
// degraded, the manager exits, or BootTimeout passes.
func (m *Manager) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	private := filepath.Join(m.rt, "systemd", "private")
	var last string
	for {
		if m.exited() {
			return fmt.Errorf("manager exited during boot: %v", m.waitErr)
		}
		if _, err := os.Stat(private); err == nil {
			out, err := m.Systemctl(ctx, "show", "-p", "SystemState", "--value")
			state := strings.TrimSpace(out)
			if err == nil && (state == "running" || state == "degraded") {
				return nil
			}
			if err != nil {
				last = err.Error()
			} else {
				last = "SystemState=" + state
			}
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = "control socket " + private + " never appeared"
			}
			return fmt.Errorf("manager not ready after %v (last: %s)", BootTimeout, last)
		case <-m.done:
		case <-time.After(PollInterval):
		}
	}
}

func (m *Manager) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// notPermitted reports whether a manager log looks like the environment
// forbids what Start needs (namespaces, mounts).
func notPermitted(log string) bool {
	l := strings.ToLower(log)
	for _, s := range []string{"operation not permitted", "permission denied", "must be superuser", "only root can"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// env is the environment for the manager and for systemctl: the test's
// environment without anything that would point at another systemd or bus,
// plus XDG_RUNTIME_DIR.
func (m *Manager) env() []string {
	drop := []string{
		"XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET",
		"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC",
		"INVOCATION_ID", "MANAGERPID", "SYSTEMD_EXEC_PID", "JOURNAL_STREAM",
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	return m.sd.env(append(env, "XDG_RUNTIME_DIR="+m.rt))
}

// Systemd is the installation this manager runs.
func (m *Manager) Systemd() Systemd { return m.sd }

// RuntimeDir returns the manager's XDG_RUNTIME_DIR, a 0700 directory
// removed at cleanup. Tests may put their own files (logs, outputs) there.
func (m *Manager) RuntimeDir() string { return m.rt }

// UnitDir returns $XDG_RUNTIME_DIR/systemd/user, a unit directory this
// manager reads.
func (m *Manager) UnitDir() string { return filepath.Join(m.rt, "systemd", "user") }

// PID returns the process ID of the manager (systemd --user).
func (m *Manager) PID() int { return m.cmd.Process.Pid }

// Log returns the manager's stdout and stderr so far, for failure messages.
func (m *Manager) Log() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(manager log unavailable: %v)", err)
	}
	return string(b)
}

// Install writes the unit file UnitDir()/name with the given content and
// runs daemon-reload. It calls t.Fatal on failure.
func (m *Manager) Install(t testing.TB, name, content string) {
	t.Helper()
	if name == "" || strings.ContainsRune(name, '/') {
		t.Fatalf("systemdtest: bad unit name %q", name)
	}
	if err := os.WriteFile(filepath.Join(m.UnitDir(), name), []byte(content), 0o644); err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	m.MustSystemctl(t, "daemon-reload")
}

// DropIn writes the drop-in UnitDir()/<unit>.d/<name>.conf (".conf" is
// added unless name already has it) and runs daemon-reload. It calls
// t.Fatal on failure.
func (m *Manager) DropIn(t testing.TB, unit, name, content string) {
	t.Helper()
	if unit == "" || name == "" || strings.ContainsRune(unit, '/') || strings.ContainsRune(name, '/') {
		t.Fatalf("systemdtest: bad drop-in %q for unit %q", name, unit)
	}
	if !strings.HasSuffix(name, ".conf") {
		name += ".conf"
	}
	dir := filepath.Join(m.UnitDir(), unit+".d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	m.MustSystemctl(t, "daemon-reload")
}

// Systemctl runs "systemctl --user --no-pager args..." against this manager
// and returns its combined output. When ctx has no deadline, the call is
// bounded by SystemctlTimeout. The error, if any, includes the output.
func (m *Manager) Systemctl(ctx context.Context, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, SystemctlTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, m.sd.Systemctl, append([]string{"--user", "--no-pager"}, args...)...)
	cmd.Env = m.env()
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return string(out), fmt.Errorf("systemctl --user %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustSystemctl is [Manager.Systemctl] with a SystemctlTimeout bound that
// calls t.Fatal, with the manager's log, on error.
func (m *Manager) MustSystemctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := m.Systemctl(context.Background(), args...)
	if err != nil {
		t.Fatalf("systemdtest: %v\nmanager log:\n%s", err, m.Log())
	}
	return out
}

// Show returns the given properties of unit ("systemctl --user show -p
// props unit"), or all of them when props is empty. It calls t.Fatal on
// failure. A unit that does not exist yields LoadState=not-found, not an
// error.
func (m *Manager) Show(t testing.TB, unit string, props ...string) map[string]string {
	t.Helper()
	out, err := m.Systemctl(context.Background(), showArgs(unit, props)...)
	if err != nil {
		t.Fatalf("systemdtest: %v\nmanager log:\n%s", err, m.Log())
	}
	return ParseShow(out)
}

func showArgs(unit string, props []string) []string {
	args := []string{"show"}
	if len(props) > 0 {
		args = append(args, "-p", strings.Join(props, ","))
	}
	return append(args, unit)
}

// ParseShow parses the KEY=VALUE lines printed by "systemctl show". Lines
// without "=" are ignored; a value may itself contain "=".
func ParseShow(out string) map[string]string {
	props := make(map[string]string)
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), "=")
		if ok && k != "" {
			props[k] = v
		}
	}
	return props
}

// WaitFor polls the given properties of unit every PollInterval until cond
// returns true for them, and returns them. If that does not happen within
// timeout, it calls t.Fatal with the last values seen and the manager log.
// It always polls at least once.
func (m *Manager) WaitFor(t testing.TB, timeout time.Duration, unit string, cond func(map[string]string) bool, props ...string) map[string]string {
	t.Helper()
	return waitFor(t, timeout, unit, cond, props, m.Systemctl, func() string { return "manager log:\n" + m.Log() })
}

// waitFor is WaitFor for either kind of manager: systemctl runs its
// systemctl, diagnose says what to show on failure.
func waitFor(t testing.TB, timeout time.Duration, unit string, cond func(map[string]string) bool, props []string,
	systemctl func(context.Context, ...string) (string, error), diagnose func() string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last map[string]string
	var lastErr error
	for {
		out, err := systemctl(ctx, showArgs(unit, props)...)
		if err == nil {
			last, lastErr = ParseShow(out), nil
			if cond(last) {
				return last
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("systemdtest: %s: condition not met within %v\nlast properties: %s\nlast error: %v\n%s",
				unit, timeout, formatProps(last), lastErr, diagnose())
			return nil
		case <-time.After(PollInterval):
		}
	}
}

func formatProps(p map[string]string) string {
	if p == nil {
		return "(none)"
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%q", k, p[k])
	}
	return b.String()
}

// Stop shuts the manager down: SIGTERM (the manager stops its units, then
// exits), wait up to StopTimeout, then SIGKILL the manager's process group
// and wait up to 5s more. It is idempotent and is called by the cleanup
// registered in Start; call it directly to observe a stopped manager. It
// returns an error if SIGKILL was needed, the manager did not die, or it
// exited unsuccessfully after SIGTERM. It does not remove RuntimeDir.
func (m *Manager) Stop() error {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	if m.stopped {
		return m.stopErr
	}
	m.stopped = true
	m.stopErr = m.stop()
	return m.stopErr
}

func (m *Manager) stop() error {
	err := m.stopManager()
	m.cancel()
	if cerr := m.removeCgroups(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// removeCgroups kills what is left in the manager's cgroups (nothing, after
// a clean shutdown) and removes them.
func (m *Manager) removeCgroups() error {
	var errs []error
	for _, dir := range m.cgroups {
		killed, err := removeCgroup(dir, 5*time.Second)
		if killed > 0 {
			m.appendLog(fmt.Sprintf("systemdtest: killed %d leftover processes in %s", killed, dir))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) appendLog(line string) {
	if f, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
}

func (m *Manager) stopManager() error {
	if m.exited() {
		return nil // died on its own; callers have seen that already
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM) // fails only if it already exited
	select {
	case <-m.done:
		if m.waitErr != nil {
			return fmt.Errorf("manager (pid %d) exited with %v after SIGTERM\nmanager log:\n%s", m.PID(), m.waitErr, m.Log())
		}
		return nil
	case <-time.After(StopTimeout):
	}
	diag := m.diagnose()
	m.cancel() // SIGKILL to the process group, via cmd.Cancel
	select {
	case <-m.done:
		return fmt.Errorf("manager (pid %d) did not exit within %v of SIGTERM; killed its process group\n%s\nmanager log:\n%s", m.PID(), StopTimeout, diag, m.Log())
	case <-time.After(5 * time.Second):
		return fmt.Errorf("manager (pid %d) survived SIGKILL for 5s\nmanager log:\n%s", m.PID(), m.Log())
	}
}

// UniqueName returns prefix + "-" + 16 random hex digits, for unit names
// that cannot collide with those of other tests or managers.
func UniqueName(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return prefix + "-" + hex.EncodeToString(b[:])
}

// diagnose describes a manager that does not stop: its pending jobs and its
// process tree.
func (m *Manager) diagnose() string {
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := m.Systemctl(ctx, "list-jobs")
	if err != nil {
		fmt.Fprintf(&b, "list-jobs: %v\n", err)
	} else {
		fmt.Fprintf(&b, "list-jobs:\n%s", out)
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) == 4 && f[3] == "running" {
				p, err := m.Systemctl(ctx, "show", "-p", "ActiveState,SubState,ControlPID,MainPID,ControlGroup,Result", f[1])
				fmt.Fprintf(&b, "%s: %s %v\n", f[1], strings.ReplaceAll(strings.TrimSpace(p), "\n", " "), err)
			}
		}
	}
	b.WriteString("processes:\n")
	procTree(&b, m.PID(), "  ", 0)
	return b.String()
}

func procTree(b *strings.Builder, pid int, indent string, depth int) {
	read := func(name string) string {
		d, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(strings.ReplaceAll(string(d), "\x00", " "))
	}
	cg := read("cgroup")
	if i := strings.LastIndex(cg, "0::"); i >= 0 {
		cg = cg[i+3:]
	}
	fmt.Fprintf(b, "%s%d %s wchan=%s cgroup=%s\n", indent, pid, read("cmdline"), read("wchan"), cg)
	if depth > 8 {
		return
	}
	for _, c := range strings.Fields(read(fmt.Sprintf("task/%d/children", pid))) {
		var cpid int
		if _, err := fmt.Sscan(c, &cpid); err == nil {
			procTree(b, cpid, indent+"  ", depth+1)
		}
	}
}
