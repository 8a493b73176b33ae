//go:build linux

package handoff

import (
	"net"
	"time"
)

// Against a crash: while it serves, a generation with the fd store and
// migration keeps a copy of its long-lived connections in the store (see
// Generation.snapshotConns), renewed when the set of connections changed,
// so that a SIGKILL or an OOM kill does not take them with it: the next
// process of the service serves them.

// connLister is a server that lists its live connections by age
// (daemon's Server.Conns).
type connLister interface {
	Conns(minAge time.Duration) []net.Conn
}

const (
	// snapshotEvery is how often the set of connections is looked at; a
	// connection echod closes stays open in the store, its peer seeing
	// no close, until the next snapshot replaced the one holding it.
	snapshotEvery = 250 * time.Millisecond
	// snapshotAge spares short connections: only one served this long
	// goes in a snapshot (an adopted one at once).
	snapshotAge = time.Second
)

// snapshots is the loop keeping the snapshots; its names are the last
// one's, owned by the loop until done is closed.
type snapshots struct {
	stop  chan struct{}
	done  chan struct{}
	names []string
}

// startSnapshots starts the loop, when the server can list its
// connections and both the fd store and migration are on.
func (r *runner) startSnapshots() {
	l, ok := r.srv.(connLister)
	if !ok || !r.cfg.Migrate || !r.g.opts.FDStore.Enabled() {
		return
	}
	s := &snapshots{stop: make(chan struct{}), done: make(chan struct{})}
	r.snaps = s
	go r.snapshotLoop(l, s)
}

func (r *runner) snapshotLoop(l connLister, s *snapshots) {
	defer close(s.done)
	t := time.NewTicker(snapshotEvery)
	defer t.Stop()
	var last map[net.Conn]struct{}
	seq := 0
	warned := "" // the failure logged last, so that it is logged once
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if r.snapHold.Load() {
			continue
		}
		conns := l.Conns(snapshotAge)
		if sameConns(conns, last) {
			continue
		}
		var names []string
		if len(conns) > 0 {
			seq++
			var err error
			if names, err = r.g.snapshotConns(conns, seq); err != nil {
				// Most likely too many descriptors in flight for this
				// user (ETOOMANYREFS: the old snapshot's and the new one's
				// add up, bounded by RLIMIT_NOFILE). The old one goes all
				// the same, or a connection closed here would stay open in
				// it; the next look stores a new one alone.
				if err.Error() != warned {
					warned = err.Error()
					r.log.Warn("live connections not kept in the fd store (a crash would lose them); retrying", "connections", len(conns), "err", err)
				}
				r.g.removeConnQueues(s.names)
				r.g.recordConnQueues(nil)
				s.names, last = nil, nil
				continue
			}
		}
		if warned != "" {
			r.log.Info("live connections kept in the fd store again", "connections", len(conns))
			warned = ""
		}
		// The new one first: there is always one to come back to.
		r.g.removeConnQueues(s.names)
		s.names = names
		r.g.recordConnQueues(names)
		last = make(map[net.Conn]struct{}, len(conns))
		for _, c := range conns {
			last[c] = struct{}{}
		}
		r.log.Debug("live connections kept in the fd store against a crash", "connections", len(conns), "queues", len(names))
	}
}

// sameConns reports whether conns is the set last.
func sameConns(conns []net.Conn, last map[net.Conn]struct{}) bool {
	if len(conns) != len(last) {
		return false
	}
	for _, c := range conns {
		if _, ok := last[c]; !ok {
			return false
		}
	}
	return true
}

// stopSnapshots ends the loop; the last snapshot stays in the store until
// dropSnapshot.
func (r *runner) stopSnapshots() {
	if r.snaps == nil {
		return
	}
	select {
	case <-r.snaps.stop:
	default:
		close(r.snaps.stop)
	}
	<-r.snaps.done
}

// dropSnapshot removes the last snapshot from the store (its connections
// were stored by a stop, or moved to the next generation, or this
// generation is exiting).
func (r *runner) dropSnapshot() {
	if r.snaps == nil {
		return
	}
	r.stopSnapshots()
	r.g.removeConnQueues(r.snaps.names)
	r.snaps.names = nil
	// The record of stored queues is left to what comes next: a stop's
	// own queue, or the next generation's copies.
}
