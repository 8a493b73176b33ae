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

	"github.com/echod/echod/cmd/echoload/load"
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

// failuresString lists the non-zero classes of f: "2 reset, 1 eof", or
// "0".
func failuresString(f load.FailureCounts) string {
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

// Wait waits for echoload and returns its -json report. Exit status 1
// (some operation failed) still yields the report; the failures are in it.
func (l *loadRun) Wait() (*load.Report, error) {
	<-l.done
	var ee *exec.ExitError
	if l.err != nil && !(errors.As(l.err, &ee) && ee.ExitCode() == 1) {
		return nil, fmt.Errorf("echoload: %w\n%s", l.err, tail(l.out.String(), 20))
	}
	b, err := os.ReadFile(l.jsonPath)
	if err != nil {
		return nil, fmt.Errorf("echoload wrote no report (%v): %w\n%s", l.err, err, tail(l.out.String(), 20))
	}
	var r load.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("echoload report %s: %w", l.jsonPath, err)
	}
	return &r, nil
}

// runLoad is startLoad then Wait.
func (b *bench) runLoad(ctx context.Context, sec *section, name string, timeout time.Duration, args ...string) (*load.Report, error) {
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
