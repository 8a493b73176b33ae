package systemd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxListenFDs bounds LISTEN_FDS; systemd itself never passes more than a
// few thousand.
const maxListenFDs = 1 << 16

// ErrBadEnvironment is wrapped by every error about malformed LISTEN_* or
// WATCHDOG_* variables.
var ErrBadEnvironment = errors.New("systemd: bad environment")

// ListenEnv is the parsed form of the socket-activation variables.
type ListenEnv struct {
	N     int      // number of fds, starting at fd 3
	Names []string // one per fd; "" where LISTEN_FDNAMES gave none
}

// ParseListenEnv parses LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as seen by
// the process pid. It returns a zero ListenEnv and a nil error when neither
// LISTEN_PID nor LISTEN_FDS is set (not socket-activated). It returns an
// error wrapping [ErrBadEnvironment] when a variable is malformed, when
// LISTEN_PID names another process, or when LISTEN_FDNAMES does not give one
// name per fd.
func ParseListenEnv(pid int, listenPID, listenFDs, fdNames string) (ListenEnv, error) {
	if listenPID == "" && listenFDs == "" {
		return ListenEnv{}, nil
	}
	p, err := strconv.Atoi(listenPID)
	if err != nil || p <= 0 {
		return ListenEnv{}, fmt.Errorf("%w: LISTEN_PID=%q is not a process id", ErrBadEnvironment, listenPID)
	}
	if p != pid {
		return ListenEnv{}, fmt.Errorf("%w: LISTEN_PID=%d names another process (this is %d): the sockets were meant for it", ErrBadEnvironment, p, pid)
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 || n > maxListenFDs {
		return ListenEnv{}, fmt.Errorf("%w: LISTEN_FDS=%q is not a number of file descriptors", ErrBadEnvironment, listenFDs)
	}
	env := ListenEnv{N: n, Names: make([]string, n)}
	if fdNames != "" && n > 0 {
		names := strings.Split(fdNames, ":")
		if len(names) != n {
			return ListenEnv{}, fmt.Errorf("%w: LISTEN_FDNAMES has %d names for LISTEN_FDS=%d", ErrBadEnvironment, len(names), n)
		}
		for i, name := range names {
			if err := CheckFDName(name); err != nil && name != "" {
				return ListenEnv{}, fmt.Errorf("%w: LISTEN_FDNAMES: %w", ErrBadEnvironment, err)
			}
			env.Names[i] = name
		}
	}
	return env, nil
}

// CheckFDName reports whether name is a valid file descriptor name for
// systemd (FileDescriptorName=, FDNAME=): 1 to 255 printable ASCII
// characters, none of them ':'.
func CheckFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("systemd: fd name %q must be 1 to 255 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c >= 0x7f || c == ':' {
			return fmt.Errorf("systemd: fd name %q: byte %#x at %d is not allowed (no ':' or control characters)", name, c, i)
		}
	}
	return nil
}

// ParseWatchdog parses WATCHDOG_USEC and WATCHDOG_PID as seen by process
// pid and returns the watchdog timeout, or 0 when the watchdog is off or
// meant for another process. A process that took over from the process the
// variables were set for (inherited is true) uses the timeout whatever
// WATCHDOG_PID says: with NotifyAccess=all its WATCHDOG=1 counts.
func ParseWatchdog(pid int, usec, wdPID string, inherited bool) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	u, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || u == 0 {
		return 0, fmt.Errorf("%w: WATCHDOG_USEC=%q is not a positive number", ErrBadEnvironment, usec)
	}
	if wdPID != "" && !inherited {
		p, err := strconv.Atoi(wdPID)
		if err != nil {
			return 0, fmt.Errorf("%w: WATCHDOG_PID=%q is not a process id", ErrBadEnvironment, wdPID)
		}
		if p != pid {
			return 0, nil
		}
	}
	if u > uint64(1<<62)/1000 {
		u = uint64(1<<62) / 1000
	}
	return time.Duration(u) * time.Microsecond, nil
}
