package systemd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockDir returns a directory for Unix sockets whose paths fit in sun_path
// (108 bytes): t.TempDir() unless that is too long.
func sockDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) < 80 {
		return dir
	}
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeManager is the receiving end of NOTIFY_SOCKET.
type fakeManager struct {
	t    *testing.T
	addr string
	conn *net.UnixConn
}

// newFakeManager listens on a unixgram socket (a path in a temporary
// directory, or an abstract name when abstract is set) and points
// NOTIFY_SOCKET at it for the duration of the test.
func newFakeManager(t *testing.T, abstract bool) *fakeManager {
	t.Helper()
	var addr string
	if abstract {
		addr = fmt.Sprintf("@echod-systemd-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		addr = filepath.Join(sockDir(t), "notify.sock")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return &fakeManager{t: t, addr: addr, conn: conn}
}

// recv reads one datagram within timeout. It returns ok == false when none
// arrived. The caller owns the returned fds.
func (m *fakeManager) recv(timeout time.Duration) (msg string, fds []int, ok bool) {
	m.t.Helper()
	if err := m.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		m.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, flags, _, err := m.conn.ReadMsgUnix(buf, oob)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", nil, false
	}
	if err != nil {
		m.t.Fatalf("read notify socket: %v", err)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		m.t.Fatalf("truncated datagram (flags %#x)", flags)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		m.t.Fatalf("parse control messages: %v", err)
	}
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET || c.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		rights, err := unix.ParseUnixRights(&c)
		if err != nil {
			m.t.Fatalf("parse SCM_RIGHTS: %v", err)
		}
		fds = append(fds, rights...)
	}
	return string(buf[:n]), fds, true
}

