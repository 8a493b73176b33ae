//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/systemd"
)

// storeManager is the fd store side of a service manager, on a notify
// socket: it keeps what FDSTORE=1 sends by name, forgets what
// FDSTOREREMOVE=1 names, and answers BARRIER=1.
type storeManager struct {
	conn *net.UnixConn
	done chan struct{}

	mu      sync.Mutex
	stored  map[string][]int
	polled  map[string]bool // stored without FDPOLL=0
	removed []string
}

func startStoreManager(t *testing.T) *storeManager {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", addr)
	m := &storeManager{conn: conn, done: make(chan struct{}), stored: map[string][]int{}, polled: map[string]bool{}}
	go m.serve()
	t.Cleanup(func() {
		conn.Close()
		<-m.done
		for _, fds := range m.stored {
			closeFDs(fds)
		}
	})
	return m
}

func (m *storeManager) serve() {
	defer close(m.done)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		fds, _ := parseRights(oob[:oobn])
		lines := strings.Split(string(buf[:n]), "\n")
		name := ""
		has := func(l string) bool {
			for _, x := range lines {
				if x == l {
					return true
				}
			}
			return false
		}
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, "FDNAME="); ok {
				name = v
			}
		}
		m.mu.Lock()
		switch {
		case has("BARRIER=1"):
			closeFDs(fds) // the barrier: closing it answers
		case has("FDSTORE=1"):
			m.stored[name] = append(m.stored[name], fds...)
			m.polled[name] = !has("FDPOLL=0")
		case has("FDSTOREREMOVE=1"):
			closeFDs(m.stored[name])
			delete(m.stored, name)
			m.removed = append(m.removed, name)
		default:
			closeFDs(fds)
		}
		m.mu.Unlock()
	}
}

// sync returns once the manager handled every message sent before (a
// barrier: it answers in order).
func (m *storeManager) sync(t *testing.T) {
	t.Helper()
	if _, err := systemd.NewNotifier().Barrier(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// take hands the stored fds back as systemd would at the next start.
func (m *storeManager) take(t *testing.T) map[string]*os.File {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	files := map[string]*os.File{}
	for name, fds := range m.stored {
		if len(fds) != 1 {
			t.Fatalf("%s stored %d fds, want 1", name, len(fds))
		}
		if m.polled[name] {
			t.Errorf("%s stored without FDPOLL=0: the manager drops it once its writer closes", name)
		}
		d, err := unix.FcntlInt(uintptr(fds[0]), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = os.NewFile(uintptr(d), name)
	}
	return files
}

// socketConns returns n connected stream sockets as detached connections,
// the i-th with state(i), and their peers; the peers are closed when the
// test ends.
func socketConns(t *testing.T, n int, state func(i int) []byte) ([]daemon.DetachedConn, []*os.File) {
	t.Helper()
	var conns []daemon.DetachedConn
	var peers []*os.File
	t.Cleanup(func() {
		for _, p := range peers {
			p.Close()
		}
	})
	for i := range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, os.NewFile(uintptr(fds[1]), "peer"))
		c, err := newSockConn(fds[0])
		if err != nil {
			unix.Close(fds[0])
			t.Fatal(err)
		}
		conns = append(conns, daemon.DetachedConn{Conn: c, State: state(i)})
	}
	return conns, peers
}

// indexState is a state naming connection i.
func indexState(i int) []byte { return []byte{byte(i), byte(i >> 8)} }

// TestConnStoreRoundTrip: connections stored by a stopping process come
// back whole in the next one, with their state, as the very same sockets,
// across several queues when one fills; the queues leave the store, and
// what does not fit the new process's room is closed, not lost silently.
func TestConnStoreRoundTrip(t *testing.T) {
	m := startStoreManager(t)
	connQueueSndBuf = 8 << 10 // a few batches a queue
	defer func() { connQueueSndBuf = 0 }()

	const n = 2000
	conns, peers := socketConns(t, n, indexState)
	a, b := net.Pipe() // no descriptor: kept
	defer b.Close()
	conns = append(conns, daemon.DetachedConn{Conn: a, State: []byte("no fd")})

	old := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{FDStore: systemd.NewNotifier()}}
	stored, kept, err := old.StoreConns(conns)
	if err != nil {
		t.Fatal(err)
	}
	if stored != n || len(kept) != 1 || kept[0].Conn != a {
		t.Fatalf("stored %d, kept %d; want %d and the one without a descriptor", stored, len(kept), n)
	}
	files := m.take(t)
	if len(files) < 2 {
		t.Fatalf("%d queues stored, want several (small queues)", len(files))
	}

	next := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{Notifier: systemd.NewNotifier()}}
	got, err := next.restoreConns(files, n)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAdopted(got)
	if len(got) != n {
		t.Fatalf("restored %d connections, want %d", len(got), n)
	}
	seen := make([]bool, n)
	for _, c := range got {
		i := int(c.state[0]) | int(c.state[1])<<8
		if seen[i] {
			t.Fatalf("connection %d restored twice", i)
		}
		seen[i] = true
		// The very socket: what its peer writes, it reads.
		if _, err := peers[i].Write([]byte{'x', byte(i)}); err != nil {
			t.Fatal(err)
		}
		_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c.c, buf); err != nil || buf[0] != 'x' || buf[1] != byte(i) {
			t.Fatalf("restored connection %d read %q, %v", i, buf, err)
		}
	}
	m.sync(t)
	m.mu.Lock()
	removed, left := len(m.removed), len(m.stored)
	m.mu.Unlock()
	if removed != len(files) || left != 0 {
		t.Fatalf("%d of %d queues removed from the store, %d left", removed, len(files), left)
	}
}

