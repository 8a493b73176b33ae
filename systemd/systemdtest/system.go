//go:build linux

package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A system manager is systemd booted as PID 1 of fresh cgroup, pid, mount,
// UTS, IPC and network namespaces, on an overlay of the machine's own root
// whose writes stay in memory. Unlike a user manager it can set up a
// service's sandbox (DynamicUser=, ProtectSystem=, PrivateTmp=, ...), so
// unit files run exactly as shipped. See [StartSystem] for the recipe.

// SystemBinary is where [SystemConfig.Binary] is installed inside the
// system manager's root: the path the shipped unit files name.
const SystemBinary = "/usr/local/bin/echod"

// SystemUnitDir is where [SystemConfig.Units] are installed inside the
// system manager's root.
const SystemUnitDir = "/etc/systemd/system"

// systemPath is the PATH of the system manager's boot script and of the
// programs [System.Command] runs inside.
const systemPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maskedUnits are masked in the system manager's root: they would change
// the machine's global kernel settings or mount what a container must not
// (binfmt_misc, configfs, debugfs, tracefs, fusectl), or start timers
// nobody needs in a test.
var maskedUnits = []string{
	"systemd-sysctl.service",
	"systemd-modules-load.service",
	"systemd-binfmt.service",
	"proc-sys-fs-binfmt_misc.automount",
	"proc-sys-fs-binfmt_misc.mount",
	"sys-kernel-config.mount",
	"sys-kernel-debug.mount",
	"sys-kernel-tracing.mount",
	"sys-fs-fuse-connections.mount",
	"kmod-static-nodes.service",
	"timers.target",
}

// SystemConfig is what [StartSystem] installs in the system manager's root
// before it boots. Everything lands in the overlay (in memory), never on
// the machine's root filesystem.
type SystemConfig struct {
	// Systemd is the systemd the manager runs; the zero value is the
	// machine's own ([Installed]). When its Root is set (as by
	// [Backports254]), the tree there is first copied into the root, over
	// the machine's systemd (its manager, helpers such as systemd-journald
	// and systemd-shutdown, unit files and libraries), and PID 1 is its
	// manager at the same place inside (/lib/systemd/systemd); else PID 1
	// is its Manager, with LibDir as LD_LIBRARY_PATH. Either way
	// [System.Systemctl] runs its Systemctl, and [System.Journal] the
	// journalctl next to it when there is one.
	Systemd Systemd
	// Binary is a file on the host installed, mode 0755, at SystemBinary
	// (/usr/local/bin/echod). Empty: none.
	Binary string
	// Units maps unit file names to their contents, installed, mode 0644,
	// in SystemUnitDir (/etc/systemd/system). They are loaded but not
	// started: a test starts what it needs with Systemctl.
	Units map[string]string
	// Files maps absolute paths inside the root to further files.
	Files map[string]SystemFile
}

// SystemFile is a file for [SystemConfig.Files]: Data, or else the content
// of the host file Source.
type SystemFile struct {
	Data   []byte
	Source string
	// Mode holds the permission bits; 0 means 0644.
	Mode fs.FileMode
}