// expectNothing asserts that no datagram arrives within a short time.
func (m *fakeManager) expectNothing() {
	m.t.Helper()
	if msg, fds, ok := m.recv(100 * time.Millisecond); ok {
		closeFDs(fds)
		m.t.Errorf("unexpected datagram %q with %d fds", msg, len(fds))
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

var socketKinds = []struct {
	name     string
	abstract bool
}{{"path", false}, {"abstract", true}}

func TestNotifySendsOneDatagram(t *testing.T) {
	for _, kind := range socketKinds {
		t.Run(kind.name, func(t *testing.T) {
			m := newFakeManager(t, kind.abstract)
			n := NewNotifier()
			if !n.Enabled() {
				t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
			}
			sent, err := n.Notify(Ready, Status("serving 2 listeners\nWATCHDOG=1"))
			if !sent || err != nil {
				t.Fatalf("Notify = %v, %v; want true, nil", sent, err)
			}
			msg, fds, ok := m.recv(5 * time.Second)
			closeFDs(fds)
			if !ok {
				t.Fatal("no datagram received")
			}
			if want := "READY=1\nSTATUS=serving 2 listeners WATCHDOG=1"; msg != want {
				t.Errorf("received %q, want %q", msg, want)
			}
			if len(fds) != 0 {
				t.Errorf("received %d fds, want none", len(fds))
			}
			m.expectNothing()
			if got := os.Getenv("NOTIFY_SOCKET"); got != m.addr {
				t.Errorf("after Notify NOTIFY_SOCKET = %q, want %q (it must stay set)", got, m.addr)
			}

			// A second message is a second datagram.
			if sent, err := n.Notify(MainPID(77), Reloading); !sent || err != nil {
				t.Fatalf("Notify = %v, %v; want true, nil", sent, err)
			}
			if msg, _, ok := m.recv(5 * time.Second); !ok || msg != "MAINPID=77\nRELOADING=1" {
				t.Errorf("second datagram: %q, %v", msg, ok)
			}
		})
	}
}

func TestNotifyRefusesInvalidLines(t *testing.T) {
	m := newFakeManager(t, false)
	n := NewNotifier()
	for _, bad := range []string{"STATUS=a\nREADY=1", "lowercase=1", "NOKEY", "", "=1", "STATUS=a\x00b", "READY=1\n"} {
		// The invalid line comes after a valid one: nothing at all is sent.
		sent, err := n.Notify(Ready, bad)
		if sent || !errors.Is(err, ErrInvalidState) {
			t.Errorf("Notify(READY=1, %q) = %v, %v; want false, ErrInvalidState", bad, sent, err)
		}
		sent, err = n.NotifyWithFDs([]int{0}, Ready, bad)
		if sent || !errors.Is(err, ErrInvalidState) {
			t.Errorf("NotifyWithFDs(READY=1, %q) = %v, %v; want false, ErrInvalidState", bad, sent, err)
		}
	}
	m.expectNothing()
	if os.Getenv("NOTIFY_SOCKET") != m.addr {
		t.Error("NOTIFY_SOCKET was changed")
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET") // restored by t.Setenv's cleanup
	for name, n := range map[string]*Notifier{"NewNotifier": NewNotifier(), "zero": {}, "nil": nil} {
		if n.Enabled() {
			t.Errorf("%s: Enabled() = true", name)
		}
		if sent, err := n.Notify(Ready); sent || err != nil {
			t.Errorf("%s: Notify = %v, %v; want false, nil", name, sent, err)
		}
		// Not even invalid lines are an error: there is nothing to send to.
		if sent, err := n.Notify("bad"); sent || err != nil {
			t.Errorf("%s: Notify(bad) = %v, %v; want false, nil", name, sent, err)
		}
		if sent, err := n.NotifyWithFDs([]int{0}, "FDSTORE=1"); sent || err != nil {
			t.Errorf("%s: NotifyWithFDs = %v, %v; want false, nil", name, sent, err)
		}
		if ok, err := n.Barrier(time.Second); ok || err != nil {
			t.Errorf("%s: Barrier = %v, %v; want false, nil", name, ok, err)
		}
	}
}

func TestNotifyNoListener(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	n := NewNotifier()
	if sent, err := n.Notify(Ready); sent || err == nil {
		t.Errorf("Notify to a missing socket = %v, %v; want false and an error", sent, err)
	}
	if sent, err := n.NotifyWithFDs(nil, Ready); sent || err == nil {
		t.Errorf("NotifyWithFDs to a missing socket = %v, %v; want false and an error", sent, err)
	}
	if ok, err := n.Barrier(time.Second); ok || err == nil {
		t.Errorf("Barrier to a missing socket = %v, %v; want false and an error", ok, err)
	}
}

// TestNotifyUsesNotifierSocket checks that a Notifier sends where
// NewNotifier said it would (Enabled), even if NOTIFY_SOCKET changes
// later, as NotifyWithFDs and Barrier do.
func TestNotifyUsesNotifierSocket(t *testing.T) {
	m := newFakeManager(t, false)
	n := NewNotifier()

	t.Run("unset later", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		os.Unsetenv("NOTIFY_SOCKET")
		if !n.Enabled() {
			t.Fatal("Enabled() = false")
		}
		sent, err := n.Notify(Ready)
		if !sent || err != nil {
			t.Errorf("Notify after NOTIFY_SOCKET was unset = %v, %v; want true, nil (Enabled() is true)", sent, err)
		}
		if msg, fds, ok := m.recv(500 * time.Millisecond); !ok || msg != Ready {
			closeFDs(fds)
			t.Errorf("manager got %q, %v; want %q", msg, ok, Ready)
		}
	})

	t.Run("changed later", func(t *testing.T) {
		other := newFakeManager(t, true) // re-points NOTIFY_SOCKET
		if sent, err := n.Notify(Stopping); !sent || err != nil {
			t.Fatalf("Notify = %v, %v", sent, err)
		}
		if msg, fds, ok := other.recv(100 * time.Millisecond); ok {
			closeFDs(fds)
			t.Errorf("Notify sent %q to the current NOTIFY_SOCKET, not the Notifier's", msg)
		}
		if msg, fds, ok := m.recv(100 * time.Millisecond); !ok || msg != Stopping {
			closeFDs(fds)
			t.Errorf("Notifier's socket got %q, %v; want %q", msg, ok, Stopping)
		}
		// NotifyWithFDs already uses the Notifier's socket.
		if sent, err := n.NotifyWithFDs(nil, Stopping); !sent || err != nil {
			t.Fatalf("NotifyWithFDs = %v, %v", sent, err)
		}
		if msg, fds, ok := m.recv(5 * time.Second); !ok || msg != Stopping {
			closeFDs(fds)
			t.Errorf("NotifyWithFDs: Notifier's socket got %q, %v; want %q", msg, ok, Stopping)
		}
	})
}

func TestNotifyWithFDs(t *testing.T) {
	for _, kind := range socketKinds {
		t.Run(kind.name, func(t *testing.T) {
			m := newFakeManager(t, kind.abstract)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()

			n := NewNotifier()
			sent, err := n.NotifyWithFDs([]int{int(w.Fd())}, "FDSTORE=1", "FDNAME=pipe")
			if !sent || err != nil {
				t.Fatalf("NotifyWithFDs = %v, %v; want true, nil", sent, err)
			}
			msg, fds, ok := m.recv(5 * time.Second)
			if !ok {
				t.Fatal("no datagram received")
			}
			if msg != "FDSTORE=1\nFDNAME=pipe" {
				t.Errorf("received %q", msg)
			}
			if len(fds) != 1 {
				closeFDs(fds)
				t.Fatalf("received %d fds, want 1", len(fds))
			}
			// Writing through the received fd arrives on our pipe.
			got := os.NewFile(uintptr(fds[0]), "received")
			if _, err := got.Write([]byte("through the manager")); err != nil {
				t.Fatalf("write to received fd: %v", err)
			}
			got.Close()
			// Our write end stays open and usable.
			if _, err := w.Write([]byte(", and ours")); err != nil {
				t.Fatalf("write to our pipe end after sending it: %v", err)
			}
			w.Close()
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != "through the manager, and ours" {
				t.Errorf("read %q from the pipe", data)
			}
			if os.Getenv("NOTIFY_SOCKET") != m.addr {
				t.Error("NOTIFY_SOCKET was changed")
			}
		})
	}
}

func TestBarrier(t *testing.T) {
	for _, kind := range socketKinds {
		t.Run(kind.name, func(t *testing.T) {
			m := newFakeManager(t, kind.abstract)
			type result struct {
				msg string
				fds int
				ok  bool
			}
			done := make(chan result, 1)
			m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			go func() {
				// Not m.recv: t.Fatal is not allowed off the test goroutine.
				buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4*4))
				n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
				if err != nil {
					done <- result{}
					return
				}
				var fds []int
				cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
				for _, c := range cmsgs {
					rights, _ := unix.ParseUnixRights(&c)
					fds = append(fds, rights...)
				}
				time.Sleep(50 * time.Millisecond) // Barrier must wait for this
				closeFDs(fds)
				done <- result{string(buf[:n]), len(fds), true}
			}()
			start := time.Now()
			ok, err := NewNotifier().Barrier(10 * time.Second)
			elapsed := time.Since(start)
			if err != nil {
				m.conn.SetReadDeadline(time.Now()) // stop the manager
			}
			res := <-done
			if !ok || err != nil {
				t.Fatalf("Barrier = %v, %v; want true, nil", ok, err)
			}
			if !res.ok || res.msg != "BARRIER=1" || res.fds != 1 {
				t.Errorf("manager received %q with %d fds (ok %v); want \"BARRIER=1\" with 1 fd", res.msg, res.fds, res.ok)
			}
			if elapsed < 50*time.Millisecond {
				t.Errorf("Barrier returned after %v, before the manager closed the fd", elapsed)
			}
			if os.Getenv("NOTIFY_SOCKET") != m.addr {
				t.Error("NOTIFY_SOCKET was changed")
			}
		})
	}
}

