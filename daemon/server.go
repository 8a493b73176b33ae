package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown] or
// [Server.Close], or when [Server.Detach] stopped its listener; and by
// [Server.Adopt] after Close, or once a Shutdown drained the server.
var ErrServerClosed = errors.New("daemon: server closed")

// Config holds the settings of a [Server]. The zero value is usable: an
// echo server without limits.
type Config struct {
	// Handler serves each connection. Nil means an [Echo] configured by
	// IdleTimeout and WriteTimeout below.
	Handler Handler
	// IdleTimeout configures the echo handler: it closes a connection that
	// sent nothing for this long. Zero means never. Ignored when Handler
	// is set.
	IdleTimeout time.Duration
	// WriteTimeout configures the echo handler: it bounds writing one
	// echoed chunk back to a client that does not read. Zero means 30s.
	// Ignored when Handler is set.
	WriteTimeout time.Duration
	// MaxConns bounds the connections served at once across all listeners.
	// At the limit the accept loops stop accepting, so new connections
	// wait in the kernel's backlog instead of being accepted and dropped.
	// A loop holds no slot while it waits in Accept, so every listener
	// keeps accepting even when MaxConns is below the number of listeners;
	// the price is that a loop whose Accept returns just after the last
	// slot went to another listener holds that connection, unserved, until
	// a slot frees (at most one connection per listener). Zero means no
	// limit.
	MaxConns int
	// Logger receives one line per event that matters. Nil discards.
	Logger *slog.Logger
}

// Stats is a snapshot of a server's counters. Every connection served is
// accepted or adopted, and leaves closed or detached:
// Accepted+Adopted = Active+Closed+Detached in every snapshot.
type Stats struct {
	Active      int    // connections being served now
	Accepted    uint64 // connections handed to the handler since start
	Adopted     uint64 // connections [Server.Adopt] took in since start
	Closed      uint64 // connections finished since start
	Detached    uint64 // connections [Server.Detach] took out since start
	Bytes       uint64 // bytes echoed since start, if the handler is an [Echo]
	ForceClosed uint64 // connections that [Server.Close] cut
}

// Server serves connections from one or more listeners, each connection in
// its own goroutine through one [Handler], and drains: Shutdown stops
// accepting and waits for the connections to end. Create it with [New].
type Server struct {
	handler Handler
	echo    *Echo   // handler, when it is an *Echo; nil otherwise
	resumer Resumer // handler, when it is a Resumer; nil otherwise
	log     *slog.Logger
	gate    *gate // nil when MaxConns == 0

	// ctx is the parent of every handler's context; cancel is called by
	// Close only.
	ctx    context.Context
	cancel context.CancelFunc

	detachMu sync.Mutex // one Detach at a time

	mu        sync.Mutex
	listeners map[*servedListener]struct{}
	// conns holds every connection being served, with the Detach round
	// taking it out (nil: none, or it answered). nil once Close ran.
	conns map[net.Conn]*round
	// since holds when each connection in conns began to be served here
	// (unix nanoseconds; 0 for an adopted one: it lived elsewhere first).
	since map[net.Conn]int64
	live  int           // connections whose goroutine has not ended, also after Close
	idle  chan struct{} // closed when live drops to 0; nil while nobody waits
	// hctx is the context given to the handlers started from now on; a
	// child of ctx that Detach cancels with cause ErrDetach and replaces.
	hctx    context.Context
	hcancel context.CancelCauseFunc
	closed  bool // Shutdown or Close began: Serve refuses
	drained bool // a Shutdown saw no connection left: Adopt refuses

	accepted    atomic.Uint64
	adopted     atomic.Uint64
	finished    atomic.Uint64
	detached    atomic.Uint64
	forceClosed atomic.Uint64
}

// New returns a server with the given configuration.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		handler:   cfg.Handler,
		log:       log,
		gate:      newGate(cfg.MaxConns),
		listeners: make(map[*servedListener]struct{}),
		conns:     make(map[net.Conn]*round),
		since:     make(map[net.Conn]int64),
	}
	if s.handler == nil {
		s.handler = &Echo{IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.WriteTimeout}
	}
	s.echo, _ = s.handler.(*Echo)
	s.resumer, _ = s.handler.(Resumer)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hctx, s.hcancel = context.WithCancelCause(s.ctx)
	return s
}

