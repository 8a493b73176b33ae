package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestClassifyErrors(t *testing.T) {
	opErr := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, err)}
	}
	tests := []struct {
		err  error
		want Class
	}{
		{phaseErr(PhaseConnect, opErr("dial", syscall.ECONNREFUSED)), ConnectRefused},
		{phaseErr(PhaseConnect, opErr("dial", syscall.ENOENT)), ConnectRefused},
		{phaseErr(PhaseConnect, &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}), ConnectTimeout},
		{phaseErr(PhaseConnect, opErr("dial", syscall.ETIMEDOUT)), ConnectTimeout},
		{phaseErr(PhaseConnect, opErr("socket", syscall.EMFILE)), Other},
		{phaseErr(PhaseRead, fmt.Errorf("after 0 of 64 bytes: %w", opErr("read", syscall.ECONNRESET))), Reset},
		{phaseErr(PhaseWrite, opErr("write", syscall.EPIPE)), Reset},
		{phaseErr(PhaseRead, fmt.Errorf("after 0 of 64 bytes: %w", io.EOF)), EOF},
		{phaseErr(PhaseRead, fmt.Errorf("after 9 of 64 bytes: %w", io.ErrUnexpectedEOF)), EOF},
		{phaseErr(PhaseRead, &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}), Timeout},
		{phaseErr(PhaseWrite, &net.OpError{Op: "write", Err: os.ErrDeadlineExceeded}), Timeout},
		{phaseErr(PhaseVerify, &CorruptError{Reason: "x"}), Corrupt},
		{errors.New("mystery"), Other},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// runShort runs n short connections, one at a time, against addr.
func runShort(t *testing.T, addr string, n int64, timeout time.Duration) *Report {
	t.Helper()
	rep, err := Run(context.Background(), Config{
		Addr: addr, Count: n, Concurrency: 1, Size: testSize, Timeout: timeout,
	}, Options{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// TestBrokenServers runs short connections against deliberately broken
// servers and checks that every failure is detected and classified.
func TestBrokenServers(t *testing.T) {
	const n = 3
	tests := []struct {
		name    string
		addr    func(t *testing.T) string
		timeout time.Duration
		want    Class
		errText string
	}{
		{"close without echo", func(t *testing.T) string { return startTCP(t, closeHandler) }, 2 * time.Second, EOF, "EOF"},
		{"flip a byte", func(t *testing.T) string { return startTCP(t, flipHandler) }, 2 * time.Second, Corrupt, "checksum mismatch"},
		{"reset", func(t *testing.T) string { return startTCP(t, resetHandler) }, 2 * time.Second, Reset, "reset by peer"},
		{"refused", refusedAddr, 2 * time.Second, ConnectRefused, "refused"},
		{"missing unix socket", func(t *testing.T) string { return "unix:" + shortUnixPath(t) }, 2 * time.Second, ConnectRefused, "no such file"},
		{"never answers", func(t *testing.T) string { return startTCP(t, silentHandler) }, 50 * time.Millisecond, Timeout, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := runShort(t, tt.addr(t), n, tt.timeout)
			if rep.Pass {
				t.Error("Pass = true, want false")
			}
			if got := rep.Failures.All.Get(tt.want); got != n {
				t.Errorf("%s failures = %d, want %d (all: %+v)", tt.want, got, n, rep.Failures.All)
			}
			if rep.Failures.All.Total != n || rep.Short.Failed != n || rep.Short.OK != 0 {
				t.Errorf("failures %+v, short %+v; want exactly %d failures", rep.Failures.All, rep.Short, n)
			}
			if len(rep.FirstFailures) != n {
				t.Fatalf("first failures: %d records, want %d", len(rep.FirstFailures), n)
			}
			f := rep.FirstFailures[0]
			if f.Class != tt.want.String() || f.Workload != WorkloadShort || !strings.Contains(f.Error, tt.errText) || f.AtMS <= 0 {
				t.Errorf("first failure = %+v, want class %s with %q", f, tt.want, tt.errText)
			}
		})
	}
}

func TestGoodServer(t *testing.T) {
	for _, tt := range []struct {
		name string
		addr func(t *testing.T) string
		size int
	}{
		{"tcp", func(t *testing.T) string { return startTCP(t, echoHandler) }, testSize},
		{"unix", func(t *testing.T) string { return startServer(t, "unix", shortUnixPath(t), echoHandler) }, testSize},
		{"large messages", func(t *testing.T) string { return startTCP(t, echoHandler) }, 1 << 20}, // write and read overlap
	} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 8
			rep, err := Run(context.Background(), Config{
				Addr: tt.addr(t), Count: n, Concurrency: 4, Size: tt.size, Timeout: 5 * time.Second,
			}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Pass || rep.Failures.All.Total != 0 {
				t.Fatalf("pass=%v failures=%+v first=%+v", rep.Pass, rep.Failures.All, rep.FirstFailures)
			}
			if rep.Short.OK != n || rep.Messages != n || rep.Bytes != int64(n*tt.size) {
				t.Errorf("short %+v messages %d bytes %d, want %d ok", rep.Short, rep.Messages, rep.Bytes, n)
			}
			if rep.Connect.All.Count != n || rep.RTT.All.Count != n || rep.RTT.All.P99MS <= 0 {
				t.Errorf("latency: connect %+v rtt %+v", rep.Connect.All, rep.RTT.All)
			}
		})
	}
}