func TestBarrierTimeout(t *testing.T) {
	m := newFakeManager(t, false)
	received := make(chan []int, 1)
	m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	go func() {
		buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4*4))
		_, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		var fds []int
		if err == nil {
			cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, c := range cmsgs {
				rights, _ := unix.ParseUnixRights(&c)
				fds = append(fds, rights...)
			}
		}
		received <- fds // kept open: this manager never answers
	}()
	const timeout = 200 * time.Millisecond
	start := time.Now()
	ok, err := NewNotifier().Barrier(timeout)
	elapsed := time.Since(start)
	if elapsed < timeout {
		m.conn.SetReadDeadline(time.Now()) // failed early: stop the manager
	}
	fds := <-received
	defer closeFDs(fds)
	if ok || err == nil {
		t.Fatalf("Barrier with a silent manager = %v, %v; want false and an error", ok, err)
	}
	if !strings.Contains(err.Error(), "200ms") {
		t.Errorf("error %q does not give the timeout", err)
	}
	if elapsed < timeout || elapsed > timeout+5*time.Second {
		t.Errorf("Barrier returned after %v, want about %v", elapsed, timeout)
	}
	if len(fds) != 1 {
		t.Errorf("manager received %d fds, want 1", len(fds))
	}
}

func TestBarrierTimeoutUnread(t *testing.T) {
	// Nobody reads the socket at all: the fd sits in the queue.
	newFakeManager(t, true)
	ok, err := NewNotifier().Barrier(50 * time.Millisecond)
	if ok || err == nil {
		t.Fatalf("Barrier with nobody reading = %v, %v; want false and an error", ok, err)
	}
}

// TestMonotonicUsec: the MONOTONIC_USEC= line Type=notify-reload needs
// with RELOADING=1 is one KEY=VALUE line (Notify sends it), in µs of
// CLOCK_MONOTONIC, between two readings of that clock.
func TestMonotonicUsec(t *testing.T) {
	now := func() int64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		return ts.Nano() / 1000
	}
	before := now()
	line := MonotonicUsec()
	after := now()
	v, ok := strings.CutPrefix(line, "MONOTONIC_USEC=")
	us, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil || us < before || us > after {
		t.Fatalf("MonotonicUsec() = %q, want MONOTONIC_USEC=N with %d <= N <= %d", line, before, after)
	}
	m := newFakeManager(t, false)
	if sent, err := NewNotifier().Notify(Reloading, line); !sent || err != nil {
		t.Fatalf("Notify(RELOADING=1, %q) = %v, %v", line, sent, err)
	}
	if msg, _, ok := m.recv(5 * time.Second); !ok || msg != Reloading+"\n"+line {
		t.Fatalf("the manager got %q (%v), want RELOADING=1 and %s", msg, ok, line)
	}
}
