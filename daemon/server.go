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

// Config holds the settings of a [Server]. The zero value is usable.
type Config struct {
	// IdleTimeout closes a connection that sent nothing for this long.
	// Zero means never.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once across all listeners.
	// Beyond it the accept loops stop accepting, so new connections wait in
	// the kernel's backlog instead of being accepted and dropped. Zero means
	// no limit.
	MaxConns int
	// WriteTimeout bounds writing one echoed chunk back to a client that
	// does not read. Zero means 30s.
	WriteTimeout time.Duration
	// Logger receives one line per event that matters. Nil discards.
	Logger *slog.Logger
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	Active   int    // connections open now
	Accepted uint64 // connections accepted since start
	Closed   uint64 // connections finished since start
	Bytes    uint64 // bytes echoed since start
}

// Server is an echo server. Create it with [New]; it may serve several
// listeners at once.
type Server struct {
	cfg    Config
	log    *slog.Logger
	slots  chan struct{} // nil when MaxConns == 0
	loops  sync.WaitGroup
	connWG sync.WaitGroup

	mu        sync.Mutex
	listeners map[*onceCloseListener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	done      chan struct{} // closed when closed becomes true

	accepted atomic.Uint64
	finished atomic.Uint64
	bytes    atomic.Uint64
}

// New returns a server with the given configuration.
func New(cfg Config) *Server {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		listeners: make(map[*onceCloseListener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
	if cfg.MaxConns > 0 {
		s.slots = make(chan struct{}, cfg.MaxConns)
	}
	return s
}

// Serve accepts connections on ln and echoes each one in its own goroutine.
// It blocks until the listener fails for good or the server is shut down,
// and always returns a non-nil error: [ErrServerClosed] after Shutdown or
// Close. Temporary accept errors (out of file descriptors, aborted
// handshakes) are retried with a back-off. Serve takes ownership of ln and
// closes it on return.
func (s *Server) Serve(ln net.Listener) error {
	l := &onceCloseListener{Listener: ln}
	defer l.Close()
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)

	var backoff time.Duration
	for {
		if s.slots != nil {
			if !s.acquireSlot() {
				return ErrServerClosed
			}
		}
		c, err := l.Accept()
		if err != nil {
			s.releaseSlot()
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
		if !s.trackConn(c, true) {
			// Accepted while shutting down: Shutdown waits for this loop
			// to return before it waits for connections, so serving it
			// here is still counted. trackConn refuses only after Close.
			c.Close()
			s.releaseSlot()
			return ErrServerClosed
		}
		s.accepted.Add(1)
		go s.serveConn(c)
	}
}

func (s *Server) acquireSlot() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	case <-s.done:
		return false
	}
}

func (s *Server) releaseSlot() {
	if s.slots != nil {
		<-s.slots
	}
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
	s.connWG.Done()
	return true
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := len(s.conns)
	s.mu.Unlock()
	return Stats{
		Active:   active,
		Accepted: s.accepted.Load(),
		Closed:   s.finished.Load(),
		Bytes:    s.bytes.Load(),
	}
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
// typically followed by [Server.Close]. Shutdown does not interrupt
// connections: an echo connection ends when its client closes it.
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

// Close stops accepting and closes every open connection at once. It
// returns the number of connections it closed. Serve returns
// [ErrServerClosed]; Close waits for the connection goroutines to end.
func (s *Server) Close() int {
	s.mu.Lock()
	s.closeListenersLocked()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	s.loops.Wait()
	s.connWG.Wait()
	return len(conns)
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
