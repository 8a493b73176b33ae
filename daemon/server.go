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
// [Server.Close].
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

// Stats is a snapshot of a server's counters.
type Stats struct {
	Active      int    // connections being served now
	Accepted    uint64 // connections handed to the handler since start
	Closed      uint64 // connections finished since start
	Bytes       uint64 // bytes echoed since start, if the handler is an [Echo]
	ForceClosed uint64 // connections that [Server.Close] cut
}

// Server serves connections from one or more listeners, each connection in
// its own goroutine through one [Handler], and drains: Shutdown stops
// accepting and waits for the connections to end. Create it with [New].
type Server struct {
	handler Handler
	echo    *Echo // handler, when it is an *Echo; nil otherwise
	log     *slog.Logger
	gate    *gate // nil when MaxConns == 0
	loops   sync.WaitGroup
	connWG  sync.WaitGroup

	// ctx is given to every handler; cancel is called by Close only.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[*onceCloseListener]struct{}
	conns     map[net.Conn]struct{} // nil once Close ran
	closed    bool
	done      chan struct{} // closed when closed becomes true

	accepted    atomic.Uint64
	finished    atomic.Uint64
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
		listeners: make(map[*onceCloseListener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
	if s.handler == nil {
		s.handler = &Echo{IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.WriteTimeout}
	}
	s.echo, _ = s.handler.(*Echo)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Serve accepts connections on ln and serves each one with the handler in
// its own goroutine. It blocks until the listener fails for good or the
// server is shut down, and always returns a non-nil error: [ErrServerClosed]
// after Shutdown or Close. Temporary accept errors (out of file
// descriptors, aborted handshakes) are retried with a back-off. Serve takes
// ownership of ln and closes it on return.
func (s *Server) Serve(ln net.Listener) error {
	l := &onceCloseListener{Listener: ln}
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
		if !s.gate.wait(s.done) {
			return ErrServerClosed
		}
		c, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				backoff = nextBackoff(backoff)
				s.log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
				if !s.sleep(backoff) {
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("daemon: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !s.gate.take(s.done) {
			// Another loop took the last slot while this one accepted,
			// and the server stopped before a slot freed: the
			// connection was never served, so it is closed unserved,
			// like one left in the backlog.
			c.Close()
			return ErrServerClosed
		}
		if !s.trackConn(c, true) {
			// Accepted while shutting down: Shutdown waits for this loop
			// to return before it waits for connections, so serving it
			// here is still counted. trackConn refuses only after Close.
			c.Close()
			s.gate.release()
			return ErrServerClosed
		}
		s.accepted.Add(1)
		go s.serveConn(c)
	}
}

// serveConn runs the handler on c, then closes c and gives back its slot.
//
// Its frame stays small: an idle echo connection parks deep in this
// goroutine's stack, which starts at 2 KiB, and a few frames more double
// it to 4 KiB per idle connection (BenchmarkIdleConnMemory). So the echo
// handler is called directly (inlined), not through the interface, and
// logging lives in connEnded.
func (s *Server) serveConn(c net.Conn) {
	defer s.connDone(c)
	var err error
	if s.echo != nil {
		err = s.echo.ServeConn(s.ctx, c)
	} else {
		err = s.handler.ServeConn(s.ctx, c)
	}
	if err != nil {
		s.connEnded(c, err)
	}
}

// connDone closes c once its handler returned and gives back its slot.
func (s *Server) connDone(c net.Conn) {
	c.Close()
	s.trackConn(c, false) // counts it closed
	s.gate.release()
}

// connEnded logs the error that ended a connection, unless it is an
// ordinary end.
func (s *Server) connEnded(c net.Conn, err error) {
	if !isBenign(err) {
		s.log.Debug("connection ended", "remote", c.RemoteAddr(), "err", err)
	}
}

// isBenign reports errors that are the ordinary end of a connection.
func isBenign(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.Canceled)
}

// sleep waits d or until the server shuts down; it reports whether the
// server is still running.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
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

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) trackListener(l *onceCloseListener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.listeners[l] = struct{}{}
		s.loops.Add(1)
		return true
	}
	delete(s.listeners, l)
	s.loops.Done()
	return true
}

// trackConn registers c before its goroutine starts, so Shutdown cannot
// miss it. It refuses only after Close.
func (s *Server) trackConn(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.conns == nil { // Close ran
			return false
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		return true
	}
	if s.conns != nil {
		delete(s.conns, c)
	}
	// Counted under the lock and before Done: whoever sees Active shrink,
	// or Shutdown return, sees Closed grow.
	s.finished.Add(1)
	s.connWG.Done()
	return true
}

// Stats returns a snapshot of the server's counters. Bytes is the count of
// the server's [Echo] ([Echo.Bytes]): zero with any other handler, and
// shared with other servers that serve with the same *Echo.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := len(s.conns)
	s.mu.Unlock()
	st := Stats{
		Active:      active,
		Accepted:    s.accepted.Load(),
		Closed:      s.finished.Load(),
		ForceClosed: s.forceClosed.Load(),
	}
	if s.echo != nil {
		st.Bytes = s.echo.Bytes()
	}
	return st
}

// closeListenersLocked marks the server closed and closes every listener.
func (s *Server) closeListenersLocked() {
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
}

// Shutdown stops accepting on every listener, waits for the accept loops to
// return, then waits for the open connections to finish on their own.
// It returns nil once all connections are closed, or ctx.Err() when ctx
// ends first; the connections still open are then left to the caller,
// typically followed by [Server.Close]. Shutdown neither closes connections
// nor cancels the handlers' context: a connection ends when its handler
// returns (an echo connection, when its client closes it).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closeListenersLocked()
	s.mu.Unlock()

	loopsDone := make(chan struct{})
	go func() { s.loops.Wait(); close(loopsDone) }()
	select {
	case <-loopsDone:
	case <-ctx.Done():
		return ctx.Err()
	}

	connsDone := make(chan struct{})
	go func() { s.connWG.Wait(); close(connsDone) }()
	select {
	case <-connsDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close is the hard stop: it stops accepting, cancels the context given to
// the handlers, closes every open connection, and waits for the accept
// loops and the handlers to return (a handler that ignores both its
// context and the closed connection keeps Close waiting). Serve returns
// [ErrServerClosed]; [Stats].ForceClosed counts the connections Close cut.
// Close always returns nil: the error lets *Server stand where an
// *http.Server does (Serve, Shutdown, Close).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closeListenersLocked()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	s.cancel()
	for c := range conns {
		c.Close()
	}
	s.forceClosed.Add(uint64(len(conns)))
	s.loops.Wait()
	s.connWG.Wait()
	return nil
}

// onceCloseListener makes Close idempotent, so Serve's deferred Close and
// Shutdown's Close can both run.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
