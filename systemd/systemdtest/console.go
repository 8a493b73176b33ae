package systemdtest

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// The user manager writes its own log to /dev/console (it has no journald
// here, and it insists on a terminal: a plain file bind-mounted over
// /dev/console makes it drop its log). On this kind of machine /dev/console
// is the slow serial console shared by everything, so Start bind-mounts the
// slave of a private pseudo-terminal over /dev/console inside the manager's
// mount namespace and copies what arrives on the master into the manager's
// log file.

// console is a pseudo-terminal whose output is copied to a file.
type console struct {
	master *os.File
	slave  *os.File // kept open by us so the master never sees a hang-up early
	path   string   // /dev/pts/N
	copied chan struct{}
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// newConsole opens a pseudo-terminal and starts copying its output to w
// (which close closes).
func newConsole(w *os.File) (*console, error) {
	fd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/ptmx: %w", err)
	}
	var unlock int32
	var n uint32
	if err := ioctl(uintptr(fd), syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("unlocking pty: %w", err)
	}
	if err := ioctl(uintptr(fd), syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("pty number: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil { // lets Close interrupt Read
		syscall.Close(fd)
		return nil, err
	}
	c := &console{master: os.NewFile(uintptr(fd), "/dev/ptmx"), path: fmt.Sprintf("/dev/pts/%d", n), copied: make(chan struct{})}
	c.slave, err = os.OpenFile(c.path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		c.master.Close()
		return nil, fmt.Errorf("opening %s: %w", c.path, err)
	}
	// No output processing: keep "\n" as is instead of "\r\n".
	var tio syscall.Termios
	if err := ioctl(c.slave.Fd(), syscall.TCGETS, unsafe.Pointer(&tio)); err == nil {
		tio.Oflag &^= syscall.OPOST
		tio.Lflag &^= syscall.ECHO
		_ = ioctl(c.slave.Fd(), syscall.TCSETS, unsafe.Pointer(&tio))
	}
	go func() {
		defer close(c.copied)
		defer w.Close()
		_, _ = io.Copy(w, c.master) // ends with EIO once every slave is closed
	}()
	return c, nil
}

// close stops copying, after draining what the manager wrote if it can be
// done within a second. Call it after the manager has exited.
func (c *console) close() {
	c.slave.Close()
	select {
	case <-c.copied:
	case <-time.After(time.Second): // some leftover process holds the slave
	}
	c.master.Close()
	<-c.copied
}