func TestStreams(t *testing.T) {
	addr := startTCP(t, echoHandler)
	rep, err := Run(context.Background(), Config{
		Addr: addr, Duration: 200 * time.Millisecond, Streams: 3, Size: 200, Timeout: 2 * time.Second,
		StreamInterval: time.Millisecond,
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pass || rep.Streams.Messages == 0 || rep.Streams.Connections != 3 || rep.Short.Attempted != 0 {
		t.Fatalf("pass=%v streams=%+v short=%+v failures=%+v", rep.Pass, rep.Streams, rep.Short, rep.FirstFailures)
	}
}

// TestStreamDuplicate checks that a duplicated message on a stream is
// detected by its sequence number.
func TestStreamDuplicate(t *testing.T) {
	addr := startTCP(t, duplicateHandler)
	rep, err := Run(context.Background(), Config{
		Addr: addr, Duration: 100 * time.Millisecond, Streams: 1, Size: testSize, Timeout: 2 * time.Second,
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Failures.All
	if c.Corrupt == 0 || c.Total != c.Corrupt {
		t.Fatalf("failures = %+v, want only corrupt", c)
	}
	if !strings.Contains(rep.FirstFailures[0].Error, "duplicated") || rep.FirstFailures[0].Workload != WorkloadStream {
		t.Errorf("first failure = %+v", rep.FirstFailures[0])
	}
}

func TestRateAndCount(t *testing.T) {
	addr := startTCP(t, echoHandler)
	rep, err := Run(context.Background(), Config{
		Addr: addr, Count: 10, Rate: 500, Concurrency: 2, Size: testSize, Timeout: 2 * time.Second,
		Duration: 5 * time.Second,
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Short.OK != 10 || !rep.Pass {
		t.Fatalf("short = %+v", rep.Short)
	}
	// 10 connections at 500/s: the last one is due 18ms after the start.
	if rep.ElapsedSeconds < 0.018 || rep.ElapsedSeconds > 4 {
		t.Errorf("elapsed %.3fs; want the run paced and ended by -count", rep.ElapsedSeconds)
	}
}

func TestHold(t *testing.T) {
	t.Run("good", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{
			Addr: startTCP(t, echoHandler), Hold: 20, Concurrency: 4, Duration: 20 * time.Millisecond,
			Size: testSize, Timeout: 2 * time.Second,
		}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := rep.Hold
		if !rep.Pass || rep.Mode != "hold" || h.Opened != 20 || h.StillEchoing != 20 || h.FirstError != "" {
			t.Fatalf("pass=%v hold=%+v", rep.Pass, h)
		}
	})
	t.Run("refused", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{
			Addr: refusedAddr(t), Hold: 20, Concurrency: 1, Duration: time.Millisecond,
			Size: testSize, Timeout: 2 * time.Second,
		}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := rep.Hold
		if rep.Pass || h.Opened != 0 || !strings.Contains(h.FirstError, "refused") || rep.Failures.All.ConnectRefused != 1 {
			t.Fatalf("pass=%v hold=%+v failures=%+v", rep.Pass, h, rep.Failures.All)
		}
	})
}

func TestNearReload(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	r := NewRecorder(ms(100))
	if r.nearReload(0, ms(10)) {
		t.Error("near a reload before any reload")
	}
	r.ReloadBegin(ms(1000))
	for _, tt := range []struct {
		start, end int
		want       bool
	}{
		{900, 990, false}, // before the reload
		{900, 1001, true}, // overlaps its start
		{1010, 1020, true},
	} {
		if got := r.nearReload(ms(tt.start), ms(tt.end)); got != tt.want {
			t.Errorf("during reload: near(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
	r.ReloadEnd(ReloadEvent{Start: ms(1000), End: ms(1050), OK: true})
	for _, tt := range []struct {
		start, end int
		want       bool
	}{
		{1100, 1200, true},  // starts inside the window after the reload
		{1150, 1160, true},  // starts exactly at end + window
		{1151, 1160, false}, // after the window
		{900, 990, false},   // ended before the reload started
	} {
		if got := r.nearReload(ms(tt.start), ms(tt.end)); got != tt.want {
			t.Errorf("after reload: near(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
}
