//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// The HTTP endpoints of Config.HTTP: taken with the generation's other
// sockets, served from Ready on, and no longer accepted on as soon as a
// new generation committed (it serves the same sockets now) or this one
// stops.
//
// Stopping never uses http.Server.Shutdown before the connections are
// done: a request read after Shutdown began is dropped without an answer
// (net/http's serve loop returns when the server is shutting down), and
// a scrape whose connection the old generation accepted just before its
// commit would fail. Instead keep-alives are turned off (idle connections
// are closed; each other one is closed after its answer) and the listener
// is closed; at exit the connections get httpShutdownTimeout to end.

// httpShutdownTimeout bounds, at exit, the requests in progress on the
// HTTP endpoints.
const httpShutdownTimeout = 5 * time.Second

// webEndpoint is an HTTP endpoint being served.
type webEndpoint struct {
	name   string
	srv    *http.Server
	ln     *Listener
	served chan struct{}  // closed when Serve returned
	conns  sync.WaitGroup // connections open (ConnState), all added before served is closed
}

// listenHTTP takes the sockets of the HTTP endpoints: each inherited from
// the previous generation, else bound, and registered for the next. On
// error, those taken are closed.
func (r *runner) listenHTTP() ([]*Listener, error) {
	var ls []*Listener
	for _, e := range r.cfg.HTTP {
		if e.Handler == nil {
			closeAll(ls)
			return nil, fmt.Errorf("handoff: http endpoint %q: no handler", e.Name)
		}
		l, err := r.g.Listen(e.Spec)
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("http endpoint %s: %w", e.Name, err)
		}
		r.log.Info("http listener", "name", e.Name, "addr", l.Addr().String(), "inherited", l.Inherited)
		ls = append(ls, l)
	}
	return ls, nil
}

// serveHTTP serves each HTTP endpoint on its listener (ls, in the order
// of Config.HTTP), each by a net/http server of its own, in a goroutine
// the runner waits for (serving). After stopAcceptingHTTP it only closes
// them.
func (r *runner) serveHTTP(ls []*Listener) {
	r.webMu.Lock()
	defer r.webMu.Unlock()
	if r.webStopped {
		closeAll(ls)
		return
	}
	for i, l := range ls {
		e := &webEndpoint{name: r.cfg.HTTP[i].Name, ln: l, served: make(chan struct{})}
		e.srv = &http.Server{
			Handler:           r.cfg.HTTP[i].Handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(r.log.With("http", e.name).Handler(), slog.LevelWarn),
			// Called by Serve's accept loop for a new connection, so every
			// Add happens before Serve returns.
			ConnState: func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					e.conns.Add(1)
				case http.StateClosed, http.StateHijacked:
					e.conns.Done()
				}
			},
		}
		r.web = append(r.web, e)
		r.serving.Add(1)
		go func() {
			defer r.serving.Done()
			defer close(e.served)
			if err := e.srv.Serve(l); !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				r.log.Error("http endpoint failed", "name", e.name, "err", err)
			}
		}()
	}
}

// stopAcceptingHTTP stops accepting on the HTTP endpoints and returns at
// once: keep-alives off (idle connections closed, the others closed after
// their answer), this process's copy of each socket closed (a next
// generation that inherited it serves it on). Safe to call more than
// once, and before serveHTTP (which then serves nothing).
func (r *runner) stopAcceptingHTTP() {
	r.webMu.Lock()
	r.webStopped = true
	web := r.web
	r.webMu.Unlock()
	for _, e := range web {
		e.srv.SetKeepAlivesEnabled(false)
		e.ln.Close()
	}
}

// shutdownHTTP stops the HTTP endpoints for good: the connections still
// open get httpShutdownTimeout to be answered, then they are closed.
func (r *runner) shutdownHTTP() {
	r.stopAcceptingHTTP()
	r.webMu.Lock()
	web := r.web
	r.webMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	for _, e := range web {
		<-e.served // at once: its listener is closed
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.conns.Wait()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			r.log.Warn("http endpoint: requests still running at exit: closed", "name", e.name)
			e.srv.Close()
			<-done // Close closed every connection: their goroutines end
		}
	}
}
