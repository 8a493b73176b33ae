package daemon_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

// stopper is what a caller needs to run and stop either kind of server.
type stopper interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

var (
	_ stopper = (*daemon.Server)(nil)
	_ stopper = (*http.Server)(nil)

	_ daemon.Handler = daemon.HandlerFunc(nil)
	_ daemon.Handler = (*daemon.Echo)(nil)
)

// upper answers each line with the line upper-cased and returns at EOF.
func upper(_ context.Context, c net.Conn) error {
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := io.WriteString(c, strings.ToUpper(sc.Text())+"\n"); err != nil {
			return err
		}
	}
	return sc.Err()
}

// TestHandlerFunc: a custom handler serves the connection, and the server
// closes the connection once the handler returns.
func TestHandlerFunc(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			ts := start(t, daemon.Config{Handler: daemon.HandlerFunc(upper)}, network)
			c := ts.dial(t)
			if _, err := io.WriteString(c, "hello\nWorld 2\n"); err != nil {
				t.Fatal(err)
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// ReadAll returns at EOF: the server closed c after upper
			// returned at the client's half-close.
			got, err := io.ReadAll(c)
			if want := "HELLO\nWORLD 2\n"; string(got) != want || err != nil {
				t.Fatalf("read = %q, %v; want %q, nil", got, err, want)
			}
			st := waitStats(t, ts.srv, "the connection to finish", func(st daemon.Stats) bool { return st.Closed == 1 })
			if st != (daemon.Stats{Accepted: 1, Closed: 1}) {
				t.Errorf("Stats = %+v, want Accepted 1, Closed 1 and no Bytes (not the echo handler)", st)
			}
		})
	}
}

// TestHandlerContext: the context a handler gets is cancelled by Close,
// not by Shutdown. The handler ignores its connection and waits only for
// the context, so Close returns only if it cancels it.
func TestHandlerContext(t *testing.T) {
	started := make(chan context.Context, 1)
	h := daemon.HandlerFunc(func(ctx context.Context, c net.Conn) error {
		if _, err := io.WriteString(c, "ready\n"); err != nil {
			return err
		}
		started <- ctx
		<-ctx.Done()
		return ctx.Err()
	})
	ts := start(t, daemon.Config{Handler: h}, "tcp")
	c := ts.dial(t)
	line, err := bufio.NewReader(c).ReadString('\n')
	if line != "ready\n" || err != nil {
		t.Fatalf("greeting = %q, %v", line, err)
	}
	ctx := recvWithin(t, started, "the handler to start")

	shutCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(shutCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if err := recvWithin(t, ts.serveErr, "Serve to return"); !errors.Is(err, daemon.ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	ts.serveErr <- daemon.ErrServerClosed // for the cleanup
	if err := ctx.Err(); err != nil {
		t.Fatalf("handler context after Shutdown: %v, want not cancelled", err)
	}

	if n := closeWithin(t, ts.srv); n != 1 {
		t.Errorf("Close cut %d connections, want 1", n)
	}
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("handler context after Close: %v, want context.Canceled", err)
	}
	buf := make([]byte, 1)
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("client read after Close = %d, %v; want 0, EOF", n, err)
	}
	if st := ts.srv.Stats(); st != (daemon.Stats{Accepted: 1, Closed: 1, ForceClosed: 1}) {
		t.Errorf("Stats = %+v, want Accepted 1, Closed 1, ForceClosed 1", st)
	}
}

// TestEchoHandler: an *Echo given as the handler is the echo server, and
// its byte count is the servers' Stats.Bytes, shared by every server that
// uses it.
func TestEchoHandler(t *testing.T) {
	e := &daemon.Echo{IdleTimeout: time.Minute}
	var total uint64
	var servers []*daemon.Server
	for i, network := range networks {
		ts := start(t, daemon.Config{Handler: e}, network)
		servers = append(servers, ts.srv)
		msg := payload(uint64(i), 1000*(i+1))
		mustEcho(t, ts.dial(t), msg)
		total += uint64(len(msg))
	}
	// A client sees its echo just before the server adds it to Bytes.
	waitFor(t, "Bytes", func() bool { return e.Bytes() >= total })
	if got := e.Bytes(); got != total {
		t.Errorf("Echo.Bytes = %d, want %d", got, total)
	}
	for i, srv := range servers {
		if st := srv.Stats(); st.Bytes != total || st.Active != 1 {
			t.Errorf("server %d: Stats = %+v, want Active 1, Bytes %d", i, st, total)
		}
	}
}
