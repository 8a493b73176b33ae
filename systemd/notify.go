package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// State lines understood by systemd (sd_notify(3)). Build variable ones
// with [MainPID] and [Status].
const (
	Ready     = daemon.SdNotifyReady     // READY=1
	Reloading = daemon.SdNotifyReloading // RELOADING=1
	Stopping  = daemon.SdNotifyStopping  // STOPPING=1
	Watchdog  = daemon.SdNotifyWatchdog  // WATCHDOG=1
)

// ErrInvalidState is wrapped when a notify message line is not a single
// KEY=VALUE line.
var ErrInvalidState = errors.New("systemd: invalid notify state")

// MonotonicUsec returns the MONOTONIC_USEC= line for now (CLOCK_MONOTONIC,
// in µs), or "" when the clock cannot be read. Sent with RELOADING=1: a
// Type=notify-reload service (systemd 253 and later) must, or systemd does
// not take the reload as started and waits until its timeout.
func MonotonicUsec() string {
	return strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n")
}

// MainPID returns the MAINPID= line for pid.
func MainPID(pid int) string { return "MAINPID=" + strconv.Itoa(pid) }

// Status returns the STATUS= line for a human-readable text. Control
// characters (newlines included) become spaces, so the text cannot inject
// other state lines; it is cut after 1024 bytes (at a character boundary).
func Status(text string) string {
	var b strings.Builder
	b.WriteString("STATUS=")
	for _, r := range text {
		if b.Len() >= 1024+len("STATUS=") {
			break
		}
		if unicode.IsControl(r) {
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

// CheckState reports whether line is one well-formed state assignment:
// KEY=VALUE, KEY made of A-Z, 0-9 and '_', VALUE without newline or NUL.
func CheckState(line string) error {
	key, value, ok := strings.Cut(line, "=")
	if !ok || key == "" {
		return fmt.Errorf("%w: %q is not KEY=VALUE", ErrInvalidState, line)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Errorf("%w: key %q", ErrInvalidState, key)
		}
	}
	if strings.ContainsAny(value, "\n\x00") {
		return fmt.Errorf("%w: value of %s contains a newline or NUL", ErrInvalidState, key)
	}
	return nil
}

// Notifier sends state to the service manager over $NOTIFY_SOCKET. The zero
// value and a nil *Notifier are valid and send nothing (not under systemd).
type Notifier struct {
	socket string
}

// NewNotifier returns a Notifier for $NOTIFY_SOCKET. It leaves the variable
// in the environment, so a process exec'd later (the next generation)
// can notify too.
func NewNotifier() *Notifier {
	return &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
}

// Enabled reports whether a notify socket is configured.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends the state lines as one datagram. It returns (false, nil)
// when no notify socket is configured, (false, err) when a line is invalid
// (nothing is sent) or sending failed, and (true, nil) once sent.
func (n *Notifier) Notify(lines ...string) (bool, error) {
	if !n.Enabled() {
		return false, nil
	}
	// One send path for every message, to the socket captured by
	// NewNotifier: go-systemd's SdNotify would read NOTIFY_SOCKET again,
	// and it cannot pass fds (FDSTORE=1, BARRIER=1).
	return n.NotifyWithFDs(nil, lines...)
}

// NotifyWithFDs sends the state lines with the given file descriptors
// attached (SCM_RIGHTS), as FDSTORE=1 and BARRIER=1 need. The fds stay open
// in this process. Return values are as for [Notifier.Notify].
func (n *Notifier) NotifyWithFDs(fds []int, lines ...string) (bool, error) {
	if !n.Enabled() {
		return false, nil
	}
	if len(lines) == 0 {
		return false, fmt.Errorf("%w: no state to send", ErrInvalidState)
	}
	for _, l := range lines {
		if err := CheckState(l); err != nil {
			return false, err
		}
	}
	// An unconnected datagram socket: Go refuses WriteMsgUnix on a
	// connected one. A leading '@' names the abstract namespace.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("systemd: notify: socket: %w", err)
	}
	defer unix.Close(fd)
	msg := []byte(strings.Join(lines, "\n"))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, msg, oob, &unix.SockaddrUnix{Name: n.socket}, 0); err != nil {
		return false, fmt.Errorf("systemd: notify with %d fds to %s: %w", len(fds), n.socket, err)
	}
	return true, nil
}

// Barrier blocks until the service manager has processed every message
// this process sent before it (sd_notify_barrier(3)): it sends BARRIER=1
// with the write end of a pipe and waits for the manager to close it. It
// returns (false, nil) without a notify socket and an error when timeout
// passes first.
func (n *Notifier) Barrier(timeout time.Duration) (bool, error) {
	if !n.Enabled() {
		return false, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false, fmt.Errorf("systemd: barrier: pipe: %w", err)
	}
	r, w := p[0], p[1]
	defer unix.Close(r)
	_, err := n.NotifyWithFDs([]int{w}, "BARRIER=1")
	unix.Close(w)
	if err != nil {
		return false, fmt.Errorf("systemd: barrier: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, fmt.Errorf("systemd: barrier: no answer from the manager within %v", timeout)
		}
		// No events asked for: hang-up (the manager closed its copy) is
		// always reported.
		fds := []unix.PollFd{{Fd: int32(r), Events: 0}}
		_, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("systemd: barrier: poll: %w", err)
		}
		if fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return true, nil
		}
	}
}

// WatchdogInterval returns how often to send [Watchdog]: half the timeout
// systemd set with WatchdogSec=, or 0 when the watchdog is off. inherited
// says this process took over from the one systemd started (see
// [ParseWatchdog]).
func WatchdogInterval(inherited bool) (time.Duration, error) {
	d, err := ParseWatchdog(os.Getpid(), os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), inherited)
	return d / 2, err
}
