//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/echod/echod/daemon"
)

// The staged hand-over: how a parent whose server can list and name its
// connections (Migration.Live and DetachConns) hands them to a child that
// says "staged" in its ready message. It keeps the guarantee of the plain
// hand-over (migrate.go: a child that dies, hangs or breaks the channel
// before its commit takes nothing, and the parent loses nothing) and cuts
// the pause a stream sees from the whole hand-over to its own batch:
//
//	before the commit: the parent pauses accepting and sends a copy of
//	every live connection's descriptor (conns, staged: true, no state),
//	and goes on serving them all. The child takes what its room allows
//	(accept, as in the plain hand-over), makes each a connection and
//	serves none. done; the child commits.
//	after the commit: the parent takes the staged connections out of its
//	server a batch at a time (Migration.DetachConns, at a safe point) and
//	sends each batch's states (resume: the connection's number in the
//	staging order and its handler's state), then closes its descriptors:
//	the connections are the child's, which serves each at once. end.
//
// A staged connection that got no state (the parent closed it meanwhile,
// or its handler did not answer and it drains there) is closed in the
// child when end comes, or when the channel breaks: the child's copy never
// served a byte. After the commit the child owns what it resumed; if it
// dies then, those die with it as with any crash of a serving generation
// (the fd store's copy against a crash, if on, keeps them), and the parent
// serves on every connection not sent yet, as it would one that stayed.

// Message types of the staged hand-over, after the commit.
const (
	msgResume msgType = 9
	msgEnd    msgType = 10
)

// resumeMsg carries states of staged connections, by number.
type resumeMsg struct {
	Conns []resumeState `json:"conns"`
}

type resumeState struct {
	ID    int    `json:"id"` // the connection's place in the staging order, from 0
	State []byte `json:"state,omitempty"`
}

type endMsg struct {
	Moved int `json:"moved"` // connections whose state the parent sent
}

// detachTimeout bounds the wait for a batch's handlers to reach a safe
// point after the commit; one that did not is served on by the parent.
// Below ackTimeout, the child's wait for each message.
const detachTimeout = ackTimeout / 2

// stageBatch is a batch of copies sent and not accepted yet.
type stageBatch struct {
	batch int
	conns []net.Conn
}

// stageConns runs the parent's side before the commit: it sends a copy of
// every live connection that has a descriptor, and returns those the child
// took, in the order it numbers them. The parent serves them all on.
func (g *Generation) stageConns(m *Migration, ch *channel, msgs <-chan recvResult, upErr <-chan error) (staged []net.Conn, err error) {
	live := m.Live()
	var window []stageBatch
	full := false
	next := 0
	for batch := 1; ; {
		for !full && len(window) < handOverWindow && next < len(live) {
			hi := min(next+maxFDsPerMessage, len(live))
			var held []net.Conn
			var serr error
			// Held while sent: served on meanwhile, a connection that
			// closes keeps its number until the send is over.
			holdConns(live[next:hi], nil, nil, func(cs []net.Conn, fds []int) {
				held = cs
				if len(fds) > 0 {
					serr = ch.send(msgConns, connsMsg{Batch: batch, Staged: true, Conns: make([]connState, len(fds))}, fds...)
				}
			})
			next = hi
			if serr != nil {
				return staged, serr
			}
			if len(held) > 0 {
				window = append(window, stageBatch{batch: batch, conns: held})
				batch++
			}
		}
		if len(window) == 0 {
			break
		}
		w := window[0]
		a, err := waitAccept(msgs, upErr, w.batch, len(w.conns))
		if err != nil {
			return staged, err
		}
		window = window[1:]
		staged = append(staged, w.conns[:a.Taken]...)
		full = full || a.Full
	}
	return staged, ch.send(msgDone, doneMsg{Sent: len(staged), Staged: true})
}

