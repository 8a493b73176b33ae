//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/echod/echod/daemon"
)

// The plain connection hand-over, part of an upgrade, before its commit,
// over the upgrade's channel (protocol version 2, see proto.go): the one
// a parent without Migration.Live and DetachConns, or a child that does
// not say "staged" (the builds before it), gets; staged.go has the other.
// A child that adopts live connections says so in its ready message;
// then:
//
//	parent → child  conns   a batch: up to maxFDsPerMessage sockets
//	                        (SCM_RIGHTS) and, in the body, each one's
//	                        handler state
//	child → parent  accept  how many of the batch it took (a prefix: the
//	                        rest did not fit its room, or were cut by
//	                        MSG_CTRUNC) and whether it is full; it serves
//	                        none of them yet
//	parent → child  done    no more batches: the child commits (tableflip's
//	                        readiness byte) and only then serves the
//	                        listeners and the connections it took
//
// One owner at every instant: the parent pauses accepting and takes the
// connections out of its server at a safe point, a batch at a time just
// before it sends that batch (the others are served on meanwhile), and
// keeps its own descriptor of each until the upgrade's outcome. If the
// child commits, the connections it took are its own and the parent
// closes its descriptors; if it dies, hangs (no accept within ackTimeout, or not ready
// within the upgrade timeout) or breaks the channel first, it never served
// any of them, and the parent takes every one back and accepts again.

// Message types of the hand-over.
const (
	msgConns  msgType = 5
	msgAccept msgType = 6
	msgDone   msgType = 8
)

type connsMsg struct {
	Batch int         `json:"batch"`
	Conns []connState `json:"conns"`
	// Staged: copies the parent serves on until their states come after
	// the commit (staged.go); the states here are empty.
	Staged bool `json:"staged,omitempty"`
}

type connState struct {
	State []byte `json:"state,omitempty"`
	// Remote is the peer's address, for the logs (release 2 sends it;
	// the child takes the address from the socket).
	Remote string `json:"remote,omitempty"`
}

type acceptMsg struct {
	Batch int  `json:"batch"`
	Taken int  `json:"taken"`
	Full  bool `json:"full,omitempty"`
}

type doneMsg struct {
	Sent   int  `json:"sent"`             // connections the parent sent
	Staged bool `json:"staged,omitempty"` // as copies: states follow the commit
}

// maxBatchBody bounds the states carried in one conns message, so the
// packet stays within maxMessage.
const maxBatchBody = 48 << 10

// handOverWindow is how many batches may await their accept at once.
const handOverWindow = 4

// inflight is a batch sent and not accepted yet.
type inflight struct {
	batch int
	conns []daemon.DetachedConn
}

// splitMovable appends to movable (and fds, their descriptors) the
// connections of conns that can move to another process, and to kept the
// others: only a connection with a descriptor can.
func splitMovable(movable []daemon.DetachedConn, fds []int, kept, conns []daemon.DetachedConn) ([]daemon.DetachedConn, []int, []daemon.DetachedConn) {
	for _, d := range conns {
		if fd, ok := connFD(d.Conn); ok {
			movable = append(movable, d)
			fds = append(fds, fd)
		} else {
			kept = append(kept, d)
		}
	}
	return movable, fds, kept
}

// connFD returns the descriptor of c's socket, which stays c's: the
// caller uses it while c is open. ok is false for a connection that
// exposes none (a TLS connection in user space, say): it cannot move to
// another process.
func connFD(c net.Conn) (fd int, ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return -1, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd = -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, false
	}
	return fd, fd >= 0
}

// keepAll gathers what stays with the parent after a failed hand-over.
func keepAll(kept []daemon.DetachedConn, window []inflight, rest []daemon.DetachedConn) []daemon.DetachedConn {
	out := append([]daemon.DetachedConn(nil), kept...)
	for _, w := range window {
		out = append(out, w.conns...)
	}
	return append(out, rest...)
}

// ackTimeout bounds the wait for a batch's accept.
const ackTimeout = 10 * time.Second

// Migration is how a generation hands its live connections to the next
// one (see Generation.MigrateWith); Run builds it from a Migrator.
type Migration struct {
	// Pause stops accepting, so the connections detached next are all
	// there are; the listening sockets stay open (the backlog holds new
	// clients).
	Pause func()
	// Resume accepts again, after a failed upgrade.
	Resume func()
	// Detach takes up to n live connections (n <= 0: every one) out of
	// the server, at a safe point, and none once there is none left.
	Detach func(ctx context.Context, n int) ([]daemon.DetachedConn, error)
	// Adopt serves a connection again: one the new generation did not
	// take, or all of them after a failed upgrade.
	Adopt func(c net.Conn, state []byte) error
	// Live and DetachConns, when both are set, make the hand-over staged
	// (staged.go) with a new generation that can take it: a copy of each
	// connection Live lists moves before the commit, while it is served
	// on, and DetachConns takes the copied ones out a batch at a time
	// after it (daemon's Server.Conns(0) and DetachConns), so a stream
	// pauses only while its own batch moves.
	Live        func() []net.Conn
	DetachConns func(ctx context.Context, conns []net.Conn) ([]daemon.DetachedConn, error)
}

