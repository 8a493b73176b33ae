package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	ts := startServer(t, echodHandler)
	for _, tc := range []struct {
		cmd, want, wantErr string
	}{
		{cmd: "reload", want: "pid=42 generation=2"},
		{cmd: "status", want: "generation 2 pid 42: 1 listeners, 0 connections"},
		{cmd: "stop", want: "pid=42"},
		{cmd: "frobnicate", wantErr: `unknown command "frobnicate" (want reload, status or stop)`},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
			defer cancel()
			have, err := Request(ctx, ts.path, tc.cmd)
			if tc.wantErr != "" {
				var re *ReplyError
				if !errors.As(err, &re) || re.Reason != tc.wantErr {
					t.Fatalf("Request(%q): have %q, %v; want *ReplyError %q", tc.cmd, have, err, tc.wantErr)
				}
				return
			}
			if err != nil || have != tc.want {
				t.Fatalf("Request(%q): have %q, %v; want %q", tc.cmd, have, err, tc.want)
			}
		})
	}
}

// TestWire pins the bytes of protocol version 1, as an older or newer
// client sends and reads them.
func TestWire(t *testing.T) {
	ts := startServer(t, echodHandler)
	for _, tc := range []struct{ name, send, want string }{
		{"status", "status\n", "ok generation 2 pid 42: 1 listeners, 0 connections"},
		{"crlf", "stop\r\n", "ok pid=42"},
		{"spaces", "  reload \t\n", "ok pid=42 generation=2"},
		{"unknown", "upgrade\n", `error unknown command "upgrade" (want reload, status or stop)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t)
			write(t, c, tc.send)
			if have := readAnswer(t, c); have != tc.want {
				t.Errorf("have %q, want %q", have, tc.want)
			}
		})
	}
}

func TestRetryThenOK(t *testing.T) {
	var n atomic.Int32
	ts := startServer(t, func(_ context.Context, cmd string) Reply {
		if n.Add(1) <= 3 {
			return Reply{Kind: Retry, Text: "generation 3 (pid 7) serves now"}
		}
		return Reply{Kind: OK, Text: "pid=7 generation=3"}
	})
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	have, err := Request(ctx, ts.path, "reload")
	if err != nil || have != "pid=7 generation=3" {
		t.Fatalf("have %q, %v; want pid=7 generation=3", have, err)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("handler called %d times, want 4 (3 retries, then ok)", got)
	}
}

func TestRetryUntilContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var n atomic.Int32
	ts := startServer(t, func(context.Context, string) Reply {
		if n.Add(1) == 3 {
			cancel() // the client has had two retry answers
		}
		return Reply{Kind: Retry, Text: "this generation is not ready yet"}
	})
	have, err := Request(ctx, ts.path, "reload")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not ready yet") {
		t.Fatalf("have %q, %v; want an error wrapping Canceled that says why", have, err)
	}
}

func TestErrorAnswer(t *testing.T) {
	ts := startServer(t, func(context.Context, string) Reply {
		return Reply{Kind: Error, Text: "upgrade failed: exec: boom\n\tat line 2\x1b[0m"}
	})
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	_, err := Request(ctx, ts.path, "reload")
	var re *ReplyError
	// One line, control characters (escape sequences too) made spaces.
	const want = "upgrade failed: exec: boom  at line 2 [0m"
	if !errors.As(err, &re) || re.Reason != want || err.Error() != want {
		t.Fatalf("have %v; want *ReplyError %q", err, want)
	}
}

func TestHandlerMisbehaves(t *testing.T) {
	ts := startServer(t, func(_ context.Context, cmd string) Reply {
		switch cmd {
		case "panic":
			panic("handler bug")
		case "nothing":
			return Reply{}
		}
		return echodHandler(context.Background(), cmd)
	})
	for cmd, want := range map[string]string{"panic": "error internal error", "nothing": "error internal error: no answer"} {
		c := ts.dial(t)
		write(t, c, cmd+"\n")
		if have := readAnswer(t, c); have != want {
			t.Errorf("%s: have %q, want %q", cmd, have, want)
		}
	}
	// Still serving.
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if _, err := Request(ctx, ts.path, "status"); err != nil {
		t.Fatal(err)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "handler panicked") {
		t.Errorf("no log of the panic:\n%s", logs)
	}
}

// TestBadRequests: each malformed request gets an error answer and the
// connection closed; none reaches the handler, and the server goes on.
func TestBadRequests(t *testing.T) {
	var calls atomic.Int32
	ts := startServer(t, func(ctx context.Context, cmd string) Reply {
		calls.Add(1)
		return echodHandler(ctx, cmd)
	})
	for _, tc := range []struct {
		name      string
		send      string
		closeSend bool // shut down the writing side after sending
		unread    bool // the server closes without reading all of send
		want      string
	}{
		{name: "too long", send: strings.Repeat("a", maxRequest+1) + "\n", unread: true, want: "error request too long"},
		{name: "too long, no newline", send: strings.Repeat("a", 8<<10), unread: true, want: "error request too long"},
		{name: "too long, crlf", send: strings.Repeat("a", maxRequest) + "\r\n", unread: true, want: "error request too long"},
		{name: "binary garbage", send: "\xff\xfe\x00\x01\x80\n", want: "error request is not valid UTF-8"},
		{name: "nul", send: "rel\x00oad\n", want: "error request contains control characters"},
		{name: "escape", send: "status\x1b[2J\n", want: "error request contains control characters"},
		{name: "inner tab", send: "status\tnow\n", want: "error request contains control characters"},
		{name: "empty", send: "\n", want: "error empty request"},
		{name: "blank", send: " \t\r\n", want: "error empty request"},
		{name: "no newline, then end of file", send: "status", closeSend: true, want: "error request not ended by a newline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t)
			write(t, c, tc.send)
			if tc.closeSend {
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			var have string
			if tc.unread {
				// Closing a Unix socket with unread input makes the
				// peer's read fail with ECONNRESET, after the answer.
				have = answerLine(t, c)
			} else {
				have = readAnswer(t, c)
			}
			if !strings.HasPrefix(have, tc.want) {
				t.Errorf("have %q, want %q...", have, tc.want)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times for malformed requests", n)
	}

	// A line of exactly maxRequest bytes is a request.
	c := ts.dial(t)
	write(t, c, strings.Repeat("a", maxRequest)+"\n")
	if have := readAnswer(t, c); !strings.HasPrefix(have, "error unknown command") {
		t.Errorf("request of %d bytes: have %.40q..., want error unknown command", maxRequest, have)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if _, err := Request(ctx, ts.path, "status"); err != nil {
		t.Fatalf("after bad requests: %v", err)
	}
}

// TestSlowRequests: a request line not ended in time is answered with an
// error and the connection closed.
func TestSlowRequests(t *testing.T) {
	ts := startServer(t, echodHandler, func(s *Server) { s.lineTimeout = 300 * time.Millisecond })
	for _, send := range []string{"sta", ""} {
		c := ts.dial(t)
		write(t, c, send)
		const want = "error request line not ended within 300ms"
		if have := readAnswer(t, c); have != want {
			t.Errorf("after %q: have %q, want %q", send, have, want)
		}
	}
}

// TestBadClientsDoNotBlockAReload: clients that never end their line, or
// send garbage, do not delay another client's reload.
func TestBadClientsDoNotBlockAReload(t *testing.T) {
	ts := startServer(t, echodHandler)
	for _, send := range []string{"", "rel", strings.Repeat("\xff", 3000)} {
		write(t, ts.dial(t), send)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if have, err := Request(ctx, ts.path, "reload"); err != nil || have != "pid=42 generation=2" {
		t.Fatalf("reload beside stuck clients: have %q, %v", have, err)
	}
}

// TestStatusDuringReload: requests run concurrently.
func TestStatusDuringReload(t *testing.T) {
	b := newBlocker()
	ts := startServer(t, b.Control)
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	reloaded := make(chan error, 1)
	go func() {
		_, err := Request(ctx, ts.path, "reload")
		reloaded <- err
	}()
	wait(t, b.started, "the reload to start")
	if _, err := Request(ctx, ts.path, "status"); err != nil {
		t.Fatalf("status while a reload runs: %v", err)
	}
	close(b.release)
	if err := wait(t, reloaded, "the reload's answer"); err != nil {
		t.Fatal(err)
	}
}

// discardWatch returns a watch hook and a function that waits until the
// watcher has read at least n bytes past the request line (and, with eof,
// seen end of file), or until the handler has returned (handlerDone).
func discardWatch(t *testing.T, handlerDone <-chan struct{}) (hook func(int, bool), waitFor func(n int, eof bool)) {
	var (
		mu        sync.Mutex
		discarded int
		sawEOF    bool
		changed   = make(chan struct{}, 1)
	)
	hook = func(n int, eof bool) {
		mu.Lock()
		discarded, sawEOF = n, eof
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	waitFor = func(n int, eof bool) {
		t.Helper()
		timeout := time.After(ioTimeout)
		for {
			mu.Lock()
			d, e := discarded, sawEOF
			mu.Unlock()
			if d >= n && (e || !eof) {
				return
			}
			select {
			case <-changed:
			case <-handlerDone:
				return // too early: the checks that follow fail
			case <-timeout:
				t.Fatalf("the server read %d bytes past the request line (eof %v), want %d (eof %v)", d, e, n, eof)
			}
		}
	}
	return hook, waitFor
}

// TestExtraBytesDoNotCancel is the defect of the first control server:
// any byte after the request line cancelled a reload in flight.
func TestExtraBytesDoNotCancel(t *testing.T) {
	b := newBlocker()
	hook, waitFor := discardWatch(t, b.done)
	ts := startServer(t, b.Control, func(s *Server) { s.watchHook = hook })

	c := ts.dial(t)
	write(t, c, "reload\n")
	wait(t, b.started, "the reload to start")
	const extra = "status\nand more bytes\x00\xff after the request line\n"
	write(t, c, extra)
	waitFor(len(extra), false)
	close(b.release)
	if cause := wait(t, b.ended, "the handler"); cause != nil {
		t.Errorf("the reload's context ended (%v): the bytes after the request line cancelled it", cause)
	}
	if have := readAnswer(t, c); have != "ok reloaded" {
		t.Errorf("have %q, want ok reloaded", have)
	}
}

// TestExtraBytesInTheSameWrite: bytes that arrive with the request line
// (read into the server's buffer with it) are ignored too.
func TestExtraBytesInTheSameWrite(t *testing.T) {
	b := newBlocker()
	ts := startServer(t, b.Control)
	c := ts.dial(t)
	write(t, c, "reload\nstop\nstop\n")
	wait(t, b.started, "the reload to start")
	close(b.release)
	if have := readAnswer(t, c); have != "ok reloaded" {
		t.Errorf("have %q, want ok reloaded", have)
	}
}

// TestHangUpCancels: closing the connection cancels the request, with
// cause ErrHungUp, also after the client sent more than the server reads.
func TestHangUpCancels(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra int // bytes sent after the request line
	}{
		{"idle", 0},
		{"some bytes", 100},
		{"past the discard budget", maxDiscard + 10<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBlocker()
			hook, waitFor := discardWatch(t, b.done)
			ts := startServer(t, b.Control, func(s *Server) { s.watchHook = hook })
			c := ts.dial(t)
			write(t, c, "reload\n")
			wait(t, b.started, "the reload to start")
			if tc.extra > 0 {
				// Fits the socket buffers: the write does not block.
				write(t, c, strings.Repeat("x", tc.extra))
				waitFor(min(tc.extra, maxDiscard), false)
			}
			c.Close()
			if cause := wait(t, b.ended, "the handler"); !errors.Is(cause, ErrHungUp) {
				t.Errorf("handler's context: have cause %v, want ErrHungUp", cause)
			}
		})
	}
}

// TestRequestCancel: a client whose context ends hangs up, which cancels
// the request on the server.
func TestRequestCancel(t *testing.T) {
	b := newBlocker()
	ts := startServer(t, b.Control)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Request(ctx, ts.path, "reload")
		done <- err
	}()
	wait(t, b.started, "the reload to start")
	cancel()
	if err := wait(t, done, "Request to return"); !errors.Is(err, context.Canceled) {
		t.Errorf("Request: have %v, want an error wrapping context.Canceled", err)
	}
	if cause := wait(t, b.ended, "the handler"); !errors.Is(cause, ErrHungUp) {
		t.Errorf("handler's context: have cause %v, want ErrHungUp", cause)
	}
}

// TestHalfCloseGetsAnswer: a client that shuts down its writing side after
// the request (as `socat` and `nc -N` do) still waits for the answer: end
// of file alone is not a hang-up.
func TestHalfCloseGetsAnswer(t *testing.T) {
	b := newBlocker()
	hook, waitFor := discardWatch(t, b.done)
	ts := startServer(t, b.Control, func(s *Server) { s.watchHook = hook })
	c := ts.dial(t)
	write(t, c, "reload\n")
	wait(t, b.started, "the reload to start")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(0, true)
	close(b.release)
	if cause := wait(t, b.ended, "the handler"); cause != nil {
		t.Errorf("the reload's context ended (%v): the half-close cancelled it", cause)
	}
	if have := readAnswer(t, c); have != "ok reloaded" {
		t.Errorf("have %q, want ok reloaded", have)
	}
}

// TestStopAccepting: requests in flight are answered; new connections are
// refused; Serve returns ErrServerClosed.
func TestStopAccepting(t *testing.T) {
	b := newBlocker()
	ts := startServer(t, b.Control)
	c := ts.dial(t)
	write(t, c, "reload\n")
	wait(t, b.started, "the reload to start")

	ts.StopAccepting()
	if err := ts.serveErr(t); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: have %v, want ErrServerClosed", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	_, err := Request(ctx, ts.path, "status")
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "is the daemon running") {
		t.Errorf("Request after StopAccepting: have %v, want ECONNREFUSED with a hint", err)
	}
	close(b.release)
	if have := readAnswer(t, c); have != "ok reloaded" {
		t.Errorf("request in flight: have %q, want ok reloaded", have)
	}
}

// TestShutdownTimeout: Shutdown waits for requests in flight; at its
// deadline it closes them, cancelling their handlers.
func TestShutdownTimeout(t *testing.T) {
	b := newBlocker()
	ts := startServer(t, b.Control)
	c := ts.dial(t)
	write(t, c, "reload\n")
	wait(t, b.started, "the reload to start")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: have %v, want DeadlineExceeded", err)
	}
	if cause := wait(t, b.ended, "the handler"); cause == nil {
		t.Error("the handler was not cancelled")
	}
	if line, err := readLine(c); err == nil {
		t.Errorf("client got %q after Close, want no answer", line)
	}
}

func readLine(c interface{ Read([]byte) (int, error) }) (string, error) {
	var b strings.Builder
	var one [1]byte
	for {
		n, err := c.Read(one[:])
		if n > 0 {
			if one[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(one[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
}
