package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// checkSocket checks that path is a socket of mode 0600 that ln serves,
// and that Listen left nothing else in its directory.
func checkSocket(t *testing.T, ln net.Listener, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket of mode 0600", path, fi.Mode())
	}
	if have := ln.Addr().String(); have != path || ln.Addr().Network() != "unix" {
		t.Errorf("Addr: have %s %s, want unix %s", ln.Addr().Network(), have, path)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Join(filepath.Dir(path), e.Name()) != path && !strings.HasPrefix(e.Name(), "keep") {
			t.Errorf("left behind in the directory: %s", e.Name())
		}
	}
	c, err := net.DialTimeout("unix", path, ioTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	a.Close()
}

func TestListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	checkSocket(t, ln, path)
	if _, ok := ln.(interface{ File() (*os.File, error) }); !ok {
		t.Errorf("%T has no File method: it cannot be passed to a next generation", ln)
	}

	// Closing this process's copy leaves the socket file (a next
	// generation may serve it)...
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("after Close: %v", err)
	}
	// ... which the next Listen replaces, as it is stale now.
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	checkSocket(t, ln, path)
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	checkSocket(t, ln, path)
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	live, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	ln, err := Listen(path)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second Listen: have %v, want EADDRINUSE", err)
	}
	if ln != nil {
		t.Errorf("second Listen returned a listener: %v", ln.Addr())
	}
	checkSocket(t, live, path) // the first one still serves
}

func TestListenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keep-file")
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: have %v, want an error", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Errorf("the file changed: %q, %v", b, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "keep-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(dir, "keep-dir")); err == nil {
		t.Error("Listen over a directory: no error")
	}
	if _, err := Listen(filepath.Join(dir, strings.Repeat("x", 120))); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("Listen on a long path: have %v, want too long", err)
	}
	if _, err := Listen(filepath.Join(dir, "missing", "ctl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Listen in a missing directory: have %v, want ErrNotExist", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want the 2 of the test", len(entries))
	}
}
