//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// storePrefix starts the fd store name of every listener kept there, so
// stored fds are told apart from socket-unit fds in LISTEN_FDNAMES.
const storePrefix = "echod-listen-"

// StoreName is the name under which the listener for spec is kept in
// systemd's fd store: stable across restarts, derived from the address,
// valid for FDNAME= (no ':').
func StoreName(spec Spec) string {
	var b strings.Builder
	b.WriteString(storePrefix)
	for _, c := range []byte(spec.String()) {
		switch {
		case c == ':':
			b.WriteByte('_')
		case c == '_' || c == '%' || c <= 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isStoreName(name string) bool { return strings.HasPrefix(name, storePrefix) }

func closeStored(m map[string]net.Listener) {
	for _, ln := range m {
		ln.Close()
	}
}

// markerFile records, in the state directory (RuntimeDirectory=, kept
// across restarts with RuntimeDirectoryPreserve=restart), which names this
// daemon stored, so a restarted first generation that gets none of them
// back can tell the operator why. It is not kept in the shared temporary
// directory: with no StateDir and no RUNTIME_DIRECTORY there is none.
func (g *Generation) markerFile() string {
	return filepath.Join(g.opts.StateDir, "fdstore.names")
}

// storeNew hands the listeners not yet in the store to systemd and waits
// until it has them; it forgets names no listener uses any more and
// warns when listeners stored before a restart did not come back.
func (g *Generation) storeNew(ls []*Listener) error {
	if !g.opts.FDStore.Enabled() {
		return nil
	}
	n := g.opts.FDStore
	if g.link == nil && !g.noStateDir {
		g.checkRestored(ls)
	}
	var names []string
	sent := false
	for _, l := range ls {
		if l.StoreName == "" {
			continue
		}
		names = append(names, l.StoreName)
		if l.Stored {
			continue
		}
		f, err := fileOf(l.Listener)
		if err != nil {
			return fmt.Errorf("handoff: store %s: %w", l.Name, err)
		}
		_, err = n.Store(l.StoreName, int(f.Fd()))
		f.Close()
		if err != nil {
			return fmt.Errorf("handoff: store %s: %w", l.Name, err)
		}
		l.Stored = true
		sent = true
		g.logger().Info("listener stored in the systemd fd store", "name", l.Name, "fdname", l.StoreName)
	}
	if sent {
		if _, err := n.Barrier(5 * time.Second); err != nil {
			return fmt.Errorf("handoff: fd store: %w", err)
		}
	}
	g.mu.Lock()
	g.stored = names
	g.mu.Unlock()
	if len(names) > 0 && !g.noStateDir {
		if err := writeAtomic(g.markerFile(), strings.Join(names, "\n")+"\n"); err != nil {
			g.logger().Warn("cannot record stored listeners", "file", g.markerFile(), "err", err)
		}
	}
	return nil
}

// writeAtomic replaces path with text through a new file and a rename, so
// it never writes through a planted symlink.
func writeAtomic(path, text string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// checkRestored warns when a previous process of this service stored
// listeners (the marker file says so) but none came back: systemd drops
// stored fds silently when FileDescriptorStoreMax= is missing or too low,
// and flushes the store when the unit fully stops.
func (g *Generation) checkRestored(ls []*Listener) {
	b, err := os.ReadFile(g.markerFile())
	if err != nil {
		return
	}
	want := strings.Fields(string(b))
	restored := 0
	for _, l := range ls {
		if l.Restored {
			restored++
		}
	}
	if len(want) > 0 && restored == 0 {
		g.logger().Warn("listeners stored by the previous process did not come back from the systemd fd store: is FileDescriptorStoreMax= set high enough? (expected after a full stop: the store is flushed then)", "stored_before", len(want))
	}
}

// dropFromStore closes the listeners systemd gave back that no configured
// address wants, and removes them from the store, with those found stale
// before (toRemove).
func (g *Generation) dropFromStore(fromStore map[string]net.Listener) {
	for name, ln := range fromStore {
		ln.Close()
		g.removeLater(name)
	}
	g.mu.Lock()
	names := g.toRemove
	g.toRemove = nil
	g.mu.Unlock()
	g.removeStored(names)
}

// removeLater records an fd store name to remove once the listeners are
// taken.
func (g *Generation) removeLater(name string) {
	g.mu.Lock()
	g.toRemove = append(g.toRemove, name)
	g.mu.Unlock()
}

// dropParentStored runs at Ready in a generation started by an upgrade: it
// removes from the store what the previous generation kept there and this
// one no longer serves (a listener dropped from the configuration).
func (g *Generation) dropParentStored() {
	if g.link == nil {
		return
	}
	g.mu.Lock()
	kept := g.stored
	g.mu.Unlock()
	var drop []string
	for _, name := range g.link.offer.Stored {
		if !slices.Contains(kept, name) {
			drop = append(drop, name)
		}
	}
	g.removeStored(drop)
}

func (g *Generation) removeStored(names []string) {
	var errs []error
	for _, name := range names {
		if _, err := g.opts.Notifier.Remove(name); err != nil {
			errs = append(errs, err)
			continue
		}
		g.logger().Info("listener no longer configured: removed from the systemd fd store", "fdname", name)
	}
	if err := errors.Join(errs...); err != nil {
		g.logger().Warn("fd store removal failed", "err", err)
	}
}
