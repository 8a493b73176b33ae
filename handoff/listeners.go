//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"

	"github.com/cloudflare/tableflip"

	"github.com/echod/echod/handoff/control"
	"github.com/echod/echod/systemd"
)

// storeKey names a listener kept in the fd store among the files passed to
// the next generation.
func storeKey(spec Spec) string { return "store:" + StoreName(spec) }

// systemdKey names the i-th systemd-activated socket among the files
// passed to the next generation.
func systemdKey(i int) string { return "systemd:" + strconv.Itoa(i) }

// Listeners returns the listening sockets this generation serves, each
// taken from the first source that has it:
//
//  1. the previous generation: every systemd-activated socket it had, and
//     each bound socket whose address is still in specs;
//  2. systemd socket activation (first generation only): every socket
//     passed by a socket unit; a spec whose address is one of them is not
//     bound again;
//  3. systemd's fd store (first generation only): the sockets a previous
//     process of the service stored (names from [StoreName]); those no spec
//     wants any more are closed and removed from the store;
//  4. binding each spec not covered yet (and, with Options.FDStore,
//     storing it).
//
// When specs is empty and no socket came from systemd, fallback is used
// instead. Every socket is registered to be passed to the next generation.
// On error, every listener taken so far is closed.
func (g *Generation) Listeners(specs, fallback []Spec) (ls []*Listener, err error) {
	defer func() {
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			ls = nil
		}
	}()
	var fromStore map[string]net.Listener // first generation: listeners systemd kept for us
	if g.link != nil {
		for i, name := range g.link.offer.Systemd {
			f, err := g.upg.File(systemdKey(i))
			if err != nil {
				return ls, fmt.Errorf("handoff: inherited systemd socket %s: %w", name, err)
			}
			if f == nil {
				return ls, fmt.Errorf("handoff: systemd socket %s was not passed on", name)
			}
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return ls, fmt.Errorf("handoff: inherited systemd socket %s: %w", name, err)
			}
			l, err := g.addSystemd(name, ln)
			if err != nil {
				return ls, err
			}
			l.Inherited = true
			ls = append(ls, l)
		}
	} else if !g.HasParent() {
		socks, files, err := systemd.ActivatedFiles(isConnStoreName)
		if err != nil {
			return ls, fmt.Errorf("handoff: socket activation: %w", err)
		}
		g.keepConnQueues(files)
		for i, s := range socks {
			if isStoreName(s.Name) {
				if fromStore == nil {
					fromStore = map[string]net.Listener{}
				}
				if old, dup := fromStore[s.Name]; dup {
					old.Close()
				}
				fromStore[s.Name] = s.Listener
				continue
			}
			l, err := g.addSystemd(s.Name, s.Listener)
			if err != nil {
				for _, s := range socks[i+1:] {
					s.Listener.Close()
				}
				closeStored(fromStore)
				return ls, err
			}
			ls = append(ls, l)
		}
	}
	defer func() {
		if err != nil {
			closeStored(fromStore)
		}
	}()
	if len(specs) == 0 && len(ls) == 0 {
		specs = fallback
	}
	for _, spec := range specs {
		if covered(ls, spec) {
			continue
		}
		l, err := g.listen(spec, fromStore)
		if err != nil {
			return ls, err
		}
		ls = append(ls, l)
	}
	if err := g.storeNew(ls); err != nil {
		return ls, err
	}
	g.dropFromStore(fromStore)
	return ls, nil
}

func covered(ls []*Listener, spec Spec) bool {
	for _, l := range ls {
		if l.Origin == Activated && spec.matches(l.Addr()) {
			return true
		}
	}
	return false
}

// addSystemd registers a socket-activated listener under the next free
// systemd key. It is passed on as a plain file, so tableflip never unlinks
// its path: a socket-activated Unix socket belongs to systemd.
func (g *Generation) addSystemd(name string, ln net.Listener) (*Listener, error) {
	f, err := fileOf(ln)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("handoff: systemd socket %s: %w", name, err)
	}
	defer f.Close()
	g.mu.Lock()
	key := systemdKey(len(g.systemd))
	g.systemd = append(g.systemd, name)
	g.mu.Unlock()
	if err := g.upg.AddFile(key, f); err != nil {
		ln.Close()
		return nil, fmt.Errorf("handoff: register systemd socket %s: %w", name, err)
	}
	return &Listener{Listener: ln, Name: name, Origin: Activated}, nil
}

// fileOf returns a duplicate of ln's descriptor as an *os.File, without
// switching ln to blocking mode.
func fileOf(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var f *os.File
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		nfd, err := syscall.Dup(int(fd))
		if err != nil {
			dupErr = err
			return
		}
		syscall.CloseOnExec(nfd)
		f = os.NewFile(uintptr(nfd), "listener")
	}); err != nil {
		return nil, err
	}
	return f, dupErr
}

// Listen returns the listener for spec: the socket the previous generation
// bound for the same spec, or a new one. It is registered to be passed to
// the next generation, never kept in the fd store. A stale Unix socket file
// (nobody listening) is replaced; one that answers is an error, like a TCP
// address in use.
func (g *Generation) Listen(spec Spec) (*Listener, error) {
	return g.ListenFunc(spec, nil)
}

