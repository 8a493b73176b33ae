//go:build linux

package handoff

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/systemd"
)

// Live connections across a restart, through systemd's fd store. A
// stopping generation (Options.FDStore, a Migrator server) takes its
// connections out of its server at a safe point and writes them, a batch
// at a time, into one end of a SOCK_SEQPACKET socketpair: the same "conns"
// messages as a hand-over (protocol version 2, see proto.go and
// migrate.go), then "done" with the count. It stores only the other end,
// whose receive queue keeps every descriptor in flight alive, and closes
// everything else. So the store holds a handful of fds, not one per
// connection: LISTEN_FDNAMES stays short (it is capped at 128 KiB), the
// unit's FileDescriptorStoreMax= does not grow with the connections, and
// systemd's check of stored fds against RLIMIT_NOFILE does not apply to
// the sockets in flight. A queue holds what fits its sender's buffer
// (about 80 batches of idle connections); more go into further pairs,
// stored under the next names.
//
// The next process of the service (a first generation) finds these
// sockets among LISTEN_FDS by name, reads every message, takes what fits
// its room, removes them from the store and serves the connections once
// it is ready, each from its state, as after a hand-over. A connection
// whose peer hung up meanwhile reads EOF and is closed then.
//
// What a stop stores, systemd flushes when the unit becomes inactive
// (systemctl stop; FileDescriptorStorePreserve= is v254+): the manager
// closes the sockets, and their peers see the connection closed.

// connStorePrefix starts the fd store names of the queues a stop leaves;
// liveStorePrefix those of the snapshots of the live connections a
// serving process keeps there against a crash (see snapshotConns).
const (
	connStorePrefix = "echod-conns-"
	liveStorePrefix = "echod-live-"
)

func connStoreName(i int) string { return connStorePrefix + strconv.Itoa(i) }

func isConnStoreName(name string) bool {
	return strings.HasPrefix(name, connStorePrefix) || strings.HasPrefix(name, liveStorePrefix)
}

// queueWriter writes connections into queues kept in the fd store, one
// after another as each fills; nameOf names the i-th.
type queueWriter struct {
	n      *systemd.Notifier
	nameOf func(i int) string
	q      *connQueue
	names  []string // queues stored
	sent   int      // connections sent, into every queue
	stored int      // of those, in queues stored
	inQ    int      // in the current queue
	batch  int
}

func newQueueWriter(n *systemd.Notifier, nameOf func(int) string) (*queueWriter, error) {
	q, err := newConnQueue()
	if err != nil {
		return nil, err
	}
	return &queueWriter{n: n, nameOf: nameOf, q: q, batch: 1}, nil
}

// storeQueue hands the current queue to the store and starts a new one.
func (w *queueWriter) storeQueue() error {
	name := w.nameOf(len(w.names))
	// FDPOLL=0: the manager would drop a socket whose peer is closed
	// (this end's, once this process exits), queue and all.
	if _, err := w.n.StoreUnpolled(name, w.q.readFD()); err != nil {
		return err
	}
	if _, err := w.n.Barrier(5 * time.Second); err != nil {
		// The manager may hold it: take it back, or the connections in it
		// would be served here and by the next process.
		_, _ = w.n.Remove(name)
		return err
	}
	w.names = append(w.names, name)
	w.stored += w.inQ
	w.inQ = 0
	w.q.close()
	q, err := newConnQueue()
	w.q = q
	return err
}

// send puts one message in the current queue, in a new one when it is
// full (a queue holds what its sender's buffer allows).
func (w *queueWriter) send(t msgType, body any, fds ...int) error {
	full, err := w.q.w.sendNow(t, body, fds...)
	if err == nil && full {
		if err = w.storeQueue(); err == nil {
			if full, err = w.q.w.sendNow(t, body, fds...); err == nil && full {
				err = fmt.Errorf("%s does not fit an empty queue", t)
			}
		}
	}
	return err
}

// conns writes one batch: conns with their descriptors. It returns how
// many it took (a prefix: batchOf's bound on the states).
func (w *queueWriter) conns(conns []daemon.DetachedConn, fds []int) (int, error) {
	k, body := batchOf(conns)
	if k == 0 {
		return 0, nil
	}
	body.Batch = w.batch
	if err := w.send(msgConns, body, fds[:k]...); err != nil {
		return 0, err
	}
	w.batch++
	w.sent += k
	w.inQ += k
	return k, nil
}

// bare writes one batch of descriptors without state (a snapshot's) into
// the current queue; full reports it has no room (nothing was sent).
func (w *queueWriter) bare(fds []int) (full bool, err error) {
	body := connsMsg{Batch: w.batch, Conns: make([]connState, len(fds))}
	if full, err = w.q.w.sendNow(msgConns, body, fds...); err != nil || full {
		return full, err
	}
	w.batch++
	w.sent += len(fds)
	w.inQ += len(fds)
	return false, nil
}