// TestConnStoreRestoreWithinRoom: a process with room for fewer
// connections than were stored takes what fits and says so; the rest are
// closed (their peers see EOF).
func TestConnStoreRestoreWithinRoom(t *testing.T) {
	m := startStoreManager(t)
	const n, room = 300, 100
	conns, peers := socketConns(t, n, indexState)
	old := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{FDStore: systemd.NewNotifier()}}
	if stored, _, err := old.StoreConns(conns); err != nil || stored != n {
		t.Fatalf("StoreConns = %d, %v", stored, err)
	}
	next := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{Notifier: systemd.NewNotifier()}}
	got, err := next.restoreConns(m.take(t), room)
	defer closeAdopted(got)
	if len(got) != room || err == nil || !strings.Contains(err.Error(), "over this process's room") {
		t.Fatalf("restored %d, %v; want %d and an error naming the room", len(got), err, room)
	}
	restored := map[int]bool{}
	for _, c := range got {
		restored[int(c.state[0])|int(c.state[1])<<8] = true
	}
	for i, p := range peers {
		if restored[i] {
			continue
		}
		_ = p.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := p.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("peer %d of a connection over the room: read %v, want EOF", i, err)
		}
	}
}

// TestConnStoreSnapshotAndStopTakenOnce: a snapshot kept against a crash
// and a stop's queue hold the same sockets; the next process takes each
// once, with the state the stop's queue carries, and removes both.
func TestConnStoreSnapshotAndStopTakenOnce(t *testing.T) {
	m := startStoreManager(t)
	const n = 300
	conns, _ := socketConns(t, n, func(i int) []byte { return []byte{'s', byte(i), byte(i >> 8)} })
	var plain []net.Conn
	for _, d := range conns {
		plain = append(plain, d.Conn)
	}
	old := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{FDStore: systemd.NewNotifier(), Notifier: systemd.NewNotifier()}}
	names, err := old.snapshotConns(plain, 1)
	if err != nil || len(names) == 0 {
		t.Fatalf("snapshotConns = %v, %v", names, err)
	}
	if stored, _, err := old.StoreConns(conns); err != nil || stored != n {
		t.Fatalf("StoreConns = %d, %v", stored, err)
	}
	files := m.take(t)
	if len(files) != len(names)+1 {
		t.Fatalf("%d queues in the store, want the snapshot's %d and the stop's", len(files), len(names))
	}
	next := &Generation{log: slog.New(slog.DiscardHandler), opts: Options{Notifier: systemd.NewNotifier()}}
	got, err := next.restoreConns(files, 10*n)
	defer closeAdopted(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("restored %d connections, want %d (each socket once)", len(got), n)
	}
	for _, c := range got {
		if len(c.state) != 3 || c.state[0] != 's' {
			t.Fatalf("a connection came back with state %q, want the stop's", c.state)
		}
	}
	m.sync(t)
	m.mu.Lock()
	left := len(m.stored)
	m.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d queues left in the store", left)
	}
}

// TestHoldConns: the open connections and their descriptors, in order; a
// closed one and one without a descriptor are left out.
func TestHoldConns(t *testing.T) {
	var conns []net.Conn
	var want []int
	for i := range 4 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[1])
		c, err := newSockConn(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i == 2 {
			c.Close()
		} else {
			want = append(want, fds[0])
		}
		conns = append(conns, c)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conns = append(conns, a)
	var got []int
	var gotConns []net.Conn
	holdConns(conns, nil, nil, func(held []net.Conn, fds []int) { gotConns, got = held, fds })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("holdConns gave fds %v, want %v", got, want)
	}
	wantConns := []net.Conn{conns[0], conns[1], conns[3]}
	if !slices.Equal(gotConns, wantConns) {
		t.Fatalf("holdConns gave connections %v, want %v", gotConns, wantConns)
	}
}
