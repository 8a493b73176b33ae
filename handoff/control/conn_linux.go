//go:build linux

package control

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred returns the user and process ids of the process that connected
// c, as the kernel recorded them at connect(2) (SO_PEERCRED). It fails for
// anything but a Unix socket.
func peerCred(c net.Conn) (uid, pid int, err error) {
	if c.LocalAddr().Network() != "unix" {
		return 0, 0, fmt.Errorf("%s connection is not a Unix socket", c.LocalAddr().Network())
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0, fmt.Errorf("%T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, 0, fmt.Errorf("peer credentials: getsockopt SO_PEERCRED: %w", credErr)
	}
	return int(cred.Uid), int(cred.Pid), nil
}

// watchConn reads and ignores up to budget bytes from c until the client
// hangs up (it returns true) or the read deadline passes or c is closed
// (false). End of file alone is not a hang-up: a client that shut down only
// its writing side still waits for the answer. The client has hung up when
// poll(2) reports POLLHUP or POLLERR on the socket: a Unix stream socket
// reports POLLHUP once both directions are shut, which closing the peer
// does. Past the budget, watchConn reads nothing more but still notices a
// hang-up. It waits for events through the runtime's poller, so a watch
// costs a parked goroutine, no thread.
func watchConn(c net.Conn, budget int, hook func(discarded int, eof bool)) (hungUp bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return watchBuffered(c, budget, hook)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return watchBuffered(c, budget, hook)
	}
	var (
		buf       [512]byte
		discarded int
		eof       bool
	)
	// Returns true to stop the watch, false to wait for the next event
	// on the socket (new bytes, end of file, hang-up).
	look := func(fd uintptr) bool {
		for !eof && discarded < budget {
			n, err := unix.Read(int(fd), buf[:min(len(buf), budget-discarded)])
			if n > 0 {
				discarded += n
				continue
			}
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil { // ECONNRESET, for example
				hungUp = true
				return true
			}
			eof = true
		}
		if hook != nil {
			hook(discarded, eof)
		}
		if (eof || discarded >= budget) && peerGone(int(fd)) {
			hungUp = true
			return true
		}
		return false
	}
	// Ends with an error when stop sets the read deadline or c is closed.
	_ = rc.Read(look)
	return hungUp
}

// peerGone reports whether the peer of a Unix stream socket has closed it
// (or shut down both directions).
func peerGone(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	for {
		_, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true // cannot tell: an unusable socket is a gone client
		}
		return fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
}