// finish ends with "done" and stores the last queue.
func (w *queueWriter) finish() error {
	if err := w.send(msgDone, doneMsg{Sent: w.sent}); err != nil {
		return err
	}
	return w.storeQueue()
}

func (w *queueWriter) close() {
	if w != nil {
		w.q.close()
	}
}

// StoreConns writes conns into queues kept in the fd store (see above)
// for the next process of the service, and closes them here: it returns
// how many were stored, and those it could not store (no descriptor, a
// state too large, or the store failed), still open, for the caller to
// serve or drain. Nothing is stored without Options.FDStore.
func (g *Generation) StoreConns(conns []daemon.DetachedConn) (stored int, kept []daemon.DetachedConn, err error) {
	n := g.opts.FDStore
	if !n.Enabled() {
		return 0, conns, nil
	}
	movable, fds, kept := splitMovable(nil, nil, nil, conns)
	w, err := newQueueWriter(n, connStoreName)
	if err != nil {
		return 0, conns, err
	}
	defer w.close()
	var sent []daemon.DetachedConn // in order: the first w.stored are in stored queues
	fail := func(err error) (int, []daemon.DetachedConn, error) {
		closeStoredConns(sent[:w.stored])
		return w.stored, append(append(kept, sent[w.stored:]...), movable...), fmt.Errorf("handoff: storing connections: %w", err)
	}
	for len(movable) > 0 {
		k, err := w.conns(movable, fds)
		if err != nil {
			return fail(err)
		}
		if k == 0 {
			// A state too large for a message: it stays here.
			kept = append(kept, movable[0])
			k = 1
		} else {
			sent = append(sent, movable[:k]...)
		}
		movable, fds = movable[k:], fds[k:]
	}
	if err := w.finish(); err != nil {
		return fail(err)
	}
	// In the store now (the queue holds its own reference to each socket):
	// this process's descriptors go.
	closeStoredConns(sent)
	g.recordConnQueues(w.names)
	g.logger().Info("connections stored in the systemd fd store", "stored", w.stored, "kept", len(kept), "queues", len(w.names))
	return w.stored, kept, nil
}

// snapshotConns keeps a copy of conns, served on here, in the fd store,
// in queues named for this process and seq, so that they outlive a crash
// of this process: the next process of the service serves them (with no
// state: what this one had read and not written back dies with it). It
// returns the queues' names, to be removed once a newer snapshot is
// stored. A connection closed here stays open in the store until then:
// its peer sees the close only when that snapshot goes.
func (g *Generation) snapshotConns(conns []net.Conn, seq int) ([]string, error) {
	prefix := fmt.Sprintf("%s%d-%d-", liveStorePrefix, os.Getpid(), seq)
	w, err := newQueueWriter(g.opts.FDStore, func(i int) string { return prefix + strconv.Itoa(i) })
	if err != nil {
		return nil, err
	}
	defer w.close()
	for start := 0; start < len(conns); {
		var full bool
		var serr error
		// The connections are served on meanwhile and may close: their
		// descriptors are held (Control) while they are sent, so that a
		// number reused by another file is never sent (a duplicate each
		// would double the descriptors this process holds). Not while a
		// full queue is stored: a connection closing here would wait.
		holdConns(conns[start:min(start+maxFDsPerMessage, len(conns))], nil, nil, func(_ []net.Conn, fds []int) {
			if len(fds) > 0 {
				full, serr = w.bare(fds)
			}
		})
		if serr == nil && full {
			serr = w.storeQueue() // and the batch again, in a new one
		} else if serr == nil {
			start += maxFDsPerMessage
		}
		if serr != nil {
			g.removeConnQueues(w.names)
			return nil, serr
		}
	}
	if err := w.finish(); err != nil {
		g.removeConnQueues(w.names)
		return nil, err
	}
	return w.names, nil
}

// holdConns calls f with the connections of conns that have a descriptor
// and are not closed, and their descriptors, each held by its
// connection's Control (so not closed, nor its number reused, before f
// returns). held and fds are what it appends to.
func holdConns(conns, held []net.Conn, fds []int, f func(held []net.Conn, fds []int)) {
	if len(conns) == 0 {
		f(held, fds)
		return
	}
	ok := false
	if sc, is := conns[0].(syscall.Conn); is {
		if rc, err := sc.SyscallConn(); err == nil {
			ok = rc.Control(func(s uintptr) {
				holdConns(conns[1:], append(held, conns[0]), append(fds, int(s)), f)
			}) == nil
		}
	}
	if !ok {
		holdConns(conns[1:], held, fds, f)
	}
}