// System is a running systemd system manager owned by one test; see
// [StartSystem].
type System struct {
	name       string
	sd         Systemd
	systemctl  string // the programs run by Systemctl and Journal
	journalctl string
	cmd        *exec.Cmd // unshare, whose child is the manager
	pid        int       // host pid of the manager (PID 1 inside)
	cgroups    []string  // the manager's cgroups on the host, removed by Stop
	out        *syncBuffer
	done       chan struct{} // closed once cmd.Wait has returned
	waitErr    error         // result of cmd.Wait, valid after done
	booted     bool          // StartSystem saw it ready (else it reported why not)

	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

// StartSystem boots a throwaway systemd system manager for t, with cfg's
// files installed in its root, and waits (at most BootTimeout) until
// "systemctl is-system-running" says running or degraded. It registers a
// cleanup that stops the manager (see [System.Stop]).
//
// In order: a cgroup named after the manager is made below the test's
// current cgroup in every hierarchy of /proc/self/cgroup; a shell moves
// into them and execs
//
//	unshare --cgroup --pid --fork --kill-child --mount --propagation private \
//	  --uts --ipc --net env -i container=NAME PATH=... sh -c SCRIPT
//
// where SCRIPT, as PID 1 of the new pid namespace, builds a root: an overlay
// of / with its writes in a tmpfs; a fresh proc with /proc/sys read-only; a
// read-only sysfs; a tmpfs on /sys/fs/cgroup with fresh mounts of every
// cgroup hierarchy (rooted at the cgroups above by the cgroup namespace),
// remounted read-only; a minimal /dev; tmpfs on /run and /tmp. It pivots
// into the root, copies cfg.Systemd.Root there if set, then cfg's files,
// masks maskedUnits, sets the hostname to NAME and execs the manager
// (SystemdPath unless cfg.Systemd says otherwise) with --system
// --unit=basic.target --log-target=journal.
// The network namespace has its own loopback (the manager brings lo up), so
// a socket unit on 127.0.0.1:7007 clashes with nothing on the machine; reach
// it with a client run by [System.Command].
//
// This is no security boundary: the manager is root of the machine's user
// namespace and shares its cgroup-v1 hierarchies. The harness writes
// nothing to the machine's root filesystem (cfg's files are streamed into
// the overlay on the boot script's stdin). That filesystem is the overlay's
// lower layer: what others change there while a manager runs may or may not
// show inside (overlayfs leaves it undefined), so tests must not rely on
// it; give the manager its files through cfg or [System.WriteFile].
//
// StartSystem calls t.Skip when a required program is missing, when the
// test does not run as root, or when making cgroups, namespaces or mounts
// is not permitted; it calls t.Fatal on any other failure.
func StartSystem(t testing.TB, cfg SystemConfig) *System {
	t.Helper()
	sd := cfg.Systemd
	if sd.Manager == "" {
		sd = Installed()
	}
	if fi, err := os.Stat(sd.Manager); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Skipf("systemdtest: %s not available (%v); a real systemd is needed", sd.Manager, err)
	}
	boot, err := sd.bootSpec()
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	journalctl := sd.journalctl()
	for _, prog := range []string{sd.Systemctl, journalctl, "unshare", "nsenter", "setpriv", "sh", "tar", "cp", "touch", "mount", "pivot_root", "hostname"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("systemdtest: %s not found: %v", prog, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skipf("systemdtest: a systemd system manager in fresh namespaces needs root (euid %d)", os.Geteuid())
	}
	payload, err := cfg.tarball()
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	s := &System{name: UniqueName("sdsys"), sd: sd, systemctl: sd.Systemctl, journalctl: journalctl, out: &syncBuffer{}, done: make(chan struct{})}
	hs, err := cgroupHierarchies()
	if err != nil {
		t.Skipf("systemdtest: cannot give a system manager cgroups of its own here: %v", err)
	}
	s.cgroups, err = makeSystemCgroups(hs, s.name)
	if err != nil {
		if cerr := s.removeCgroups(); cerr != nil {
			t.Logf("systemdtest: %v", cerr)
		}
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
			t.Skipf("systemdtest: cannot make cgroups (not permitted): %v", err)
		}
		t.Fatalf("systemdtest: %v", err)
	}
	script, err := bootScript(hs, boot)
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}

	args := append([]string{"-c", outerScript, "sdsys", s.name, script}, s.cgroups...)
	cmd := exec.Command("sh", args...)
	cmd.Env = []string{systemPath}
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(payload)
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies without running cleanups, unshare dies
		// and takes the manager with it (--kill-child): a SIGKILL of PID 1
		// ends the whole pid namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.WaitDelay = 2 * time.Second // then Wait stops copying the output
	s.cmd = cmd
	if err := cmd.Start(); err != nil {
		if cerr := s.removeCgroups(); cerr != nil {
			t.Logf("systemdtest: %v", cerr)
		}
		t.Fatalf("systemdtest: starting unshare: %v", err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("systemdtest: %v", err)
		}
	})

	begin := time.Now()
	state, err := s.waitBooted()
	if err != nil {
		out := s.out.String()
		if s.exited() && notPermitted(out) {
			t.Skipf("systemdtest: cannot boot a systemd system manager here (not permitted): %v\noutput:\n%s", err, out)
		}
		t.Fatalf("systemdtest: %v\noutput:\n%s\n%s", err, out, s.journalTail(100))
	}
	s.booted = true
	t.Logf("systemdtest: system manager %s (pid %d) %s after %v", s.name, s.pid, state, time.Since(begin).Round(time.Millisecond))
	if state == "degraded" {
		ctx, cancel := context.WithTimeout(context.Background(), SystemctlTimeout)
		defer cancel()
		failed, _ := s.Systemctl(ctx, "--failed", "--plain", "--no-legend")
		t.Logf("systemdtest: failed units (degraded):\n%s", failed)
	}
	return s
}