// rollOut runs the parent's side after the commit: the staged connections
// move, a batch at a time. It returns how many moved, how many stay
// served here (their handler did not answer in time, a state too large
// for a message, or the channel broke) and how many were lost (could not
// be served here again), and the connections moved: their descriptors
// here are the caller's to close (each close costs the poller's
// bookkeeping, which no batch need wait for).
func (g *Generation) rollOut(m *Migration, ch *channel, staged []net.Conn) (res HandOverResult, moved []net.Conn) {
	defer holdGC(true)()
	ids := make(map[net.Conn]int, len(staged))
	for i, c := range staged {
		ids[c] = i
	}
	keep := func(ds []daemon.DetachedConn) {
		for _, d := range ds {
			if err := m.Adopt(d.Conn, d.State); err != nil {
				d.Conn.Close()
				res.Lost++
				g.logger().Error("a connection could not be served again", "remote", d.Conn.RemoteAddr(), "err", err)
				continue
			}
			res.Kept++
		}
	}
	for lo := 0; lo < len(staged); lo += maxFDsPerMessage {
		batch := staged[lo:min(lo+maxFDsPerMessage, len(staged))]
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), detachTimeout)
		out, err := m.DetachConns(ctx, batch)
		cancel()
		res.Detach += time.Since(start)
		if err != nil {
			// Those that did not answer are served on here.
			g.logger().Warn("detaching connections", "err", err)
		}
		for len(out) > 0 {
			n, body := resumeBatchOf(out, ids)
			if n == 0 {
				// A state too large for a message: it stays here.
				keep(out[:1])
				out = out[1:]
				continue
			}
			if err := ch.send(msgResume, body); err != nil {
				// The new generation is gone, or its channel broke: what
				// it did not get is served here (the rest of the staged
				// ones were never taken out).
				keep(out)
				res.Err = err
				return res, moved
			}
			for _, d := range out[:n] {
				moved = append(moved, d.Conn)
			}
			res.Moved += n
			out = out[n:]
		}
	}
	if err := ch.send(msgEnd, endMsg{Moved: res.Moved}); err != nil {
		res.Err = err
	}
	return res, moved
}

// resumeBatchOf returns how many of ds go in the next resume message, and
// its body.
func resumeBatchOf(ds []daemon.DetachedConn, ids map[net.Conn]int) (int, resumeMsg) {
	var body resumeMsg
	size := 0
	for _, d := range ds {
		sz := len(d.State)*4/3 + 32 // base64 in JSON, and the id
		if size+sz > maxBatchBody {
			break
		}
		size += sz
		body.Conns = append(body.Conns, resumeState{ID: ids[d.Conn], State: d.State})
	}
	return len(body.Conns), body
}

// rollIn runs in the child after its commit, in its own goroutine, and
// owns the link until it returns: it serves each staged connection as its
// state comes, and closes those that got none at the end (see above).
func (g *Generation) rollIn(l *parentLink, staged []net.Conn, done func(HandOverResult)) {
	defer l.close()
	g.mu.Lock()
	adopt := g.adopt
	g.mu.Unlock()
	var res HandOverResult
	start := time.Now()
	left := len(staged)
	err := func() error {
		for {
			m, fds, ctrunc, err := l.ch.recv(true, time.Now().Add(ackTimeout))
			closeFDs(fds)
			switch {
			case errors.Is(err, errEOF):
				return errors.New("handoff: the previous generation closed the channel before the end of the hand-over")
			case err != nil:
				return err
			case ctrunc || len(fds) > 0:
				return fmt.Errorf("%w: file descriptors with %s", ErrProtocol, m.Type)
			}
			switch m.Type {
			case msgEnd:
				return nil
			case msgResume:
			default:
				return fmt.Errorf("%w: unexpected %s after the commit", ErrProtocol, m.Type)
			}
			var b resumeMsg
			if err := decodeBody(m, &b); err != nil {
				return err
			}
			for _, s := range b.Conns {
				if s.ID < 0 || s.ID >= len(staged) || staged[s.ID] == nil {
					return fmt.Errorf("%w: resume of connection %d (of %d staged, or twice)", ErrProtocol, s.ID, len(staged))
				}
				c := staged[s.ID]
				staged[s.ID] = nil
				left--
				if err := adopt.fn(c, s.State); err != nil {
					// Ours now, and refused: nothing else can serve it.
					c.Close()
					res.Lost++
					res.Err = fmt.Errorf("handoff: adopt %s: %w", c.RemoteAddr(), err)
					continue
				}
				res.Moved++
			}
		}
	}()
	if err != nil {
		res.Err = err
	}
	// Staged and never resumed: closed by the previous generation, or
	// served on there. This copy never served a byte.
	for _, c := range staged {
		if c != nil {
			c.Close()
		}
	}
	res.Kept = left
	res.Took = time.Since(start)
	done(res)
}
