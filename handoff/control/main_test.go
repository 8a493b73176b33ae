package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// roleEnv selects what a re-exec'd test binary does instead of testing:
//
//	client <path> <request>  connect to path, send the request line, print
//	                         "answer: <line>" or "dial: <error>"
//	wait-stdin               exit when stdin reaches end of file
const roleEnv = "CONTROL_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		// A helper process: no tests, nothing to check for leaks.
		os.Exit(runRole(role))
	}
	goleak.VerifyTestMain(m)
}

func runRole(role string) int {
	args := strings.SplitN(role, " ", 3)
	switch args[0] {
	case "client":
		if len(args) != 3 {
			break
		}
		c, err := net.DialTimeout("unix", args[1], ioTimeout)
		if err != nil {
			fmt.Println("dial:", err)
			return 0
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := io.WriteString(c, args[2]+"\n"); err != nil {
			fmt.Println("write:", err)
			return 1
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("read:", err)
			return 1
		}
		fmt.Print("answer: ", line)
		return 0
	case "wait-stdin":
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown %s=%q\n", roleEnv, role)
	return 2
}

// noExitSleep spares a helper process built with -race the race
// detector's 1 s sleep at exit.
const noExitSleep = "GORACE=atexit_sleep_ms=0"

// ioTimeout bounds every wait of a test.
const ioTimeout = 10 * time.Second

// testServer is a Server on a socket made by Listen in a test's directory.
type testServer struct {
	*Server
	path   string
	logs   *syncBuffer
	served chan error
	once   sync.Once
	err    error
}

// startServer starts a server for h; opts adjust it before it serves. The
// test's cleanup shuts it down and checks that Serve returned
// ErrServerClosed.
func startServer(t *testing.T, h HandlerFunc, opts ...func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{path: filepath.Join(t.TempDir(), "ctl"), logs: new(syncBuffer), served: make(chan error, 1)}
	ln, err := Listen(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = NewServer(h, newTestLogger(ts.logs))
	ts.lineTimeout = ioTimeout
	for _, o := range opts {
		o(ts.Server)
	}
	go func() { ts.served <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := ts.serveErr(t); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

// serveErr waits (bounded) for Serve to return and returns its error.
func (ts *testServer) serveErr(t *testing.T) error {
	t.Helper()
	ts.once.Do(func() {
		select {
		case ts.err = <-ts.served:
		case <-time.After(ioTimeout):
			ts.err = errors.New("Serve did not return")
		}
	})
	return ts.err
}

// dial connects to the test server with every I/O bounded by ioTimeout.
func (ts *testServer) dial(t *testing.T) *net.UnixConn {
	t.Helper()
	c, err := net.DialTimeout("unix", ts.path, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn)
}

// readAnswer reads the answer line (without its newline) and checks that
// the server then closes the connection.
func readAnswer(t *testing.T, c net.Conn) string {
	t.Helper()
	line, rest, err := readAnswerRest(t, c)
	if err != nil || len(rest) > 0 {
		t.Errorf("after the answer: read %q, %v; want end of file", rest, err)
	}
	return line
}

// answerLine reads the answer line (without its newline) and what follows,
// which it does not check.
func answerLine(t *testing.T, c net.Conn) string {
	t.Helper()
	line, _, _ := readAnswerRest(t, c)
	return line
}

func readAnswerRest(t *testing.T, c net.Conn) (line string, rest []byte, err error) {
	t.Helper()
	br := bufio.NewReader(c)
	line, err = br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer: %v (read %q)", err, line)
	}
	rest, err = io.ReadAll(br)
	return strings.TrimSuffix(line, "\n"), rest, err
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// wait waits for ch to be closed or to deliver, failing the test after
// ioTimeout.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// echodHandler answers like echod does.
func echodHandler(_ context.Context, cmd string) Reply {
	switch cmd {
	case "reload":
		return Reply{Kind: OK, Text: "pid=42 generation=2"}
	case "status":
		return Reply{Kind: OK, Text: "generation 2 pid 42: 1 listeners, 0 connections"}
	case "stop":
		return Reply{Kind: OK, Text: "pid=42"}
	}
	return UnknownCommand(cmd, "reload", "status", "stop")
}

// blocker is a handler for "reload" that runs until released or
// cancelled, and reports what happened.
type blocker struct {
	started chan struct{} // closed when the handler runs
	release chan struct{} // close to let it answer ok
	ended   chan error    // the context's cause when it ended, nil if released
	done    chan struct{} // closed when the handler returns
	once    sync.Once
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}), release: make(chan struct{}), ended: make(chan error, 1), done: make(chan struct{})}
}

func (b *blocker) Control(ctx context.Context, cmd string) Reply {
	if cmd != "reload" {
		return echodHandler(ctx, cmd)
	}
	b.once.Do(func() { close(b.started) })
	defer close(b.done)
	select {
	case <-b.release:
		b.ended <- nil
		return Reply{Kind: OK, Text: "reloaded"}
	case <-ctx.Done():
		b.ended <- context.Cause(ctx)
		return Reply{Kind: Error, Text: "cancelled: " + context.Cause(ctx).Error()}
	}
}