// waitBooted finds the manager's pid (the child of unshare) and waits until
// it is systemd and says running or degraded, or BootTimeout passes. It
// returns that state.
func (s *System) waitBooted() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	up := s.cmd.Process.Pid
	var last string
	for {
		if s.exited() {
			return "", fmt.Errorf("boot failed: unshare exited: %v", s.waitErr)
		}
		if s.pid == 0 && procComm(up) == "unshare" {
			if f := strings.Fields(readProc(up, fmt.Sprintf("task/%d/children", up))); len(f) > 0 {
				s.pid, _ = strconv.Atoi(f[0])
			}
		}
		// Until it execs systemd, PID 1 is the boot script, whose mount
		// namespace still shows the machine's /run.
		if s.pid != 0 && procComm(s.pid) == "systemd" {
			out, err := s.Systemctl(ctx, "is-system-running")
			state := strings.TrimSpace(out)
			if state == "running" || state == "degraded" {
				return state, nil
			}
			last = fmt.Sprintf("is-system-running: %q (%v)", state, err)
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = fmt.Sprintf("manager pid %d, comm %q", s.pid, procComm(s.pid))
			}
			return "", fmt.Errorf("system manager not ready after %v (last: %s)", BootTimeout, last)
		case <-s.done:
		case <-time.After(PollInterval):
		}
	}
}

func (s *System) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Name returns the manager's name: its hostname, its container= and the
// name of its cgroups.
func (s *System) Name() string { return s.name }

// PID returns the process ID, on the host, of the manager (PID 1 inside its
// pid namespace).
func (s *System) PID() int { return s.pid }

// Cgroups returns the cgroup directories made on the host for the manager,
// one per hierarchy; [System.Stop] removes them.
func (s *System) Cgroups() []string { return slices.Clone(s.cgroups) }

// Output returns what the boot script and unshare wrote, for failure
// messages. The manager itself logs to its journal ([System.Journal]).
func (s *System) Output() string { return s.out.String() }

// Command returns a command running name with args inside the manager's
// mount, pid, network, UTS and IPC namespaces (through nsenter), as root, with a
// minimal environment (PATH only; set Env to change it). Paths are those
// inside; 127.0.0.1 is the manager's loopback.
//
// Cancelling ctx sends SIGTERM to the program inside; if it has not exited
// WaitDelay (5s) later, nsenter is killed, and the program with it (it runs
// with SIGKILL as parent-death signal).
func (s *System) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := []string{"--target", strconv.Itoa(s.pid), "--mount", "--pid", "--net", "--uts", "--ipc", "--",
		"setpriv", "--pdeathsig", "KILL", "--", name}
	cmd := exec.CommandContext(ctx, "nsenter", append(argv, args...)...)
	cmd.Env = []string{systemPath}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// nsenter forks the program into the pid namespace and only
		// waits for it: signal the program itself.
		p := cmd.Process.Pid
		if f := strings.Fields(readProc(p, fmt.Sprintf("task/%d/children", p))); len(f) > 0 {
			if child, err := strconv.Atoi(f[0]); err == nil && syscall.Kill(child, syscall.SIGTERM) == nil {
				return nil
			}
		}
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Dial connects, from the test process itself, to address (an IP address
// and port, such as 127.0.0.1:7007: the manager's loopback) on the named
// network ("tcp", "tcp4", "tcp6", "udp", ...) in the manager's network
// namespace. The connection is the test's own, with no program inside in
// between, so the test can keep and check it like any other. Unix sockets
// are not supported (their paths are in the manager's mount namespace):
// use a client run by [System.Command]. Nor are host names: resolving one,
// or dialling several addresses, would happen on other threads, in the
// machine's namespace.
func (s *System) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if !strings.HasPrefix(network, "tcp") && !strings.HasPrefix(network, "udp") {
		return nil, fmt.Errorf("systemdtest: Dial %s %s: only tcp and udp are supported", network, address)
	}
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("systemdtest: Dial %s %s: want an IP address and port: %w", network, address, err)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// A socket belongs to the network namespace of the thread
		// that makes it, for good. This goroutine's thread moves into
		// the manager's namespace for the dial, then back. It must
		// not end with the goroutine (what a thread still locked
		// does): unshare's parent-death signal (SIGKILL) goes with
		// the thread that started it, which may be this one.
		runtime.LockOSThread()
		c, back, err := s.dialInside(ctx, network, address)
		if back {
			runtime.UnlockOSThread()
		} // else the thread, in an unknown namespace, ends with the goroutine
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("systemdtest: Dial %s %s in %s: %w", network, address, s.name, r.err)
	}
	return r.c, nil
}