// removeConnQueues removes queues from the store (the manager closes its
// copies: a connection closed here meanwhile is closed for good then).
func (g *Generation) removeConnQueues(names []string) {
	for _, name := range names {
		if _, err := g.opts.Notifier.Remove(name); err != nil {
			g.logger().Warn("removing a connection queue from the fd store", "fdname", name, "err", err)
		}
	}
}

// closeStoredConns closes this process's descriptors of connections the
// store holds.
func closeStoredConns(ds []daemon.DetachedConn) {
	for _, d := range ds {
		d.Conn.Close()
	}
}

// connQueue is one socketpair: w writes, r is stored.
type connQueue struct {
	w *channel
	r *os.File
}

func newConnQueue() (*connQueue, error) {
	w, r, err := newChannelPair()
	if err != nil {
		return nil, err
	}
	if connQueueSndBuf > 0 {
		if err := w.c.SetWriteBuffer(connQueueSndBuf); err != nil {
			w.Close()
			r.Close()
			return nil, err
		}
	}
	return &connQueue{w: w, r: r}, nil
}

// connQueueSndBuf, set only by tests, makes queues small (SO_SNDBUF), so
// that a few batches fill one.
var connQueueSndBuf int

func (q *connQueue) readFD() int { return int(q.r.Fd()) }

func (q *connQueue) close() {
	if q != nil {
		q.w.Close()
		q.r.Close()
	}
}

// sendNow sends one message without waiting: full reports that the
// socket's buffer has no room for it (nothing was sent).
func (ch *channel) sendNow(t msgType, body any, fds ...int) (full bool, err error) {
	b, err := encodeMessage(t, body)
	if err != nil {
		return false, err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := ch.c.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, oob, nil, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false, err
	}
	if serr == unix.EAGAIN {
		return true, nil
	}
	if serr != nil {
		return false, fmt.Errorf("handoff: send %s: %w", t, serr)
	}
	return false, nil
}

// keepConnQueues keeps the connection queues systemd passed back, for
// Ready.
func (g *Generation) keepConnQueues(files []systemd.File) {
	if len(files) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.connQueues == nil {
		g.connQueues = map[string]*os.File{}
	}
	for _, f := range files {
		if old := g.connQueues[f.Name]; old != nil {
			old.Close()
		}
		g.connQueues[f.Name] = f.File
	}
}

// takeConnQueues returns the connection queues kept for Ready, once.
func (g *Generation) takeConnQueues() map[string]*os.File {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.connQueues
	g.connQueues = nil
	return q
}

// connMarkerFile records, in the state directory, the connection queues
// this service keeps in the store, so that a process that gets none of
// them back can tell the operator why (see checkRestored).
func (g *Generation) connMarkerFile() string {
	return filepath.Join(g.opts.StateDir, "fdstore.conns")
}

// recordConnQueues notes the queues now in the store (none: the record
// goes).
func (g *Generation) recordConnQueues(names []string) {
	if g.noStateDir {
		return
	}
	if len(names) == 0 {
		if err := os.Remove(g.connMarkerFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			g.logger().Warn("cannot remove the record of stored connections", "file", g.connMarkerFile(), "err", err)
		}
		return
	}
	if err := writeAtomic(g.connMarkerFile(), strings.Join(names, "\n")+"\n"); err != nil {
		g.logger().Warn("cannot record stored connections", "file", g.connMarkerFile(), "err", err)
	}
}

// checkConnQueues warns when the previous process of the service kept
// connections in the store (its record says so) and none came back:
// systemd drops stored fds silently over FileDescriptorStoreMax=.
func (g *Generation) checkConnQueues(got int) {
	if g.noStateDir {
		return
	}
	b, err := os.ReadFile(g.connMarkerFile())
	if err != nil {
		return
	}
	if want := strings.Fields(string(b)); len(want) > 0 && got == 0 {
		g.logger().Warn("connections kept in the systemd fd store by the previous process did not come back: is FileDescriptorStoreMax= high enough? (expected after a full stop: the store is flushed then)", "queues_stored_before", len(want))
	}
	g.recordConnQueues(nil)
}

// restoreStored is a first generation's part of Ready: the connections in
// the queues systemd passed back, when this generation adopts connections
// (they are served after the commit); otherwise they are closed. The
// queues are removed from the store either way.
func (g *Generation) restoreStored() []adoptedConn {
	queues := g.takeConnQueues()
	g.checkConnQueues(len(queues))
	if len(queues) == 0 {
		return nil
	}
	g.mu.Lock()
	adopt := g.adopt
	g.mu.Unlock()
	room := 0
	if adopt != nil {
		room = adopt.room()
	}
	got, err := g.restoreConns(queues, room)
	if adopt == nil {
		closeAdopted(got)
		g.logger().Warn("connections kept in the systemd fd store by the previous process closed: this one does not adopt connections (-migrate=false?)", "err", err)
		return nil
	}
	if err != nil {
		g.logger().Warn("not every stored connection came back", "err", err)
	}
	g.logger().Info("connections restored from the systemd fd store", "connections", len(got), "queues", len(queues))
	return got
}

