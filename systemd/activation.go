package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Socket is a listening socket passed by systemd.
type Socket struct {
	// Name is the fd's name (FileDescriptorName= in the .socket unit;
	// systemd's default is the socket unit's name).
	Name string
	// Listener is ready to Accept. Closing it closes only this process's
	// descriptor; the socket lives on in systemd.
	Listener net.Listener
}

// Activated returns the listening sockets systemd passed to this process,
// or nil when it passed none. It checks the LISTEN_* variables first
// (see [ParseListenEnv]) and then that every fd is a listening stream
// socket; on any error it closes what it took and names the offending
// variable or fd. LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from
// the environment in every case, so no child inherits them, and every fd
// is made close-on-exec.
func Activated() ([]Socket, error) {
	socks, _, err := ActivatedFiles(nil)
	return socks, err
}

// File is a descriptor systemd passed that is not a listening socket (one
// a service kept in its fd store), by its name.
type File struct {
	Name string
	File *os.File
}

// ActivatedFiles is [Activated] for a service that keeps other
// descriptors in its fd store too: an fd whose name other accepts is
// returned as a File, as it is; every other fd must be a listening stream
// socket. other may be nil.
func ActivatedFiles(other func(name string) bool) ([]Socket, []File, error) {
	env, err := ParseListenEnv(os.Getpid(), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	if err != nil {
		unsetListenEnv()
		return nil, nil, err
	}
	if env.N == 0 {
		unsetListenEnv()
		return nil, nil, nil
	}
	files := activation.Files(true)
	if len(files) != env.N {
		closeAll(files)
		return nil, nil, fmt.Errorf("%w: expected %d fds, go-systemd returned %d", ErrBadEnvironment, env.N, len(files))
	}
	var socks []Socket
	var others []File
	var errs []error
	for i, f := range files {
		name := env.Names[i]
		if name == "" {
			name = f.Name()
		}
		if other != nil && other(name) {
			others = append(others, File{Name: name, File: f})
			continue
		}
		ln, err := listenerFromFile(f)
		f.Close() // FileListener dups the fd
		if err != nil {
			errs = append(errs, fmt.Errorf("systemd: fd %d (%s): %w", 3+i, name, err))
			continue
		}
		socks = append(socks, Socket{Name: name, Listener: ln})
	}
	if len(errs) > 0 {
		for _, s := range socks {
			s.Listener.Close()
		}
		for _, o := range others {
			o.File.Close()
		}
		return nil, nil, errors.Join(errs...)
	}
	return socks, others, nil
}

// ErrNotStreamListener is wrapped when an inherited fd is not a listening
// stream socket.
var ErrNotStreamListener = errors.New("not a listening stream socket")

// listenerFromFile checks that f is a listening SOCK_STREAM socket before
// turning it into a net.Listener (go-systemd's Listeners would silently
// return a nil entry for a datagram socket).
func listenerFromFile(f *os.File) (net.Listener, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%w: not a socket (mode %#o)", ErrNotStreamListener, st.Mode&unix.S_IFMT)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("%w: socket type %d, want SOCK_STREAM (%d); datagram sockets are not served", ErrNotStreamListener, typ, unix.SOCK_STREAM)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_ACCEPTCONN: %w", err)
	}
	if acc == 0 {
		return nil, fmt.Errorf("%w: the socket is not listening (Accept=yes sockets are not supported)", ErrNotStreamListener)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("net.FileListener: %w", err)
	}
	return ln, nil
}

func unsetListenEnv() {
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