// dialInside dials from the calling thread, locked, moved into the
// manager's network namespace for the dial. It reports whether the thread
// is back in its own namespace.
func (s *System) dialInside(ctx context.Context, network, address string) (net.Conn, bool, error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer self.Close()
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", s.pid))
	if err != nil {
		return nil, true, err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("setns: %w", err)
	}
	// One address, no resolver: the socket is made on this thread.
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		if c != nil {
			c.Close()
		}
		return nil, false, errors.Join(err, fmt.Errorf("setns back: %w", rerr))
	}
	return c, true, err
}

// Systemd returns the installation of systemd the manager runs (see
// [SystemConfig.Systemd]).
func (s *System) Systemd() Systemd { return s.sd }

// SystemdCommand is [System.Command] for one of the programs of the
// manager's installation of systemd (such as s.Systemd().Analyze): it runs
// with the installation's LibDir, if any, as LD_LIBRARY_PATH. The path is
// the same inside as on the machine (the root is an overlay of /).
func (s *System) SystemdCommand(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := s.Command(ctx, prog, args...)
	if s.sd.LibDir != "" {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+s.sd.LibDir)
	}
	return cmd
}

// Systemctl runs "systemctl --no-pager args..." inside the manager's
// namespaces, with the systemctl of its installation (see
// [SystemConfig.Systemd]), and returns its combined output. When ctx has
// no deadline, the call is bounded by SystemctlTimeout. The error, if any,
// includes the output.
func (s *System) Systemctl(ctx context.Context, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, SystemctlTimeout)
		defer cancel()
	}
	out, err := s.SystemdCommand(ctx, s.systemctl, append([]string{"--no-pager"}, args...)...).CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return string(out), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustSystemctl is [System.Systemctl] with a SystemctlTimeout bound that
// calls t.Fatal, with the end of the journal, on error.
func (s *System) MustSystemctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.Systemctl(context.Background(), args...)
	if err != nil {
		t.Fatalf("systemdtest: %v\n%s", err, s.journalTail(100))
	}
	return out
}

// Show returns the given properties of unit ("systemctl show -p props
// unit"), or all of them when props is empty. It calls t.Fatal on failure.
// A unit that does not exist yields LoadState=not-found, not an error.
func (s *System) Show(t testing.TB, unit string, props ...string) map[string]string {
	t.Helper()
	return ParseShow(s.MustSystemctl(t, showArgs(unit, props)...))
}

// WaitFor polls the given properties of unit every PollInterval until cond
// returns true for them, and returns them. If that does not happen within
// timeout, it calls t.Fatal with the last values seen and the end of the
// journal. It always polls at least once.
func (s *System) WaitFor(t testing.TB, timeout time.Duration, unit string, cond func(map[string]string) bool, props ...string) map[string]string {
	t.Helper()
	return waitFor(t, timeout, unit, cond, props, s.Systemctl, func() string { return s.journalTail(100) })
}