// restoreConns reads the connection queues a stopped or crashed process
// of the service stored (files, by name), within room, and removes them
// from the store. A socket found twice (a stop's queue and a snapshot
// that was not removed yet) is taken once, from the stop's queue, which
// carries its state. It returns the connections, not served yet; an error
// tells what was lost (the connections read are returned all the same).
func (g *Generation) restoreConns(files map[string]*os.File, room int) ([]adoptedConn, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.SortFunc(names, compareQueueNames)
	var got []adoptedConn
	var errs []error
	seen := map[uint64]bool{} // socket inodes taken
	type set struct {
		sent, received int
		sawDone        bool
	}
	sets := map[string]*set{}
	var order []string
	dups, over := 0, 0
	for _, name := range names {
		setName, _ := queueSet(name)
		st := sets[setName]
		if st == nil {
			st = &set{}
			sets[setName] = st
			order = append(order, setName)
		}
		ch, err := channelFromFile(files[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			g.removeConnQueues([]string{name})
			continue
		}
		for {
			m, fds, ctrunc, err := ch.recv(false, time.Time{})
			if errors.Is(err, errNoMessage) || errors.Is(err, errEOF) {
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				break
			}
			switch m.Type {
			case msgDone:
				closeFDs(fds)
				var d doneMsg
				if err := decodeBody(m, &d); err == nil {
					st.sent, st.sawDone = d.Sent, true
				}
				continue
			case msgConns:
			default:
				closeFDs(fds)
				errs = append(errs, fmt.Errorf("%w: %s: unexpected %s", ErrProtocol, name, m.Type))
				continue
			}
			var b connsMsg
			if err := decodeBody(m, &b); err != nil || len(fds) > len(b.Conns) {
				closeFDs(fds)
				errs = append(errs, fmt.Errorf("%w: %s: batch %d: %d fds for %d states (%v)", ErrProtocol, name, b.Batch, len(fds), len(b.Conns), err))
				continue
			}
			st.received += len(b.Conns)
			if ctrunc {
				errs = append(errs, fmt.Errorf("%s: batch %d: only %d of %d descriptors fit (MSG_CTRUNC)", name, b.Batch, len(fds), len(b.Conns)))
			}
			var take []int
			var states [][]byte
			for i, fd := range fds {
				ino, ok := sockInode(fd)
				switch {
				case ok && seen[ino]:
					unix.Close(fd)
					dups++
				case len(got)+len(take) >= room:
					unix.Close(fd)
					over++
				default:
					seen[ino] = true
					take = append(take, fd)
					states = append(states, b.Conns[i].State)
				}
			}
			conns := fdConns(take)
			for i, c := range conns {
				got = append(got, adoptedConn{c: c, state: states[i]})
			}
			if bad := len(take) - len(conns); bad > 0 {
				errs = append(errs, fmt.Errorf("%s: batch %d: %d descriptors were not connections", name, b.Batch, bad))
			}
		}
		ch.Close()
		g.removeConnQueues([]string{name})
	}
	for _, name := range order {
		st := sets[name]
		switch {
		case !st.sawDone:
			errs = append(errs, fmt.Errorf("%s: no end marker: the process that stored it did not finish", name))
		case st.received != st.sent:
			errs = append(errs, fmt.Errorf("%s: %d of %d stored connections came back", name, st.received, st.sent))
		}
	}
	if over > 0 {
		errs = append(errs, fmt.Errorf("%d connections over this process's room were closed", over))
	}
	if dups > 0 {
		g.logger().Debug("connections found in more than one queue, taken once", "duplicates", dups)
	}
	if err := errors.Join(errs...); err != nil {
		return got, fmt.Errorf("handoff: restoring connections: %w", err)
	}
	return got, nil
}

// queueSet splits a queue's name into the name of its set (a stop's, or
// one snapshot's) and its index in the set.
func queueSet(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	n, err := strconv.Atoi(name[i+1:])
	if i < 0 || err != nil {
		return name, 0
	}
	return name[:i], n
}

// compareQueueNames orders a stop's queues before snapshots, then by set
// and index.
func compareQueueNames(a, b string) int {
	rank := func(n string) int {
		if strings.HasPrefix(n, connStorePrefix) {
			return 0
		}
		return 1
	}
	if c := cmp.Compare(rank(a), rank(b)); c != 0 {
		return c
	}
	sa, ia := queueSet(a)
	sb, ib := queueSet(b)
	if c := strings.Compare(sa, sb); c != 0 {
		return c
	}
	return cmp.Compare(ia, ib)
}

// sockInode returns the inode of fd's socket.
func sockInode(fd int) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}