// ListenFunc is [Generation.Listen] with bind creating the socket when no
// previous generation passed one (nil: a plain bind). The socket bind
// returns must have a file descriptor (as *net.TCPListener and
// *net.UnixListener do); it is registered to be passed on.
func (g *Generation) ListenFunc(spec Spec, bind func(Spec) (net.Listener, error)) (*Listener, error) {
	ln, err := g.upg.Listener(spec.Network, spec.Address)
	if err != nil {
		return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
	}
	if ln != nil {
		return &Listener{Listener: ln, Name: spec.String(), Origin: Bound, Inherited: true}, nil
	}
	// The previous generation kept it in the fd store (the store was
	// turned off by this reload): take it, and take it out of the store.
	if f, err := g.upg.File(storeKey(spec)); err != nil {
		return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
	} else if f != nil {
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
		}
		g.removeLater(StoreName(spec))
		return &Listener{Listener: ln, Name: spec.String(), Origin: Bound, Inherited: true}, nil
	}
	if spec.Network == "unix" {
		if err := removeStaleSocket(spec.Address); err != nil {
			return nil, fmt.Errorf("handoff: listen %s: %w", spec, err)
		}
	}
	if bind == nil {
		ln, err = g.upg.Listen(spec.Network, spec.Address)
		if err != nil {
			return nil, fmt.Errorf("handoff: listen %s: %w", spec, err)
		}
		return &Listener{Listener: ln, Name: spec.String(), Origin: Bound}, nil
	}
	ln, err = bind(spec)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", spec, err)
	}
	tl, ok := ln.(tableflip.Listener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("handoff: listen %s: %T has no file descriptor", spec, ln)
	}
	if err := g.upg.AddListener(spec.Network, spec.Address, tl); err != nil {
		ln.Close()
		return nil, fmt.Errorf("handoff: register %s: %w", spec, err)
	}
	return &Listener{Listener: ln, Name: spec.String(), Origin: Bound}, nil
}

// listen is Listen for a served listener: with the fd store enabled, the
// socket comes from, in order, the previous generation, systemd's store
// (fromStore), or a new bind, and is passed on as a plain file so that no
// generation ever unlinks its path: the store may outlive this process.
func (g *Generation) listen(spec Spec, fromStore map[string]net.Listener) (*Listener, error) {
	name := StoreName(spec)
	if !g.opts.FDStore.Enabled() {
		if ln, ok := fromStore[name]; ok {
			// Stored by a process that ran with the fd store on: serve
			// the socket (binding again would fail), but take it out of
			// the store.
			delete(fromStore, name)
			g.removeLater(name)
			tl, ok := ln.(tableflip.Listener)
			if !ok {
				ln.Close()
				return nil, fmt.Errorf("handoff: stored %s: %T has no file descriptor", spec, ln)
			}
			if err := g.upg.AddListener(spec.Network, spec.Address, tl); err != nil {
				ln.Close()
				return nil, fmt.Errorf("handoff: register %s: %w", spec, err)
			}
			return &Listener{Listener: ln, Name: spec.String(), Origin: Bound, Restored: true}, nil
		}
		return g.Listen(spec)
	}
	key := "store:" + name
	l := &Listener{Name: spec.String(), Origin: Bound, StoreName: name}
	f, err := g.upg.File(key)
	if err != nil {
		return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
	}
	if f != nil { // from the previous generation (already registered)
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
		}
		l.Listener, l.Inherited, l.Stored = ln, true, true
		return l, nil
	}
	// The previous generation ran without the fd store (it was turned on
	// by this reload): take its socket; storeNew stores it.
	if ln, err := g.upg.Listener(spec.Network, spec.Address); err != nil {
		return nil, fmt.Errorf("handoff: inherited %s: %w", spec, err)
	} else if ln != nil {
		// Stored already if the previous generation said so.
		l.Listener, l.Inherited = ln, true
		l.Stored = g.link != nil && slices.Contains(g.link.offer.Stored, name)
		return l, nil
	}
	if ln, ok := fromStore[name]; ok {
		delete(fromStore, name)
		l.Listener, l.Stored, l.Restored = ln, true, true
	} else {
		if spec.Network == "unix" {
			if err := removeStaleSocket(spec.Address); err != nil {
				return nil, fmt.Errorf("handoff: listen %s: %w", spec, err)
			}
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(context.Background(), spec.Network, spec.Address)
		if err != nil {
			return nil, fmt.Errorf("handoff: listen %s: %w", spec, err)
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the store keeps the socket open
		}
		l.Listener = ln
	}
	f, err = fileOf(l.Listener)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("handoff: %s: %w", spec, err)
	}
	defer f.Close()
	if err := g.upg.AddFile(key, f); err != nil {
		l.Close()
		return nil, fmt.Errorf("handoff: register %s: %w", spec, err)
	}
	return l, nil
}

// removeStaleSocket removes path if it is a Unix socket nobody listens on.
func removeStaleSocket(path string) error {
	if err := control.CheckStale(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Listener is a listening socket of a generation.
type Listener struct {
	net.Listener
	// Name is the socket's name: its FileDescriptorName= for a
	// socket-activated one, its configured address otherwise.
	Name string
	// Origin tells who created the socket.
	Origin Origin
	// Inherited is true when the socket came from the previous generation.
	Inherited bool
	// StoreName is the socket's name in systemd's fd store when
	// Options.FDStore is enabled ("" otherwise).
	StoreName string
	// Stored is true when the socket is in systemd's fd store.
	Stored bool
	// Restored is true when systemd's fd store gave the socket back to
	// this process (after a restart or a crash).
	Restored bool
}

// Origin tells who created a listening socket.
type Origin int

const (
	// Bound sockets were bound by (a generation of) this daemon.
	Bound Origin = iota
	// Activated sockets were passed by systemd socket activation.
	Activated
)

func (o Origin) String() string {
	if o == Activated {
		return "systemd"
	}
	return "bound"
}