// staged reports whether m can run the staged hand-over.
func (m *Migration) staged() bool { return m != nil && m.Live != nil && m.DetachConns != nil }

// HandOverResult tells how a hand-over went.
type HandOverResult struct {
	Moved  int           // connections the new generation took
	Kept   int           // connections this generation kept (they drain here)
	Lost   int           // connections that could not be served again here
	Took   time.Duration // from the pause to the outcome
	Detach time.Duration // of Took, spent taking connections out of the server
	Err    error         // why it stopped early or failed, if it did
}

// MigrateWith makes this generation hand its live connections to the new
// generation during each upgrade, through m, when the new generation
// adopts them (see AcceptConns). Call it before Ready.
func (g *Generation) MigrateWith(m Migration) {
	g.mu.Lock()
	g.migration = &m
	g.mu.Unlock()
}

// LastHandOver is what the last successful upgrade's hand-over did.
func (g *Generation) LastHandOver() HandOverResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastHand
}

// handOver runs the parent's side, once the child said it is ready and
// adopts connections. It returns the connections sent (the parent keeps
// them until the outcome), and those the child did not take.
func (g *Generation) handOver(ch *channel, msgs <-chan recvResult, upErr <-chan error) (sent, kept []daemon.DetachedConn, detachT time.Duration, err error) {
	g.mu.Lock()
	m := g.migration
	g.mu.Unlock()
	if m == nil {
		return nil, nil, 0, ch.send(msgDone, doneMsg{})
	}
	defer holdGC(true)()
	m.Pause()
	// Connections are taken out of the server a batch at a time, just
	// before they are sent, so that taking the next batch out overlaps the
	// child's taking the previous one. Those not taken out yet are served
	// on meanwhile.
	var (
		rest    []daemon.DetachedConn // taken out, not sent yet
		restFDs []int
		drained bool // nothing more to take out
	)
	takeOut := func(n int) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		conns, err := m.Detach(ctx, n)
		cancel()
		detachT += time.Since(start)
		if err != nil {
			// Those that did not answer are served on here: take no more.
			g.logger().Warn("detaching connections", "err", err)
			drained = true
		}
		if len(conns) == 0 {
			drained = true
		}
		rest, restFDs, kept = splitMovable(rest, restFDs, kept, conns)
	}
	// Up to window batches in flight: the child takes one while the next
	// is on its way. Accepts come back in order.
	var window []inflight
	full := false
	for batch := 1; ; {
		for !full && len(window) < handOverWindow {
			for !drained && len(rest) < maxFDsPerMessage {
				takeOut(maxFDsPerMessage - len(rest))
			}
			if len(rest) == 0 {
				break
			}
			n, body := batchOf(rest)
			if n == 0 {
				// A state too large for a message: it stays here.
				kept = append(kept, rest[0])
				rest, restFDs = rest[1:], restFDs[1:]
				continue
			}
			body.Batch = batch
			if err := ch.send(msgConns, body, restFDs[:n]...); err != nil {
				return sent, keepAll(kept, window, rest), detachT, err
			}
			window = append(window, inflight{batch: batch, conns: rest[:n]})
			rest, restFDs = rest[n:], restFDs[n:]
			batch++
		}
		if len(window) == 0 {
			break
		}
		w := window[0]
		a, err := waitAccept(msgs, upErr, w.batch, len(w.conns))
		if err != nil {
			// Sent but not accepted: the child will not commit (it gets no
			// done); keep them all.
			return sent, keepAll(kept, window, rest), detachT, err
		}
		window = window[1:]
		sent = append(sent, w.conns[:a.Taken]...)
		kept = append(kept, w.conns[a.Taken:]...)
		if a.Full && !full {
			// The child takes nothing more (it says taken=0 for the batches
			// already on their way). The rest stays here: taken out too,
			// to be counted with what drains, and served again at the
			// outcome with the others.
			full = true
			for !drained {
				takeOut(0)
			}
			kept = append(kept, rest...)
			rest, restFDs = nil, nil
		}
	}
	if err := ch.send(msgDone, doneMsg{Sent: len(sent)}); err != nil {
		return sent, kept, detachT, err
	}
	return sent, kept, detachT, nil
}

