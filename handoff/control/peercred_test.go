//go:build linux

package control

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// nobody is the user the other-user tests run a client as.
const nobody = 65534

// asNobody runs a client process as uid/gid 65534 that sends req to path
// and returns what it printed. The test binary is copied where that user
// can run it.
func asNobody(t *testing.T, bin, path, req string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), noExitSleep, roleEnv+"=client "+path+" "+req)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid %d: %v\n%s", nobody, err, out)
	}
	return strings.TrimSpace(string(out))
}

// nobodyDir returns a directory uid 65534 can enter, holding a copy of the
// test binary it can run.
func nobodyDir(t *testing.T) (dir, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a client process as uid 65534 (nobody), which only root can start")
	}
	dir, err := os.MkdirTemp("", "control-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin = filepath.Join(dir, "control.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// TestPeerCredentials: a client of another user is refused by
// SO_PEERCRED, even when the socket's mode lets it connect.
func TestPeerCredentials(t *testing.T) {
	dir, bin := nobodyDir(t)
	var calls atomic.Int32
	ts := &testServer{path: filepath.Join(dir, "open"), logs: new(syncBuffer), served: make(chan error, 1)}
	ln, err := net.Listen("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ts.path, 0o666); err != nil { // anyone may connect
		t.Fatal(err)
	}
	ts.Server = NewServer(HandlerFunc(func(ctx context.Context, cmd string) Reply {
		calls.Add(1)
		return echodHandler(ctx, cmd)
	}), newTestLogger(ts.logs))
	go func() { ts.served <- ts.Serve(ln) }()
	defer func() {
		if err := ts.Close(); err != nil {
			t.Error(err)
		}
		ts.serveErr(t)
	}()

	if have := asNobody(t, bin, ts.path, "stop"); have != "answer: error permission denied" {
		t.Errorf("client as uid %d: have %q, want the answer error permission denied", nobody, have)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times for another user", n)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "permission denied") || !strings.Contains(logs, "uid=65534") {
		t.Errorf("no log line of the refusal:\n%s", logs)
	}
	// Root (this process) is served.
	if have, err := Request(t.Context(), ts.path, "status"); err != nil {
		t.Errorf("root: have %q, %v", have, err)
	}
}

// TestListenOtherUserCannotConnect: the socket Listen creates (mode 0600)
// refuses another user's connect(2) before the server even sees it.
func TestListenOtherUserCannotConnect(t *testing.T) {
	dir, bin := nobodyDir(t)
	path := filepath.Join(dir, "ctl")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if have := asNobody(t, bin, path, "status"); !strings.HasPrefix(have, "dial:") || !strings.Contains(have, "permission denied") {
		t.Errorf("client as uid %d: have %q, want connect refused with EACCES", nobody, have)
	}
}