// Serve accepts connections on ln and serves each one with the handler in
// its own goroutine. It blocks until the listener fails for good or the
// server stops it, and always returns a non-nil error: [ErrServerClosed]
// after Shutdown or Close, or when Detach stopped it (Serve may then be
// called again, on another listener, to accept again). Temporary accept
// errors (out of file descriptors, aborted handshakes) are retried with a
// back-off. Serve takes ownership of ln and closes it on return.
func (s *Server) Serve(ln net.Listener) error {
	l := &servedListener{Listener: ln, stop: make(chan struct{}), returned: make(chan struct{})}
	defer l.Close()
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)

	var backoff time.Duration
	for {
		// Wait for a free slot, but take it only once a connection is
		// accepted: a loop idle in Accept must not hold a slot other
		// listeners need.
		if !s.gate.wait(l.stop) {
			return ErrServerClosed
		}
		c, err := l.Accept()
		if err != nil {
			if l.stopped() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				backoff = nextBackoff(backoff)
				s.log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
				if !sleep(backoff, l.stop) {
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("daemon: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !s.gate.take(l.stop) {
			// Another loop took the last slot while this one accepted,
			// and the server stopped this listener before a slot freed:
			// the connection was never served, so it is closed unserved,
			// like one left in the backlog.
			c.Close()
			return ErrServerClosed
		}
		ctx, err := s.trackConn(c, false)
		if err != nil {
			// Accepted while shutting down: Shutdown waits for this loop
			// to return before it waits for connections, so serving it
			// here is still counted. trackConn refuses only after Close.
			c.Close()
			s.gate.release()
			return ErrServerClosed
		}
		go s.serveConn(c, ctx)
	}
}

// serveConn runs the handler on c, then ends c's service (served).
//
// Its frame stays small: an idle echo connection parks deep in this
// goroutine's stack, which starts at 2 KiB, and a few frames more double
// it to 4 KiB per idle connection (BenchmarkIdleConnMemory). So the echo
// handler is called directly (inlined), not through the interface, and
// what follows the handler's return lives in served.
func (s *Server) serveConn(c net.Conn, ctx context.Context) {
	var err error
	if s.echo != nil {
		err = s.echo.ServeConn(ctx, c)
	} else {
		err = s.handler.ServeConn(ctx, c)
	}
	s.served(c, ctx, err)
}

// resumeConn is serveConn for an adopted connection: the handler resumes
// it from state. The echo handler's ResumeConn is taken apart (state
// written, then the loop called from here), so that an idle adopted
// connection parks in as shallow a stack as an accepted one.
func (s *Server) resumeConn(c net.Conn, ctx context.Context, state []byte) {
	var err error
	if s.echo != nil {
		if err = s.echo.writeState(ctx, c, state); err == nil {
			err = s.echo.ServeConn(ctx, c)
		}
	} else {
		err = s.resumer.ResumeConn(ctx, c, state)
	}
	s.served(c, ctx, err)
}

// served ends c's service once its handler, which got ctx, returned err:
// c is closed, or handed over to the Detach taking it out (a handler that
// returned *Detached), or, when no Detach takes it any more, served on
// from the handler's state (ResumeConn, with a fresh context), which ends
// here again.
func (s *Server) served(c net.Conn, ctx context.Context, err error) {
	for {
		var d *Detached
		if err == nil || !errors.As(err, &d) {
			if err != nil {
				s.connEnded(c, err)
			}
			s.connDone(c)
			return
		}
		if ctx = s.answer(c, ctx, d); ctx == nil {
			return
		}
		err = s.resumer.ResumeConn(ctx, c, d.State)
	}
}

// connDone closes c once its handler returned and gives back its slot.
func (s *Server) connDone(c net.Conn) {
	c.Close()
	s.untrackConn(c)
	s.gate.release()
}

// connEnded logs the error that ended a connection, unless it is an
// ordinary end.
func (s *Server) connEnded(c net.Conn, err error) {
	if !isBenign(err) {
		s.log.Debug("connection ended", "remote", remoteAddr(c), "err", err)
	}
}

// isBenign reports errors that are the ordinary end of a connection.
func isBenign(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.Canceled)
}

// sleep waits d or until stop is closed; it reports whether d passed.
func sleep(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

func nextBackoff(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 5 * time.Millisecond
	case d >= time.Second:
		return time.Second
	default:
		return d * 2
	}
}

// isTemporary reports whether an accept error is worth retrying: the
// process or system ran out of file descriptors or memory, or a
// connection was aborted before it was accepted.
func isTemporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) trackListener(l *servedListener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.listeners[l] = struct{}{}
		return true
	}
	delete(s.listeners, l)
	close(l.returned)
	return true
}

// trackConn registers c before its goroutine starts, so Shutdown cannot
// miss it, counts it accepted or adopted, and returns the context for its
// handler. It refuses after Close, and, for an adopted connection, once a
// Shutdown drained the server or when c is served already.
func (s *Server) trackConn(c net.Conn, adopt bool) (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil || (adopt && s.drained) { // Close ran, or a Shutdown returned
		return nil, ErrServerClosed
	}
	if _, ok := s.conns[c]; ok {
		return nil, errServedAlready
	}
	s.conns[c] = nil
	if adopt {
		s.since[c] = 0
	} else {
		s.since[c] = time.Now().UnixNano()
	}
	s.live++
	// Counted under the lock: Stats never shows more connections active
	// than accepted and adopted.
	if adopt {
		// A Detach left them in the past. Under mu, so that a Detach that
		// starts next interrupts the adopted handler.
		_ = c.SetDeadline(time.Time{})
		s.adopted.Add(1)
	} else {
		s.accepted.Add(1)
	}
	return s.hctx, nil
}

// untrackConn forgets c, counting it closed.
func (s *Server) untrackConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.untrackLocked(c, nil)
}

