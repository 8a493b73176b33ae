package control

import (
	"bufio"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// rawServer answers each connection to a socket in the test's directory
// with the next of answers, written verbatim after reading one line; it
// returns the path and a channel of the request lines it read.
func rawServer(t *testing.T, answers ...string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	requests := make(chan string, len(answers))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, a := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			requests <- line
			_, _ = io.WriteString(c, a)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return path, requests
}

// TestRequestAnswers: the client against a server that answers raw bytes,
// as another version of the daemon might.
func TestRequestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want, wantErr string
	}{
		{name: "ok", answer: "ok pid=1 generation=2\n", want: "pid=1 generation=2"},
		{name: "bare ok", answer: "ok\n", want: ""},
		{name: "ok crlf", answer: "ok done\r\n", want: "done"},
		{name: "error", answer: "error upgrade failed: boom\n", wantErr: "upgrade failed: boom"},
		{name: "bare error", answer: "error\n", wantErr: "the daemon answered error without a reason"},
		{name: "unknown kind", answer: "maybe later\n", wantErr: `unexpected answer "maybe later"`},
		{name: "no answer", answer: "", wantErr: "no answer: the daemon closed the connection"},
		{name: "no newline", answer: "ok half", wantErr: "no answer: the daemon closed the connection"},
		{name: "too long", answer: "ok " + strings.Repeat("x", maxReply+10), wantErr: "answer longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, requests := rawServer(t, tc.answer)
			have, err := Request(t.Context(), path, "status")
			if req := wait(t, requests, "the request"); req != "status\n" {
				t.Errorf("request line: have %q, want %q", req, "status\n")
			}
			if tc.wantErr == "" {
				if err != nil || have != tc.want {
					t.Errorf("have %q, %v; want %q", have, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("have %q, %v; want an error containing %q", have, err, tc.wantErr)
			}
			var re *ReplyError
			if isReply := errors.As(err, &re); isReply != strings.HasPrefix(tc.answer, "error") {
				t.Errorf("*ReplyError: %v, want %v", isReply, !isReply)
			}
		})
	}
}

// TestRequestRetries: each retry is a new connection.
func TestRequestRetries(t *testing.T) {
	path, requests := rawServer(t, "retry generation 3 (pid 9) serves now\n", "retry not ready\n", "ok pid=9\n")
	have, err := Request(t.Context(), path, "reload")
	if err != nil || have != "pid=9" {
		t.Fatalf("have %q, %v; want pid=9", have, err)
	}
	for i := range 3 {
		if req := wait(t, requests, "a request"); req != "reload\n" {
			t.Errorf("request %d: have %q, want reload", i, req)
		}
	}
}

func TestRequestNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none")
	_, err := Request(t.Context(), path, "status")
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "is the daemon running, with its control socket at "+path) {
		t.Errorf("have %v, want ENOENT with a hint naming %s", err, path)
	}
}

func TestRequestBadCommand(t *testing.T) {
	// Refused before dialling: the path does not exist.
	for _, cmd := range []string{"", "reload\nstop", strings.Repeat("a", maxRequest+1), "\xff"} {
		_, err := Request(t.Context(), filepath.Join(t.TempDir(), "none"), cmd)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			t.Errorf("Request(%.20q): have %v, want a refusal of the request", cmd, err)
		}
	}
}
