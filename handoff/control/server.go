package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/echod/echod/daemon"
)

// ErrServerClosed is returned by [Server.Serve] after
// [Server.StopAccepting], [Server.Shutdown] or [Server.Close].
var ErrServerClosed = errors.New("control: server closed")

// ErrHungUp is the cause (see [context.Cause]) of a request context
// cancelled because the client hung up.
var ErrHungUp = errors.New("control: the client hung up")

const (
	// maxConns bounds the connections served at once; more wait in the
	// listener's backlog.
	maxConns = 64
	// maxDiscard bounds the bytes read and ignored after a request line.
	// Past it the server stops reading; a hang-up is still noticed.
	maxDiscard = 64 << 10
)

// Handler carries out control commands.
type Handler interface {
	// Control carries out cmd (the request line without the white space
	// around it) and returns the answer. ctx is cancelled, with cause
	// [ErrHungUp], when the client hangs up, and when the server is
	// closed; Control should then return soon (its answer goes nowhere).
	// Control is called concurrently, once per request.
	Control(ctx context.Context, cmd string) Reply
}

// HandlerFunc adapts a function to [Handler].
type HandlerFunc func(ctx context.Context, cmd string) Reply

// Control calls f(ctx, cmd).
func (f HandlerFunc) Control(ctx context.Context, cmd string) Reply { return f(ctx, cmd) }

// Server answers control requests (see the package documentation for the
// protocol). Create it with [NewServer]. It serves at most 64 connections
// at once; more wait in the listener's backlog.
type Server struct {
	h   Handler
	log *slog.Logger
	srv *daemon.Server
	uid int // besides root, the only user served

	// Seams for tests, set before Serve.
	lineTimeout time.Duration
	watchHook   func(discarded int, eof bool) // after each look at a running request's socket
}

// NewServer returns a server that passes the commands it receives to h,
// which must not be nil, and logs refused clients and malformed requests to
// logger (nil discards).
func NewServer(h Handler, logger *slog.Logger) *Server {
	if h == nil {
		panic("control: NewServer with a nil Handler")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, log: logger, uid: os.Geteuid(), lineTimeout: lineTimeout}
	s.srv = daemon.New(daemon.Config{
		Handler:  daemon.HandlerFunc(s.serveConn),
		MaxConns: maxConns,
		Logger:   logger,
	})
	return s
}

// Serve accepts connections on ln, a Unix stream socket, and answers each
// one in its own goroutine. It blocks until ln fails for good or the server
// stops accepting, and always returns a non-nil error: [ErrServerClosed]
// after StopAccepting, Shutdown or Close. Serve takes ownership of ln and
// closes it on return. A server may serve several listeners.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, daemon.ErrServerClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("control: serve: %w", err)
}

// StopAccepting closes the listeners (this process's copies of them: a next
// generation that inherited the socket keeps serving it) and returns at
// once. The requests in progress go on and are answered; [Server.Shutdown]
// waits for them. Closing leaves the socket file in place for a listener
// made by [Listen] or inherited as a file; one made by net.Listen removes
// it unless SetUnlinkOnClose(false) was called.
func (s *Server) StopAccepting() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With an ended context, Shutdown closes the listeners and waits for
	// nothing: its error is that context's and says nothing.
	_ = s.srv.Shutdown(ctx)
}

// Shutdown stops accepting and waits until every request in progress has
// been answered; it returns nil then. When ctx ends first, it closes the
// server (cancelling the requests still running and hanging up on their
// clients) and returns an error wrapping ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("control: shutdown: requests still running: %w", err)
	if cerr := s.Close(); cerr != nil {
		return errors.Join(err, cerr)
	}
	return err
}

// Close stops accepting, cancels the requests in progress and closes their
// connections, and waits for their handlers to return.
func (s *Server) Close() error {
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("control: close: %w", err)
	}
	return nil
}

