package systemd

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStoreSendsListenerFD: FDSTORE=1 with FDNAME= and the listener's fd;
// the fd the manager receives is the same listening socket (a client
// connected through it is accepted on the original).
func TestStoreSendsListenerFD(t *testing.T) {
	m := newFakeManager(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := NewNotifier().Store("echod-listen-x", int(f.Fd())); !ok || err != nil {
		t.Fatalf("Store = %v, %v", ok, err)
	}
	msg, fds, ok := m.recv(5 * time.Second)
	if !ok {
		t.Fatal("manager received nothing")
	}
	defer closeFDs(fds)
	if msg != "FDSTORE=1\nFDNAME=echod-listen-x" || len(fds) != 1 {
		t.Fatalf("manager got %q with %d fds", msg, len(fds))
	}
	var a, b unix.Stat_t
	if err := unix.Fstat(fds[0], &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(f.Fd()), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino {
		t.Fatalf("stored fd is inode %d, the listener %d", a.Ino, b.Ino)
	}
}

func TestStoreRejectsBadNames(t *testing.T) {
	m := newFakeManager(t, false)
	n := NewNotifier()
	for _, name := range []string{"", "a:b", "tab\there", strings.Repeat("x", 256), "new\nline"} {
		if ok, err := n.Store(name, int(os.Stdin.Fd())); ok || err == nil {
			t.Errorf("Store(%q) = %v, %v; want an error", name, ok, err)
		}
		if ok, err := n.Remove(name); ok || err == nil {
			t.Errorf("Remove(%q) = %v, %v; want an error", name, ok, err)
		}
	}
	if ok, err := n.Store("nofd"); ok || err == nil {
		t.Errorf("Store without fds = %v, %v; want an error", ok, err)
	}
	m.expectNothing()
}

func TestRemove(t *testing.T) {
	m := newFakeManager(t, false)
	if ok, err := NewNotifier().Remove("echod-listen-x"); !ok || err != nil {
		t.Fatalf("Remove = %v, %v", ok, err)
	}
	msg, fds, ok := m.recv(5 * time.Second)
	closeFDs(fds)
	if !ok || msg != "FDSTOREREMOVE=1\nFDNAME=echod-listen-x" || len(fds) != 0 {
		t.Fatalf("manager got %q (%v) with %d fds", msg, ok, len(fds))
	}
}

// TestStoreUnpolled: FDPOLL=0 comes with the fd, and bad input is refused
// as by Store.
func TestStoreUnpolled(t *testing.T) {
	m := newFakeManager(t, false)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	n := NewNotifier()
	if ok, err := n.StoreUnpolled("echod-conns-0", p[0]); !ok || err != nil {
		t.Fatalf("StoreUnpolled = %v, %v", ok, err)
	}
	msg, fds, ok := m.recv(5 * time.Second)
	if !ok {
		t.Fatal("manager received nothing")
	}
	closeFDs(fds)
	if msg != "FDSTORE=1\nFDNAME=echod-conns-0\nFDPOLL=0" || len(fds) != 1 {
		t.Fatalf("manager got %q with %d fds", msg, len(fds))
	}
	if ok, err := n.StoreUnpolled("a:b", p[0]); ok || err == nil {
		t.Errorf("StoreUnpolled with a bad name = %v, %v; want an error", ok, err)
	}
	if ok, err := n.StoreUnpolled("nofd"); ok || err == nil {
		t.Errorf("StoreUnpolled without fds = %v, %v; want an error", ok, err)
	}
	m.expectNothing()
}