// Journal returns the journal of unit ("journalctl -u unit"), or the whole
// journal when unit is empty, bounded by SystemctlTimeout. On failure it
// returns what it got followed by the error; it never fails the test.
func (s *System) Journal(t testing.TB, unit string) string {
	t.Helper()
	args := []string{"--no-pager", "-o", "short-monotonic"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	return s.journal(args...)
}

func (s *System) journalTail(n int) string {
	return "journal (last " + strconv.Itoa(n) + " lines):\n" + s.journal("--no-pager", "-o", "short-monotonic", "-n", strconv.Itoa(n))
}

func (s *System) journal(args ...string) string {
	if s.pid == 0 || s.exited() {
		return "(no journal: the manager is not running)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), SystemctlTimeout)
	defer cancel()
	out, err := s.SystemdCommand(ctx, s.journalctl, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(journalctl: %v)", out, err)
	}
	return string(out)
}

// WriteFile writes data to the file name inside the manager's root (in its
// overlay), replacing it atomically: the data goes to name.new, which is
// then renamed over name. It calls t.Fatal on failure.
func (s *System) WriteFile(t testing.TB, name string, data []byte, perm fs.FileMode) {
	t.Helper()
	if !path.IsAbs(name) {
		t.Fatalf("systemdtest: WriteFile: %q is not an absolute path", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), SystemctlTimeout)
	defer cancel()
	cmd := s.Command(ctx, "sh", "-c", `umask 077 && cat > "$1.new" && chmod "$2" "$1.new" && mv -f "$1.new" "$1"`,
		"sh", name, strconv.FormatUint(uint64(perm.Perm()), 8))
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemdtest: writing %s inside %s: %v: %s", name, s.name, err, out)
	}
}

// ReadFile returns the content of the file name inside the manager's
// namespaces. It calls t.Fatal on failure.
func (s *System) ReadFile(t testing.TB, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), SystemctlTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := s.Command(ctx, "cat", "--", name)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("systemdtest: reading %s inside %s: %v: %s", name, s.name, err, stderr.Bytes())
	}
	return out
}

// Stop powers the manager off ("systemctl poweroff" inside, which ends its
// pid namespace), waits up to StopTimeout for unshare to exit, then kills
// the manager (SIGKILL of PID 1 ends every process of the namespace) and
// waits 5s more. Last it removes the manager's cgroups, children first,
// killing whatever is left in them. It is idempotent and is called by the
// cleanup registered in StartSystem. It returns an error if SIGKILL was
// needed, unshare ended otherwise than by the poweroff, or a cgroup could
// not be removed.
func (s *System) Stop() error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	if !s.stopped {
		s.stopped = true
		s.stopErr = errors.Join(s.powerOff(), s.removeCgroups())
	}
	return s.stopErr
}

func (s *System) powerOff() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	if s.booted && !s.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// The manager may cut the connection as it goes down: what
		// counts is that it exits.
		_, _ = s.Systemctl(ctx, "poweroff")
		cancel()
		select {
		case <-s.done:
		case <-time.After(StopTimeout):
		}
	}
	if s.exited() {
		return s.poweredOff()
	}
	var diag string
	if s.booted {
		diag = s.journalTail(50)
	}
	if s.pid != 0 {
		_ = syscall.Kill(s.pid, syscall.SIGKILL) // ends the whole pid namespace
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
		if !s.booted {
			return nil // StartSystem reported why it did not boot
		}
		return fmt.Errorf("system manager %s (pid %d) did not power off within %v; killed it\n%s", s.name, s.pid, StopTimeout, diag)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("system manager %s: unshare (pid %d) survived SIGKILL for 5s", s.name, s.cmd.Process.Pid)
	}
}

// poweredOff checks how unshare ended: a powered-off manager dies of
// SIGINT (what reboot(2) does to the init of a pid namespace), which
// unshare passes on to itself.
func (s *System) poweredOff() error {
	if !s.booted {
		return nil // StartSystem reported the failure
	}
	var ee *exec.ExitError
	if s.waitErr == nil || errors.As(s.waitErr, &ee) && (ee.ExitCode() == 128+int(syscall.SIGINT) ||
		ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT) {
		return nil
	}
	return fmt.Errorf("system manager %s (pid %d): unshare ended with %v\noutput:\n%s", s.name, s.pid, s.waitErr, s.out.String())
}

// removeCgroups kills what is left in the manager's cgroups (nothing, after
// a clean power-off) and removes them, children first.
func (s *System) removeCgroups() error {
	var errs []error
	for _, dir := range slices.Backward(s.cgroups) {
		killed, err := removeCgroup(dir, 5*time.Second)
		if killed > 0 {
			errs = append(errs, fmt.Errorf("systemdtest: killed %d leftover processes in %s", killed, dir))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
