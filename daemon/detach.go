package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"
)

// ErrDetach is the cause ([context.Cause]) with which a connection's
// context is cancelled when [Server.Detach] takes it out.
var ErrDetach = errors.New("daemon: connection detached")

// ErrNotResumer is returned by [Server.Adopt] when the server's handler is
// not a [Resumer].
var ErrNotResumer = errors.New("daemon: handler cannot resume connections")

// ErrFull is returned by [Server.Adopt] when [Config.MaxConns] connections
// are served already.
var ErrFull = errors.New("daemon: server full")

// errServedAlready is returned by Adopt for a connection the server serves.
var errServedAlready = errors.New("daemon: connection served already")

// Detached is returned (directly, or wrapped: the server uses errors.As)
// by a handler that stopped serving a connection at a safe point because
// its context was cancelled with cause [ErrDetach]. State is the handler's
// opaque per-connection state (nil: none), given to [Resumer.ResumeConn]
// in the process that adopts the connection.
//
// A safe point is one where everything the handler read from the
// connection is either written back or kept in State, and nothing in
// State was written: the handler that resumes from State goes on as this
// one would have.
type Detached struct{ State []byte }

// Error says how much state the connection carries.
func (d *Detached) Error() string {
	return fmt.Sprintf("daemon: connection detached with %d bytes of state", len(d.State))
}

// Resumer is a [Handler] whose connections can be detached and resumed
// elsewhere.
//
// Its ServeConn and ResumeConn watch their context: once it is cancelled
// with cause [ErrDetach] they return a [*Detached] at the next safe point.
// [Server.Detach] also sets the connection's deadlines to now, so a
// handler blocked in Read or Write is interrupted (with
// os.ErrDeadlineExceeded): it then checks the context. A handler that sets
// deadlines of its own must check the context after it set them and before
// it blocks, or it may undo the interruption.
type Resumer interface {
	Handler
	// ResumeConn serves c from state, as ServeConn would have gone on.
	// Same contract as ServeConn.
	ResumeConn(ctx context.Context, c net.Conn, state []byte) error
}

// DetachedConn is a live connection taken out of a [Server], which no
// longer serves, tracks or counts it as active: Conn is the caller's now,
// open (its deadlines may be in the past: [Server.Adopt] clears them),
// with its handler's state. Closing Conn does not shut the socket down: a
// process that received its descriptor (SCM_RIGHTS, through
// [syscall.Conn]) goes on with the connection, and the peer notices
// nothing until every descriptor of the socket is closed.
type DetachedConn struct {
	Conn  net.Conn
	State []byte
}

// round is one Detach taking connections out; its fields are guarded by
// the server's mu.
type round struct {
	members  []net.Conn    // the connections it takes out
	pending  int           // connections that have not answered
	answered chan struct{} // closed when pending drops to 0
	expired  bool          // Detach returned: later answers are served on

	out []DetachedConn
}

func (r *round) answeredLocked() {
	r.pending--
	if r.pending == 0 {
		close(r.answered)
	}
}

// aLongTimeAgo is a deadline in the past: it interrupts a blocked Read or
// Write at once.
var aLongTimeAgo = time.Unix(1, 0)

// Detach stops accepting (every listener being served is closed and its
// accept loop has returned; Serve may be called again later, to accept
// again after a failed hand-over) and then takes out every open
// connection: it cancels the handlers' context with cause [ErrDetach] and
// sets every connection's deadlines to now, which interrupts a blocking
// read or write. A handler that returns a [*Detached] hands its connection
// over: the server stops tracking it ([Stats].Detached counts it instead
// of Closed) and returns it, open, with the handler's state. A connection
// whose handler ended otherwise meanwhile (the peer closed it) is closed
// as usual and not returned.
//
// Detach returns once every connection has answered, with a nil error.
// When ctx ends first, or [Server.Close] runs, it returns the
// connections taken out so far and an error wrapping ctx.Err() (or
// [ErrServerClosed]). The connections that had not answered then are not
// detached: their deadlines are cleared and they are served on; a handler
// that returns *Detached later is resumed in place by the server
// (ResumeConn with its state, and a fresh context).
//
// Whatever the error, the connections returned are the caller's: it must
// hand them over, close them, or give them back with [Server.Adopt].
//
// Connections adopted while Detach runs are not taken out. With a handler
// that is not a [Resumer] nothing is detached: Detach stops accepting and
// returns (nil, nil), and every connection goes on being served (the
// caller drains them with Shutdown). After Close Detach returns
// ErrServerClosed.
func (s *Server) Detach(ctx context.Context) ([]DetachedConn, error) {
	return s.DetachN(ctx, 0)
}