// waitAccept waits for the child's accept of batch (n connections).
func waitAccept(msgs <-chan recvResult, upErr <-chan error, batch, n int) (acceptMsg, error) {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case r := <-msgs:
		closeFDs(r.fds)
		if r.err != nil {
			return acceptMsg{}, fmt.Errorf("handoff: batch %d: %w", batch, r.err)
		}
		var a acceptMsg
		if r.m.Type != msgAccept {
			return a, fmt.Errorf("%w: batch %d: expected accept, got %s", ErrProtocol, batch, r.m.Type)
		}
		if err := decodeBody(r.m, &a); err != nil {
			return a, err
		}
		if a.Batch != batch || a.Taken < 0 || a.Taken > n {
			return a, fmt.Errorf("%w: batch %d of %d: accept %+v", ErrProtocol, batch, n, a)
		}
		return a, nil
	case err := <-upErr:
		// The upgrade ended (the child died) during the hand-over; put it
		// back for the caller.
		return acceptMsg{}, &upgradeEnded{err}
	case <-t.C:
		return acceptMsg{}, fmt.Errorf("handoff: batch %d: no answer from the new generation within %v", batch, ackTimeout)
	}
}

// upgradeEnded carries tableflip's outcome, received while waiting for an
// accept.
type upgradeEnded struct{ err error }

func (u *upgradeEnded) Error() string {
	return fmt.Sprintf("the new generation ended during the hand-over: %v", u.err)
}

// settle ends a hand-over once the upgrade's outcome is known: on success
// the sent connections are the new generation's (this process closes its
// descriptors, once the rest is done) and the kept ones are served here
// again; on failure every one is served here again and accepting resumes.
func (g *Generation) settle(success bool, rep *childReport, ch *channel) {
	g.mu.Lock()
	m := g.migration
	g.mu.Unlock()
	if m == nil {
		return
	}
	if rep.staged {
		g.settleStaged(m, success, rep, ch)
		return
	}
	sent, kept, paused, herr := rep.sent, rep.kept, rep.paused, rep.handOverErr
	res := HandOverResult{Err: herr, Detach: rep.detach}
	back := kept
	if success {
		res.Moved = len(sent)
	} else {
		back = append(append([]daemon.DetachedConn(nil), sent...), kept...)
	}
	for _, d := range back {
		if err := m.Adopt(d.Conn, d.State); err != nil {
			d.Conn.Close()
			res.Lost++
			g.logger().Error("a connection could not be served again", "remote", d.Conn.RemoteAddr(), "err", err)
		}
	}
	res.Kept = len(back) - res.Lost
	if !success {
		m.Resume()
	}
	if !paused.IsZero() {
		res.Took = time.Since(paused)
	}
	if success {
		// The new generation's now: this process's descriptors go (no
		// shutdown, the sockets live on there).
		for _, d := range sent {
			d.Conn.Close()
		}
	}
	if success {
		g.mu.Lock()
		g.lastHand = res
		g.mu.Unlock()
	}
	if len(sent)+len(kept) > 0 || herr != nil {
		g.logHandOver(success, false, res)
	}
}

// settleStaged ends a staged hand-over (staged.go): on success the staged
// connections move, a batch at a time; on failure nothing was taken out of
// the server (the child's copies die with it) and accepting resumes.
func (g *Generation) settleStaged(m *Migration, success bool, rep *childReport, ch *channel) {
	var res HandOverResult
	var moved []net.Conn
	committed := time.Now()
	if success {
		res, moved = g.rollOut(m, ch, rep.stagedConns)
	} else {
		m.Resume()
		res.Err = rep.handOverErr
	}
	res.Took = time.Since(rep.paused)
	moving := time.Since(committed)
	for _, c := range moved {
		c.Close() // the new generation's now; no shutdown
	}
	// Whatever did not move is served here: it drains, or is served on.
	res.Kept = len(m.Live())
	if success {
		g.mu.Lock()
		g.lastHand = res
		g.mu.Unlock()
	}
	if len(rep.stagedConns)+res.Kept > 0 || res.Err != nil {
		copied := rep.copied
		if copied.IsZero() {
			copied = committed
		}
		// The parts: copying the descriptors (before the commit, every
		// connection served on), the commit, and moving them after it.
		g.logHandOver(success, true, res, "copy", copied.Sub(rep.paused).Round(time.Microsecond), "commit", committed.Sub(copied).Round(time.Microsecond), "move", moving.Round(time.Microsecond))
	}
}

