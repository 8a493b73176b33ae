//go:build linux

package control

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WaitExit waits until process pid has exited and returns nil, or returns
// an error wrapping ctx.Err() when ctx ends first. A process that is gone
// already (or never existed) counts as exited. It does not reap the
// process: it suits a process that is not the caller's child, such as the
// daemon a "stop" request went to. It waits on a pidfd (pidfd_open(2),
// Linux 5.3): once that is open, the pid being reused by another process
// cannot confuse it.
func WaitExit(ctx context.Context, pid int) error {
	if pid <= 0 {
		return fmt.Errorf("control: wait for pid %d: not a process id", pid)
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("control: wait for pid %d: pidfd_open: %w", pid, err)
	}
	defer unix.Close(pfd)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("control: pid %d still running: %w", pid, err)
	}

	// ctx's end makes an eventfd readable; poll waits for either.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("control: wait for pid %d: eventfd: %w", pid, err)
	}
	defer unix.Close(efd)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		// Cannot fail: the counter is far from overflowing.
		_, _ = unix.Write(efd, one[:])
	})
	defer func() {
		if !stop() {
			<-fired // the write is done before efd closes
		}
	}()

	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("control: wait for pid %d: poll: %w", pid, err)
		}
		if fds[0].Revents != 0 {
			return nil
		}
		if fds[1].Revents != 0 {
			return fmt.Errorf("control: pid %d still running: %w", pid, ctx.Err())
		}
	}
}