// DetachN is [Server.Detach] for at most n connections (n <= 0: every
// one), so that a caller can move them in batches, each paused only while
// it moves: DetachN interrupts the I/O of the connections it takes and of
// no other. It still cancels every handler's context (there is one for
// them all): a handler busy on another connection returns a [*Detached] at
// its next safe point, which the server resumes in place (ResumeConn with
// its state, a fresh context) at once. It returns no connection, and a nil
// error, once there is none left to take.
func (s *Server) DetachN(ctx context.Context, n int) ([]DetachedConn, error) {
	return s.detach(ctx, n, nil)
}

// DetachConns is [Server.Detach] for the connections of conns that the
// server still serves (others, closed meanwhile or never its own, are left
// out): a caller that copied the connections' descriptors elsewhere
// beforehand (see [Server.Conns]) moves them a batch at a time, each
// paused only for its own batch. Like DetachN it cancels every handler's
// context and interrupts the I/O of its connections only.
func (s *Server) DetachConns(ctx context.Context, conns []net.Conn) ([]DetachedConn, error) {
	if len(conns) == 0 {
		return nil, nil
	}
	return s.detach(ctx, len(conns), conns)
}

// detach takes out up to n connections: those of only, when it is not nil.
func (s *Server) detach(ctx context.Context, n int, only []net.Conn) ([]DetachedConn, error) {
	s.detachMu.Lock()
	defer s.detachMu.Unlock()

	s.mu.Lock()
	loops := s.stopListenersLocked()
	s.mu.Unlock()
	if err := waitLoops(ctx, loops); err != nil {
		return nil, fmt.Errorf("daemon: detach: waiting for the accept loops: %w", err)
	}
	if s.resumer == nil {
		return nil, nil
	}

	start := time.Now()
	r, err := s.startRound(n, only)
	if r == nil {
		return nil, err
	}
	select {
	case <-r.answered:
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.ctx.Done():
		err = ErrServerClosed
	}
	late, out := s.endRound(r)
	if late == 0 && !errors.Is(err, ErrServerClosed) {
		err = nil // every connection answered, just as ctx ended
	}
	if err != nil {
		err = fmt.Errorf("daemon: detach: %d connections had not answered and are served on: %w", late, err)
	}
	level := slog.LevelInfo
	if n > 0 {
		level = slog.LevelDebug // one batch of many
	}
	s.log.Log(context.Background(), level, "connections detached", "detached", len(out), "late", late, "took", time.Since(start))
	return out, err
}

// startRound cancels the handlers' context with cause ErrDetach, makes up
// to n connections (n <= 0: every one; those of only that are tracked,
// when only is not nil) part of a new round and interrupts their I/O. It
// returns nil when there is nothing to take out.
func (s *Server) startRound(n int, only []net.Conn) (*round, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return nil, ErrServerClosed
	}
	if len(s.conns) == 0 {
		return nil, nil
	}
	if n <= 0 || n > len(s.conns) {
		n = len(s.conns)
	}
	r := &round{answered: make(chan struct{}), members: make([]net.Conn, 0, n)}
	// A connection left over from an earlier round that expired (its
	// handler has not answered yet) joins this one.
	if only == nil {
		for c := range s.conns {
			if len(r.members) == n {
				break
			}
			s.conns[c] = r
			r.members = append(r.members, c)
		}
	} else {
		for _, c := range only {
			if cur, ok := s.conns[c]; ok && cur != r && len(r.members) < n {
				s.conns[c] = r
				r.members = append(r.members, c)
			}
		}
		if len(r.members) == 0 {
			return nil, nil
		}
	}
	r.pending = len(r.members)
	cancel := s.hcancel
	s.hctx, s.hcancel = context.WithCancelCause(s.ctx)
	// The context first, then the deadlines: a handler that sets a
	// deadline of its own and then checks its context cannot miss both.
	cancel(ErrDetach)
	for _, c := range r.members {
		// Under mu: a handler resumed in place had its deadlines
		// cleared under mu too, before it started, so this one holds.
		_ = c.SetDeadline(aLongTimeAgo) // fails only once c is closed: its handler ends anyway
	}
	return r, nil
}

