package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// The control protocol: the client sends one line, "reload", "status" or
// "stop";
// the server answers one line: "ok <text>", "error <reason>", or "retry
// <reason>" when the generation that accepted the request has just been
// replaced and the request should go to the new one.

// controlServer answers control requests on a Unix socket.
type controlServer struct {
	ln      net.Listener
	log     *slog.Logger
	handle  func(ctx context.Context, cmd string) string
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	done    chan struct{} // closed by stopAccepting
}

func newControlServer(ln net.Listener, log *slog.Logger, handle func(ctx context.Context, cmd string) string) *controlServer {
	return &controlServer{ln: ln, log: log, handle: handle, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
}

// start runs the accept loop until close.
func (s *controlServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var backoff time.Duration
		for {
			c, err := s.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of fds, for example: back off, up to 1s.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("control: accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-s.done:
					return
				}
				continue
			}
			backoff = 0
			s.mu.Lock()
			if s.closing {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
}

func (s *controlServer) serve(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		s.wg.Done()
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	// The request runs until answered or the client hangs up.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		var b [1]byte
		c.Read(b[:]) // returns when the client closes or we close c
		cancel()
	}()
	reply := s.handle(ctx, strings.TrimSpace(line))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, firstLine(reply))
	c.SetReadDeadline(time.Now()) // ends the reader goroutine
	<-hungUp
}

// stopAccepting closes the listening socket (this process's copy of it).
func (s *controlServer) stopAccepting() {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	s.mu.Unlock()
	s.ln.Close()
}

// close stops accepting and lets the requests in progress finish and be
// answered; after grace it hangs up on the rest. It waits for every
// goroutine.
func (s *controlServer) close(grace time.Duration) {
	s.stopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}

// controlRequest sends cmd to the control socket at path and returns the
// server's answer text; an "error" answer is returned as an error. A
// "retry" answer (the generation was just replaced) is retried on a new
// connection, which reaches the new generation.
func controlRequest(ctx context.Context, path, cmd string) (string, error) {
	for {
		ans, err := controlOnce(ctx, path, cmd)
		if err != nil {
			return "", err
		}
		kind, text, _ := strings.Cut(ans, " ")
		switch kind {
		case "ok":
			return text, nil
		case "error":
			return "", errors.New(text)
		case "retry":
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("%s: %w", text, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		default:
			return "", fmt.Errorf("control %s: unexpected answer %q", path, ans)
		}
	}
}

func controlOnce(ctx context.Context, path, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("control: %w (is echod running with -control %s?)", err, path)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return "", fmt.Errorf("control %s: %w", path, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("control %s: no answer: %w", path, ctx.Err())
		}
		return "", fmt.Errorf("control %s: no answer (%w): the daemon closed the connection", path, err)
	}
	return strings.TrimSpace(line), nil
}
