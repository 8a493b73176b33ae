package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// servePlain is the baseline server: net.Listen and io.Copy(c, c) per
// connection, nothing else. It prints "addr=HOST:PORT" on stdout once
// listening and serves until SIGTERM or SIGINT.
func servePlain(addr string, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "addr=%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// EMFILE and friends: wait for a descriptor to free up.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// plainProc is a running plain server (this program, -plain-server).
type plainProc struct {
	argv []string
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startPlain(ctx context.Context, self string) (*plainProc, error) {
	argv := []string{self, "-plain-server", "127.0.0.1:0"}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start plain server: %w", err)
	}
	p := &plainProc{argv: argv, cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "addr="); ok {
				addrc <- a
			}
		}
		close(addrc)
		_ = cmd.Wait()
		close(p.done)
	}()
	select {
	case a, ok := <-addrc:
		if ok {
			p.addr = a
			return p, nil
		}
		p.Stop()
		return nil, errors.New("plain server exited before listening")
	case <-time.After(10 * time.Second):
		p.Stop()
		return nil, errors.New("plain server not listening after 10s")
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	}
}

func (p *plainProc) Pid() int { return p.cmd.Process.Pid }

// Stop terminates the plain server: SIGTERM, then SIGKILL after 5s.
func (p *plainProc) Stop() {
	_ = unix.Kill(p.cmd.Process.Pid, unix.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = unix.Kill(-p.cmd.Process.Pid, unix.SIGKILL)
		<-p.done
	}
}

// loadReport holds the fields of echoload's -json report that the
// benchmark uses (see cmd/echoload/internal/load/report.go).
type loadReport struct {
	Mode           string  `json:"mode"`
	Pass           bool    `json:"pass"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Short          struct {
		Attempted int64 `json:"attempted"`
		OK        int64 `json:"ok"`
		Failed    int64 `json:"failed"`
	} `json:"short"`
	Streams struct {
		Streams     int   `json:"streams"`
		Connections int64 `json:"connections"`
		Messages    int64 `json:"messages"`
		Failed      int64 `json:"failed"`
	} `json:"streams"`
	Hold *struct {
		Requested    int     `json:"requested"`
		Opened       int     `json:"opened"`
		StillEchoing int     `json:"still_echoing"`
		FirstError   string  `json:"first_error"`
		OpenSeconds  float64 `json:"open_seconds"`
		HeldSeconds  float64 `json:"held_seconds"`
	} `json:"hold"`
	Messages   int64 `json:"messages"`
	Bytes      int64 `json:"bytes"`
	Throughput struct {
		MessagesPerSec float64 `json:"messages_per_sec"`
		MBPerSec       float64 `json:"mb_per_sec"`
	} `json:"throughput"`
	Connect  latencyGroup `json:"connect_latency"`
	RTT      latencyGroup `json:"rtt_latency"`
	Failures struct {
		All        failureCounts `json:"all"`
		Steady     failureCounts `json:"steady"`
		NearReload failureCounts `json:"near_reload"`
	} `json:"failures"`
	FirstFailures []struct {
		Class    string `json:"class"`
		Workload string `json:"workload"`
		Error    string `json:"error"`
	} `json:"first_failures"`
	Reloads struct {
		Count    int     `json:"count"`
		OK       int     `json:"ok"`
		Failed   int     `json:"failed"`
		Duration latency `json:"duration"`
		Failures []struct {
			Error string `json:"error"`
		} `json:"first_failures"`
	} `json:"reloads"`
}

type latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

type latencyGroup struct {
	All        latency `json:"all"`
	Steady     latency `json:"steady"`
	NearReload latency `json:"near_reload"`
}

type failureCounts struct {
	ConnectRefused int64 `json:"connect_refused"`
	ConnectTimeout int64 `json:"connect_timeout"`
	Reset          int64 `json:"reset"`
	EOF            int64 `json:"eof"`
	Timeout        int64 `json:"timeout"`
	Corrupt        int64 `json:"corrupt"`
	Other          int64 `json:"other"`
	Total          int64 `json:"total"`
}

// String lists the non-zero classes: "2 reset, 1 eof", or "0".
func (f failureCounts) String() string {
	var parts []string
	for _, c := range []struct {
		n    int64
		name string
	}{{f.ConnectRefused, "refused"}, {f.ConnectTimeout, "connect timeout"}, {f.Reset, "reset"}, {f.EOF, "eof"}, {f.Timeout, "timeout"}, {f.Corrupt, "corrupt"}, {f.Other, "other"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.name))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

// loadRun is a running echoload.
type loadRun struct {
	argv     []string
	cmd      *exec.Cmd
	jsonPath string
	out      bytes.Buffer
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
}

// startLoad starts echoload with args plus -json, bounded by timeout, and
// records its command line in sec.
func (b *bench) startLoad(ctx context.Context, sec *section, name string, timeout time.Duration, args ...string) (*loadRun, error) {
	jsonPath := b.tmp + "/" + name + ".json"
	_ = os.Remove(jsonPath)
	argv := append([]string{b.echoload}, args...)
	argv = append(argv, "-json", jsonPath)
	sec.cmd(argv)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	l := &loadRun{argv: argv, cmd: cmd, jsonPath: jsonPath, cancel: cancel, done: make(chan struct{})}
	cmd.Stdout = &l.out
	cmd.Stderr = &l.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start echoload: %w", err)
	}
	go func() {
		l.err = cmd.Wait()
		cancel()
		close(l.done)
	}()
	return l, nil
}

// Wait waits for echoload and returns its report. Exit status 1 (some
// operation failed) still yields the report; the failures are in it.
func (l *loadRun) Wait() (*loadReport, error) {
	<-l.done
	var ee *exec.ExitError
	if l.err != nil && !(errors.As(l.err, &ee) && ee.ExitCode() == 1) {
		return nil, fmt.Errorf("echoload: %w\n%s", l.err, tail(l.out.String(), 20))
	}
	b, err := os.ReadFile(l.jsonPath)
	if err != nil {
		return nil, fmt.Errorf("echoload wrote no report (%v): %w\n%s", l.err, err, tail(l.out.String(), 20))
	}
	var r loadReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("echoload report %s: %w", l.jsonPath, err)
	}
	return &r, nil
}

// runLoad is startLoad then Wait.
func (b *bench) runLoad(ctx context.Context, sec *section, name string, timeout time.Duration, args ...string) (*loadReport, error) {
	l, err := b.startLoad(ctx, sec, name, timeout, args...)
	if err != nil {
		return nil, err
	}
	return l.Wait()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCmd runs argv in dir, bounded by timeout, and returns its combined
// output.
func runCmd(ctx context.Context, dir string, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return out.String(), err
}