// serveConn answers the one request of connection c; the daemon server
// closes c after. ctx is cancelled by Close.
func (s *Server) serveConn(ctx context.Context, c net.Conn) error {
	// The request line is read before the peer is checked, so that a
	// refused client gets its answer instead of a broken pipe.
	if err := c.SetReadDeadline(time.Now().Add(s.lineTimeout)); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	br := bufio.NewReaderSize(c, maxRequest+1)
	line, lineErr := br.ReadSlice('\n')

	uid, pid, err := peerCred(c)
	if err != nil {
		s.log.Warn("control: refused a client without credentials", "err", err)
		return s.answer(c, Reply{Kind: Error, Text: "permission denied"})
	}
	if uid != 0 && uid != s.uid {
		s.log.Warn("control: permission denied", "uid", uid, "pid", pid, "allowed_uids", []int{0, s.uid})
		return s.answer(c, Reply{Kind: Error, Text: "permission denied"})
	}

	switch err := lineErr; {
	case err == nil:
		line = line[:len(line)-1]
	case errors.Is(err, bufio.ErrBufferFull):
		return s.refuse(c, uid, pid, errTooLong)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return s.refuse(c, uid, pid, fmt.Errorf("request line not ended within %v", s.lineTimeout))
	case errors.Is(err, io.EOF) && len(line) > 0:
		return s.refuse(c, uid, pid, errNoNewline)
	case errors.Is(err, io.EOF):
		return nil // connected and hung up: nothing to answer
	default:
		return fmt.Errorf("control: read request: %w", err)
	}
	cmd, err := parseRequest(line)
	if err != nil {
		return s.refuse(c, uid, pid, err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("control: %w", err)
	}

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The bytes already buffered past the line are ignored: they count
	// against what the watcher may still read.
	stop := s.watch(c, maxDiscard-br.Buffered(), func() { cancel(ErrHungUp) })
	start := time.Now()
	r := s.call(rctx, cmd)
	stop()
	s.log.Debug("control: request", "cmd", truncate(cmd, 200), "uid", uid, "pid", pid, "answer", r.Kind.String(), "took", time.Since(start).Round(time.Millisecond), "hung_up", errors.Is(context.Cause(rctx), ErrHungUp))
	if rctx.Err() != nil {
		return nil // the client hung up, or Close closed c: nobody to answer
	}
	return s.answer(c, r)
}

// call runs the handler; a panic or an answer without a kind becomes an
// error answer.
func (s *Server) call(ctx context.Context, cmd string) (r Reply) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("control: handler panicked", "cmd", truncate(cmd, 200), "panic", v, "stack", string(debug.Stack()))
			r = Reply{Kind: Error, Text: "internal error"}
		}
	}()
	r = s.h.Control(ctx, cmd)
	if !r.Kind.valid() {
		s.log.Error("control: handler answered without a kind", "cmd", truncate(cmd, 200), "kind", r.Kind.String(), "text", r.Text)
		r = Reply{Kind: Error, Text: "internal error: no answer"}
	}
	return r
}

// refuse answers a malformed request.
func (s *Server) refuse(c net.Conn, uid, pid int, reason error) error {
	s.log.Info("control: bad request", "uid", uid, "pid", pid, "err", reason)
	return s.answer(c, Reply{Kind: Error, Text: reason.Error()})
}

// answer writes r's line to c.
func (s *Server) answer(c net.Conn, r Reply) error {
	if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("control: answer: %w", err)
	}
	if _, err := io.WriteString(c, r.String()+"\n"); err != nil {
		return fmt.Errorf("control: answer %q: %w", r.Kind.String(), err)
	}
	return nil
}

// watch reads what the client sends while its request runs, in a
// goroutine, and calls hungUp if the client hangs up (closes its socket, or
// an error ends the connection). Up to budget bytes are read and ignored;
// after that nothing more is read, and a hang-up is still noticed where the
// platform allows. stop ends the watch and waits for the goroutine.
func (s *Server) watch(c net.Conn, budget int, hungUp func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if watchConn(c, max(budget, 0), s.watchHook) {
			hungUp()
		}
	}()
	return func() {
		// Ends the watcher's wait; an error means c is closed, which
		// ends it too.
		_ = c.SetReadDeadline(time.Now())
		<-done
	}
}

// watchBuffered is watchConn for a connection without a file descriptor:
// end of file counts as a hang-up, and the watch ends at the budget.
func watchBuffered(c net.Conn, budget int, hook func(int, bool)) (hungUp bool) {
	var buf [512]byte
	discarded := 0
	for discarded < budget {
		n, err := c.Read(buf[:min(len(buf), budget-discarded)])
		discarded += n
		if hook != nil {
			hook(discarded, errors.Is(err, io.EOF))
		}
		if err != nil {
			return !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed)
		}
	}
	return false
}