// untrackLocked forgets c, counting it closed, or detached if detachedBy
// is the Detach round that took it out. A round c is part of and has not
// answered yet hears that it did.
func (s *Server) untrackLocked(c net.Conn, detachedBy *round) {
	if s.conns != nil {
		if r := s.conns[c]; r != nil {
			r.answeredLocked()
		}
		delete(s.conns, c)
	}
	delete(s.since, c)
	// Counted under the lock and before live drops: whoever sees Active
	// shrink, or Shutdown return, sees Closed (or Detached) grow.
	if detachedBy != nil {
		s.detached.Add(1)
	} else {
		s.finished.Add(1)
	}
	s.live--
	if s.live == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// idleLocked returns a channel closed once no connection is served.
func (s *Server) idleLocked() <-chan struct{} {
	if s.live == 0 {
		return closedChan
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	return s.idle
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// Stats returns a snapshot of the server's counters. Bytes is the count of
// the server's [Echo] ([Echo.Bytes]): zero with any other handler, and
// shared with other servers that serve with the same *Echo.
func (s *Server) Stats() Stats {
	// The connection counters change under mu with the set of
	// connections, so read under it they are one snapshot: a connection
	// counted Closed is no longer Active.
	s.mu.Lock()
	st := Stats{
		Active:   len(s.conns),
		Accepted: s.accepted.Load(),
		Adopted:  s.adopted.Load(),
		Closed:   s.finished.Load(),
		Detached: s.detached.Load(),
	}
	s.mu.Unlock()
	st.ForceClosed = s.forceClosed.Load()
	if s.echo != nil {
		st.Bytes = s.echo.Bytes()
	}
	return st
}

// stopListenersLocked stops every listener being served: it closes it
// and tells its accept loop to return. It returns the channels closed
// when those loops have returned.
func (s *Server) stopListenersLocked() []<-chan struct{} {
	loops := make([]<-chan struct{}, 0, len(s.listeners))
	for l := range s.listeners {
		l.stopLocked()
		loops = append(loops, l.returned)
	}
	return loops
}

// waitLoops waits until every channel in loops is closed, or ctx ends.
func waitLoops(ctx context.Context, loops []<-chan struct{}) error {
	for _, done := range loops {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Shutdown stops accepting on every listener, waits for the accept loops to
// return, then waits for the open connections to finish on their own.
// It returns nil once all connections are closed (or detached), or
// ctx.Err() when ctx ends first; the connections still open are then left
// to the caller, typically followed by [Server.Close]. Shutdown neither
// closes connections nor cancels the handlers' context: a connection ends
// when its handler returns (an echo connection, when its client closes
// it). Connections adopted while Shutdown waits are waited for too; once
// it returned nil, Adopt refuses.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	loops := s.stopListenersLocked()
	s.mu.Unlock()
	if err := waitLoops(ctx, loops); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		if s.live == 0 {
			s.drained = true
			s.mu.Unlock()
			return nil
		}
		idle := s.idleLocked()
		s.mu.Unlock()
		select {
		case <-idle:
			// Check again: an Adopt may have come in since.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Conns returns the connections served now that have been served for at
// least minAge (an adopted connection counts as old: it lived elsewhere
// first), in no particular order. They stay the server's: the caller may
// read their addresses or pass their descriptors on (a copy kept in
// systemd's fd store, say), not read or write them.
func (s *Server) Conns(minAge time.Duration) []net.Conn {
	cut := time.Now().Add(-minAge).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		if s.since[c] <= cut {
			out = append(out, c)
		}
	}
	return out
}

// Close is the hard stop: it stops accepting, cancels the context given to
// the handlers, closes every open connection, and waits for the accept
// loops and the handlers to return (a handler that ignores both its
// context and the closed connection keeps Close waiting). Serve returns
// [ErrServerClosed]; [Stats].ForceClosed counts the connections Close cut.
// A Detach under way returns. Close always returns nil: the error lets
// *Server stand where an *http.Server does (Serve, Shutdown, Close).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	loops := s.stopListenersLocked()
	conns := s.conns
	s.conns = nil
	s.since = map[net.Conn]int64{}
	s.mu.Unlock()
	s.cancel()
	for c := range conns {
		c.Close()
	}
	s.forceClosed.Add(uint64(len(conns)))
	_ = waitLoops(context.Background(), loops)
	s.mu.Lock()
	for s.live > 0 {
		idle := s.idleLocked()
		s.mu.Unlock()
		<-idle
		s.mu.Lock()
	}
	s.mu.Unlock()
	return nil
}

// servedListener is a listener with its accept loop's signals. Its Close
// is idempotent, so Serve's deferred Close and the server's can both run.
type servedListener struct {
	net.Listener
	stop     chan struct{} // closed when the server stops the listener
	returned chan struct{} // closed when its Serve returned

	once sync.Once
	err  error
}

func (l *servedListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// stopLocked closes the listener and its stop channel, once; the server's
// mu is held.
func (l *servedListener) stopLocked() {
	if !l.stopped() {
		close(l.stop)
	}
	l.Close()
}

// stopped reports whether the server stopped the listener.
func (l *servedListener) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}