// endRound marks r expired, so that a handler answering from now on is
// served on, and clears the deadlines of the connections that have not
// answered, which are served on too. It returns how many there are, and
// the connections taken out.
func (s *Server) endRound(r *round) (late int, out []DetachedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.expired = true
	for _, c := range r.members {
		if s.conns[c] == r {
			late++
			_ = c.SetDeadline(time.Time{})
		}
	}
	return late, r.out
}

// answer handles a handler's *Detached for c. It returns the context to
// resume c with, or nil when c was handed over to the Detach taking it
// out, or closed.
func (s *Server) answer(c net.Conn, ctx context.Context, d *Detached) context.Context {
	s.mu.Lock()
	r, tracked := s.conns[c]
	switch {
	case !tracked: // Close cut it
		s.mu.Unlock()
		s.connDone(c)
		return nil
	case r == nil || r.expired:
		if s.resumer == nil || context.Cause(ctx) != ErrDetach {
			s.mu.Unlock()
			s.log.Warn("handler returned Detached without a detach; connection closed", "remote", remoteAddr(c))
			s.connDone(c)
			return nil
		}
		// Its Detach returned before it answered: it is served on.
		return s.resumeLocked(c, r)
	}
	// Taken out: the caller of Detach owns c from here.
	r.out = append(r.out, DetachedConn{Conn: c, State: d.State})
	s.untrackLocked(c, r)
	s.mu.Unlock()
	s.gate.release()
	return nil
}

// resumeLocked takes c out of round r (nil: none) to be served on, and
// unlocks mu. Its deadlines are cleared under mu, so that a Detach that
// starts next interrupts the resumed handler.
func (s *Server) resumeLocked(c net.Conn, r *round) context.Context {
	if r != nil {
		s.conns[c] = nil
		r.answeredLocked()
	}
	_ = c.SetDeadline(time.Time{})
	ctx := s.hctx
	s.mu.Unlock()
	return ctx
}

// Adopt serves c, a connection detached elsewhere (in another process, or
// by this server's Detach and taken back after a failed hand-over), from
// state, with the handler's [Resumer.ResumeConn], in its own goroutine,
// once it cleared c's deadlines. It
// is tracked and counted like an accepted connection ([Stats].Active,
// Adopted), takes a slot of [Config.MaxConns], is drained by Shutdown, cut
// by Close and taken out by a later Detach. On success the server owns c.
//
// Adopt is accepted during a Shutdown, which then waits for c too: a
// connection whose hand-over failed is taken back while the old
// generation drains. It returns [ErrServerClosed] after [Server.Close]
// began or once a Shutdown returned nil (nothing would wait for c),
// [ErrNotResumer] when the handler is not a Resumer, and [ErrFull] when
// MaxConns connections are served already; c then stays the caller's,
// untouched.
func (s *Server) Adopt(c net.Conn, state []byte) error {
	if s.resumer == nil {
		return ErrNotResumer
	}
	if !s.gate.tryTake() {
		return ErrFull
	}
	ctx, err := s.trackConn(c, true)
	if err != nil {
		s.gate.release()
		return err
	}
	go s.resumeConn(c, ctx, state)
	return nil
}

// remoteAddr is c's peer address as a string, for logs.
func remoteAddr(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Room returns how many more connections Adopt would take now before
// [Config.MaxConns] refuses with [ErrFull]: a bound a process taking over
// connections checks before it commits to them. Without MaxConns it is
// [math.MaxInt].
func (s *Server) Room() int {
	if f := s.gate.free(); f >= 0 {
		return f
	}
	return math.MaxInt
}
