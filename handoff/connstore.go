//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// connStorePrefix starts the fd store names of stored connection queues.
const connStorePrefix = "echod-conns-"

func connStoreName(i int) string { return connStorePrefix + strconv.Itoa(i) }

func isConnStoreName(name string) bool { return strings.HasPrefix(name, connStorePrefix) }

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
	var movable []daemon.DetachedConn
	var fds []int
	for _, d := range conns {
		if fd, ok := connFD(d.Conn); ok {
			movable = append(movable, d)
			fds = append(fds, fd)
		} else {
			kept = append(kept, d)
		}
	}
	var queued, inStore []daemon.DetachedConn // written into a queue not stored yet; stored
	q, err := newConnQueue()
	if err != nil {
		return 0, conns, err
	}
	defer func() { q.close() }()
	done := 0 // queues stored
	batch := 1
	// storeQueue hands the current queue to the store and starts a new one.
	storeQueue := func() error {
		// FDPOLL=0: the manager would drop a socket whose peer is closed
		// (this end's, once this process exits), queue and all.
		if _, err := n.StoreUnpolled(connStoreName(done), q.readFD()); err != nil {
			return err
		}
		if _, err := n.Barrier(5 * time.Second); err != nil {
			return err
		}
		done++
		stored += len(queued)
		inStore = append(inStore, queued...)
		queued = nil
		q.close()
		q, err = newConnQueue()
		return err
	}
	// send puts one message in the current queue, in a new one when it is
	// full (a queue holds what its sender's buffer allows).
	send := func(t msgType, body any, fds ...int) error {
		full, err := q.w.sendNow(t, body, fds...)
		if err == nil && full {
			if err = storeQueue(); err == nil {
				if full, err = q.w.sendNow(t, body, fds...); err == nil && full {
					err = fmt.Errorf("%s does not fit an empty queue", t)
				}
			}
		}
		return err
	}
	for len(movable) > 0 {
		k, body := batchOf(movable)
		if k == 0 {
			kept = append(kept, movable[0])
			movable, fds = movable[1:], fds[1:]
			continue
		}
		body.Batch = batch
		if err := send(msgConns, body, fds[:k]...); err != nil {
			closeStoredConns(inStore)
			return stored, append(append(kept, queued...), movable...), fmt.Errorf("handoff: storing connections: %w", err)
		}
		queued = append(queued, movable[:k]...)
		movable, fds = movable[k:], fds[k:]
		batch++
	}
	err = send(msgDone, doneMsg{Sent: stored + len(queued)})
	if err == nil {
		err = storeQueue()
	}
	if err != nil {
		closeStoredConns(inStore)
		return stored, append(kept, queued...), fmt.Errorf("handoff: storing connections: %w", err)
	}
	// In the store now (the queue holds its own reference to each socket):
	// this process's descriptors go.
	for _, d := range inStore {
		d.Conn.Close()
	}
	g.logger().Info("connections stored in the systemd fd store", "stored", stored, "kept", len(kept), "queues", done)
	return stored, kept, nil
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

// restoreStored is a first generation's part of Ready: the connections in
// the queues systemd passed back, when this generation adopts connections
// (they are served after the commit); otherwise they are closed. The
// queues are removed from the store either way.
func (g *Generation) restoreStored() []adoptedConn {
	queues := g.takeConnQueues()
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
		g.logger().Warn("connections kept in the systemd fd store by the previous process closed: this one does not adopt connections (-migrate=false?)", "closed", len(got))
		return nil
	}
	if err != nil {
		g.logger().Warn("not every stored connection came back", "err", err)
	}
	g.logger().Info("connections restored from the systemd fd store", "connections", len(got), "queues", len(queues))
	return got
}

// restoreConns reads the connection queues a stopped process of the
// service stored (files, by name), within room, and removes them from
// the store. It returns the connections, not served yet; an error tells
// what was lost (the connections read are returned all the same).
func (g *Generation) restoreConns(files map[string]*os.File, room int) ([]adoptedConn, error) {
	var got []adoptedConn
	var errs []error
	sent, sawDone, received := 0, false, 0
	for name, f := range files {
		ch, err := channelFromFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
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
					sent, sawDone = d.Sent, true
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
			received += len(b.Conns)
			if ctrunc {
				errs = append(errs, fmt.Errorf("%s: batch %d: only %d of %d descriptors fit (MSG_CTRUNC)", name, b.Batch, len(fds), len(b.Conns)))
			}
			limit := min(len(fds), max(room-len(got), 0))
			conns := fdConns(fds[:limit])
			closeFDs(fds[limit:])
			for i, c := range conns {
				got = append(got, adoptedConn{c: c, state: b.Conns[i].State})
			}
		}
		ch.Close()
		if _, err := g.opts.Notifier.Remove(name); err != nil {
			errs = append(errs, fmt.Errorf("%s: removing it from the store: %w", name, err))
		}
	}
	if !sawDone && len(files) > 0 {
		errs = append(errs, errors.New("no end marker: the process that stored them did not finish"))
	} else if sawDone && received != sent {
		errs = append(errs, fmt.Errorf("%d of %d stored connections came back", received, sent))
	}
	if len(got) < received {
		errs = append(errs, fmt.Errorf("%d connections over this process's room were closed", received-len(got)))
	}
	if err := errors.Join(errs...); err != nil {
		return got, fmt.Errorf("handoff: restoring connections: %w", err)
	}
	return got, nil
}
