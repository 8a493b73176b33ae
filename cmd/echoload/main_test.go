package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
			Count int `json:"count"`
		} `json:"reloads"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || !rep.Pass || rep.Reloads.Count == 0 {
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
