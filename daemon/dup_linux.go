//go:build linux

package daemon

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// canDup tells whether dupConn works here.
const canDup = true

// dupConn returns a close-on-exec duplicate of c's descriptor. It goes
// through the raw connection (Control), not c.File, and leaves the
// socket's flags alone: it stays non-blocking, as the runtime poller needs.
func dupConn(c net.Conn) (*os.File, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("daemon: duplicate %T: no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("daemon: duplicate %T: %w", c, err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("daemon: duplicate connection: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("daemon: duplicate connection: %w", os.NewSyscallError("fcntl", derr))
	}
	return os.NewFile(uintptr(fd), "daemon-conn:"+remoteAddr(c)), nil
}