func (g *Generation) logHandOver(success, staged bool, res HandOverResult, more ...any) {
	args := []any{"upgrade_succeeded", success, "staged", staged, "moved", res.Moved, "kept", res.Kept, "lost", res.Lost, "took", res.Took.Round(time.Microsecond), "detach", res.Detach.Round(time.Microsecond)}
	args = append(append(args, more...), "err", res.Err)
	g.logger().Info("connection hand-over", args...)
}

// batchOf returns how many of conns go in the next batch and its body.
func batchOf(conns []daemon.DetachedConn) (int, connsMsg) {
	var body connsMsg
	size := 0
	for _, c := range conns {
		if len(body.Conns) == maxFDsPerMessage {
			break
		}
		sz := len(c.State)*4/3 + 32 // base64 in JSON
		if size+sz > maxBatchBody {
			break
		}
		size += sz
		body.Conns = append(body.Conns, connState{State: c.State})
	}
	return len(body.Conns), body
}

// Adopter serves a connection another generation handed over: daemon's
// Server.Adopt.
type Adopter func(c net.Conn, state []byte) error

// adoptedConn is a connection taken over and not served yet.
type adoptedConn struct {
	c     net.Conn
	state []byte
}

// fdConns makes net.Conns of fds (newSockConn), on up to GOMAXPROCS
// goroutines (a batch takes half the time on two cores while the parent
// waits). It takes every fd: those that became a connection are the
// connections' now, the others are closed. It returns the longest prefix
// that converted, and closes the conns after the first failure.
func fdConns(fds []int) []net.Conn {
	conns := make([]net.Conn, len(fds))
	errs := make([]error, len(fds))
	workers := max(1, min(runtime.GOMAXPROCS(0), len(fds)/32))
	chunk := (len(fds) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(fds); lo += chunk {
		hi := min(lo+chunk, len(fds))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				conns[i], errs[i] = newSockConn(fds[i])
			}
		})
	}
	wg.Wait()
	n := 0
	for n < len(fds) && errs[n] == nil {
		n++
	}
	for _, c := range conns[n:] {
		if c != nil {
			c.Close()
		}
	}
	return conns[:n]
}

// receiveConns runs in a new generation that adopts connections, after
// its ready and before its commit: it takes the batches its parent sends,
// within room (asked once, at the start), until done. It serves none:
// they are the parent's until the commit. Those of a staged hand-over
// (staged.go) are returned in staged, in the order they are numbered. An
// error means no commit: the caller closes what it got.
func (l *parentLink) receiveConns(room func() int) (got []adoptedConn, staged []net.Conn, err error) {
	full := false
	// Asked once: until the commit this process accepts nothing else, so
	// its room shrinks only by what it takes (and counting open fds is
	// not cheap with thousands of them).
	left := room()
	for {
		m, fds, ctrunc, err := l.ch.recv(true, time.Time{})
		if err != nil {
			if errors.Is(err, errEOF) {
				err = errors.New("handoff: the previous generation closed the channel during the hand-over")
			}
			return got, staged, err
		}
		switch m.Type {
		case msgDone:
			closeFDs(fds)
			return got, staged, nil
		case msgConns:
		default:
			closeFDs(fds)
			return got, staged, fmt.Errorf("%w: unexpected %s during the hand-over", ErrProtocol, m.Type)
		}
		var b connsMsg
		if err := decodeBody(m, &b); err != nil || len(fds) > len(b.Conns) || (b.Staged && len(got) > 0) || (!b.Staged && len(staged) > 0) {
			closeFDs(fds)
			if err == nil {
				err = fmt.Errorf("%w: %d fds for %d states, staged %v after %d staged and %d not", ErrProtocol, len(fds), len(b.Conns), b.Staged, len(staged), len(got))
			}
			return got, staged, err
		}
		// Take a prefix: what arrived (MSG_CTRUNC cuts the tail), within
		// room, and what becomes a connection.
		limit := len(fds)
		if full {
			limit = 0
		} else if left < limit {
			limit = max(left, 0)
		}
		conns := fdConns(fds[:limit])
		closeFDs(fds[limit:])
		if b.Staged {
			staged = append(staged, conns...)
		} else {
			for i, c := range conns {
				got = append(got, adoptedConn{c: c, state: b.Conns[i].State})
			}
		}
		taken := len(conns)
		left -= taken
		full = full || ctrunc || taken < len(b.Conns)
		if err := l.ch.send(msgAccept, acceptMsg{Batch: b.Batch, Taken: taken, Full: full}); err != nil {
			return got, staged, err
		}
		if afterAccept != nil {
			afterAccept(b.Batch)
		}
	}
}

// afterAccept, set only by tests (export_test.go), runs after the child
// accepted a batch.
var afterAccept func(batch int)

// recvResult is one receive on the parent's reader.
type recvResult struct {
	m      message
	fds    []int
	ctrunc bool
	err    error
}
