package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxSocketPath is the longest path a Unix socket can be bound to on Linux
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// Listen creates a Unix stream socket at path that only its owner (and
// root) can connect to, with no moment at which anyone else could: the
// socket is bound inside a new directory of mode 0700 next to path, given
// mode 0600 there, and renamed to path. A stale socket at path (one nobody
// listens on) is replaced; if something listens on path, Listen fails with
// an error wrapping syscall.EADDRINUSE; anything else at path is an error
// and left alone.
//
// The listener's Addr is path. Closing it does not remove the socket file,
// which a next generation that inherited the socket may still serve: remove
// it on final exit, or let the next Listen replace it. The listener has the
// SyscallConn and File methods of a *net.UnixListener, to pass it on.
//
// The check for a live socket and the rename are two steps: two processes
// calling Listen on the same path at the same moment can both succeed, the
// second socket replacing the first.
func Listen(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control: listen %s: path too long for a Unix socket (%d bytes, the limit is %d)", path, len(path), maxSocketPath)
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ctl")
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	// After the rename only the empty directory is left; on failure, the
	// socket too.
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("control: listen %s: path too long for a Unix socket (its temporary name %s has %d bytes, the limit is %d)", path, tmp, len(tmp), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	// The socket outlives this process's copy of it (see above); it must
	// never be unlinked on Close, least of all at the temporary path.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	// The directory is 0700: nobody else can reach the socket before this.
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := CheckStale(path); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// CheckStale returns nil if path does not exist or is a Unix socket nobody
// listens on (connecting is refused): a stale socket file that may be
// replaced. A socket something listens on is an error wrapping EADDRINUSE.
func CheckStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("something listens on it: %w", syscall.EADDRINUSE)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: the rename replaces it
	}
	return fmt.Errorf("cannot tell whether the socket is stale: %w", err)
}

// unixListener is a *net.UnixListener whose Addr is the path it was renamed
// to, not the one it was bound at.
type unixListener struct {
	*net.UnixListener
	addr *net.UnixAddr
}

func (l *unixListener) Addr() net.Addr { return l.addr }
