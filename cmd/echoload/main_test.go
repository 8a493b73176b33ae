package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startEcho starts a correct echo server on a loopback port.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait() // the client closes every connection it opens
	})
	return ln.Addr().String()
}

func TestRunPass(t *testing.T) {
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"-addr", startEcho(t), "-duration", "200ms", "-streams", "2", "-concurrency", "2",
		"-reload-cmd", "true", "-reload-every", "50ms", "-json", jsonPath, "-plot", plotPath,
	}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "PASS") {
		t.Errorf("stdout lacks PASS:\n%s", stdout.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet got %q", stderr.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Pass    bool `json:"pass"`
		Reloads struct {
			Count   int  `json:"count"`
			Pending *int `json:"pending"`
			Skipped *int `json:"skipped"`
		} `json:"reloads"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || !rep.Pass || rep.Reloads.Count == 0 || rep.Reloads.Pending == nil || rep.Reloads.Skipped == nil {
		t.Errorf("JSON report: %v %+v", err, rep)
	}
	if fi, err := os.Stat(plotPath); err != nil || fi.Size() == 0 {
		t.Errorf("plot: %v", err)
	}
}

func TestRunFail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-addr", addr, "-count", "3", "-concurrency", "1"}, &stdout, &stderr)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitFailure, stdout.String(), stderr.String())
	}
	for _, s := range []string{"FAIL", "first failures:", "connect_refused"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
		}
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-size", "8"},
		{"-reload-cmd", "true", "-reload-signal", "HUP"},
		{"-reload-signal", "HUP"},
		{"-hold", "10", "-plot", "x.png"},
		{"-plot", "x.gif"},
		{"-duration", "0"},
		{"-addr", "nonsense"},
		{"extra"},
		{"-no-such-flag"},
		{"-reload-cmd", "true", "-reload-timeout", "0"},
		{"-reload-cmd", "true", "-reload-timeout", "-1s"},
		{"-reload-cmd", "true", "-reload-timeout", "soon"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("run(%q) = %d, want %d", args, code, exitUsage)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != exitOK || !strings.Contains(stderr.String(), "-reload-every") {
		t.Errorf("-h: exit %d, usage %q", code, stderr.String())
	}
}

func TestReloadTimeoutFlag(t *testing.T) {
	o, err := parseFlags([]string{"-reload-cmd", "true"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Reload.Timeout != 60*time.Second || o.cfg.Timeout != defaultTimeout {
		t.Errorf("defaults: reload timeout %v, timeout %v", o.cfg.Reload.Timeout, o.cfg.Timeout)
	}
	o, err = parseFlags([]string{"-reload-cmd", "true", "-timeout", "1s", "-reload-timeout", "90s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Reload.Timeout != 90*time.Second || o.cfg.Timeout != time.Second {
		t.Errorf("reload timeout %v, timeout %v", o.cfg.Reload.Timeout, o.cfg.Timeout)
	}
}

// TestRunSignalPending: a signal reload whose new generation never appears
// (this test process is the "daemon" and keeps its pid file) is pending at
// the end of the run, which passes.
func TestRunSignalPending(t *testing.T) {
	dir := t.TempDir()
	pidFile, jsonPath := filepath.Join(dir, "pid"), filepath.Join(dir, "r.json")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"-addr", startEcho(t), "-duration", "200ms", "-streams", "1", "-concurrency", "0",
		"-reload-signal", "USR1", "-reload-pid-file", pidFile, "-reload-every", "10ms", "-json", jsonPath,
	}, &stdout, &stderr)
	if code != exitOK || !strings.Contains(stdout.String(), "(ok 0, failed 0, pending 1)") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Pass    bool `json:"pass"`
		Reloads struct {
			Pending int `json:"pending"`
			Failed  int `json:"failed"`
			Events  []struct {
				Pending bool `json:"pending"`
			} `json:"events"`
		} `json:"reloads"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || !rep.Pass || rep.Reloads.Pending != 1 || rep.Reloads.Failed != 0 ||
		len(rep.Reloads.Events) != 1 || !rep.Reloads.Events[0].Pending {
		t.Errorf("JSON report: %v %+v", err, rep)
	}
}
