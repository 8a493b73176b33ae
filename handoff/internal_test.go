package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
)

// TestSetLoggerAndRemoveLaterAreSynchronised: SetLogger and the fd store
// bookkeeping may run while the upgrade goroutine logs (go test -race
// catches an unsynchronised write).
func TestSetLoggerAndRemoveLaterAreSynchronised(t *testing.T) {
	g := &Generation{log: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 200 {
				if i%2 == 0 {
					g.SetLogger(slog.New(slog.DiscardHandler))
					g.removeLater("x")
				} else {
					g.logger().Info("event")
				}
			}
		})
	}
	wg.Wait()
	if len(g.toRemove) != 400 {
		t.Fatalf("%d names recorded, want 400", len(g.toRemove))
	}
}

func TestMessageRoundTrip(t *testing.T) {
	b, err := encodeMessage(msgOffer, offer{Generation: 3, ParentPID: 7, Systemd: []string{"tcp"}, Stored: []string{"echod-listen-x"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	var o offer
	if err := decodeBody(m, &o); err != nil {
		t.Fatal(err)
	}
	if o.Generation != 3 || o.ParentPID != 7 || o.Systemd[0] != "tcp" || o.Stored[0] != "echod-listen-x" || m.Type != msgOffer {
		t.Fatalf("round trip: %+v %+v", m, o)
	}
}

func TestMessageRejected(t *testing.T) {
	good, _ := encodeMessage(msgHello, hello{PID: 1, Generation: 2})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        []byte("EHN"),
		"magic":        append([]byte("XXXX"), good[4:]...),
		"version":      append(append([]byte("EHND"), 1), good[5:]...),
		"future":       append(append([]byte("EHND"), 3), good[5:]...),
		"type":         append(append([]byte("EHND"), protoVersion, 99), good[6:]...),
		"body":         append(append([]byte(nil), good[:6]...), "{nope"...),
		"body missing": good[:6],
	} {
		if _, err := decodeMessage(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: decodeMessage(%q) = %v, want ErrProtocol", name, b, err)
		}
	}
}

// testChannelPair returns both ends of a new channel, closed when the
// test ends.
func testChannelPair(t *testing.T) (a, b *channel) {
	t.Helper()
	a, bFile, err := newChannelPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = channelFromFile(bFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// TestChannelTruncation: a packet larger than a message may be is an
// error (MSG_TRUNC), never a silently shortened message; fds travel with
// a message and arrive close-on-exec.
func TestChannelTruncation(t *testing.T) {
	a, b := testChannelPair(t)
	huge := append([]byte(protoMagic), protoVersion, byte(msgFailed))
	huge = append(huge, bytes.Repeat([]byte(" "), maxMessage+10)...)
	if _, _, err := a.c.WriteMsgUnix(huge, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := b.recv(true, time.Now().Add(10*time.Second)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized packet: %v, want ErrProtocol", err)
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.send(msgFailed, failed{Reason: "why"}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fds, _, err := b.recv(true, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFDs(fds)
	var fl failed
	if err := decodeBody(m, &fl); err != nil || fl.Reason != "why" || len(fds) != 1 {
		t.Fatalf("got %+v %v with %d fds", fl, err, len(fds))
	}
	flags, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd flags %#x (%v), want close-on-exec", flags, err)
	}
	if _, _, _, err := b.recv(false, time.Time{}); !errors.Is(err, errNoMessage) {
		t.Fatalf("empty queue: %v, want errNoMessage", err)
	}
	a.Close()
	if _, _, _, err := b.recv(true, time.Now().Add(10*time.Second)); !errors.Is(err, errEOF) {
		t.Fatalf("after the peer closed: %v, want errEOF", err)
	}
}

// TestChannelClosesFDsOfBadMessages: the fds that came with a message
// that cannot be read (here a bad magic) are closed, not left open with
// nobody to close them: the socket sent is closed for good, and its peer
// reads EOF.
func TestChannelClosesFDsOfBadMessages(t *testing.T) {
	a, b := testChannelPair(t)
	// Non-blocking, so that the peer's read deadline holds.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(pair[1]), "peer")
	defer peer.Close()
	if _, _, err := a.c.WriteMsgUnix([]byte("not a message"), unix.UnixRights(pair[0]), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[0]) // the one in flight is the last
	if _, fds, _, err := b.recv(true, time.Now().Add(10*time.Second)); err == nil || len(fds) != 0 {
		t.Fatalf("bad message: %d fds, %v; want none and an error", len(fds), err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("peer of the socket sent with a bad message: read %d, %v; want EOF (the fd was left open)", n, err)
	}
}

// FuzzDecodeMessage: whatever a packet holds, decoding never panics, and
// what decodes re-encodes to the same frame.
func FuzzDecodeMessage(f *testing.F) {
	for _, t := range []msgType{msgOffer, msgHello, msgReady, msgFailed, msgConns, msgAccept, msgDone, msgResume, msgEnd} {
		b, _ := encodeMessage(t, map[string]any{"generation": 2, "pid": 9, "reason": "x", "stored": []string{"a"}, "batch": 1, "taken": 3, "staged": true, "moved": 4, "conns": []map[string]any{{"id": 3, "state": []byte("st"), "remote": "r"}}})
		f.Add(b)
	}
	f.Add([]byte("EHND\x02\x01null"))
	f.Add([]byte("EHND\x02\x07{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if !json.Valid(m.Body) || m.Version != protoVersion {
			t.Fatalf("accepted %q", b)
		}
		for _, v := range []any{&offer{}, &hello{}, &ready{}, &failed{}, &connsMsg{}, &acceptMsg{}, &doneMsg{}, &resumeMsg{}, &endMsg{}} {
			_ = decodeBody(m, v)
		}
	})
}

// TestHandOverWithinRoom: the parent's and the child's sides of the
// hand-over over a real channel: the child takes what its room allows (a
// prefix), says it is full, and the parent keeps the rest, and a
// connection without a descriptor; the fds that moved are the very
// sockets (a byte written to the peer arrives).
func TestHandOverWithinRoom(t *testing.T) {
	parentEnd, childEnd := testChannelPair(t)

	const n, room = 600, 300
	conns, peers := socketConns(t, n, func(i int) []byte { return []byte{byte(i)} })
	a, b := net.Pipe() // no descriptor
	defer b.Close()
	conns = slices.Insert(conns, 1, daemon.DetachedConn{Conn: a, State: []byte("no fd")})

	toDetach := conns
	g := &Generation{log: slog.New(slog.DiscardHandler)}
	g.MigrateWith(Migration{
		Pause:  func() {},
		Resume: func() {},
		Detach: func(_ context.Context, k int) ([]daemon.DetachedConn, error) {
			// A server's DetachN: up to k at a time, then none.
			if k <= 0 || k > len(toDetach) {
				k = len(toDetach)
			}
			out := toDetach[:k]
			toDetach = toDetach[k:]
			return out, nil
		},
		Adopt: func(net.Conn, []byte) error { return nil },
	})
	type childResult struct {
		got []adoptedConn
		err error
	}
	done := make(chan childResult, 1)
	go func() {
		l := &parentLink{version: protoVersion, ch: childEnd}
		got, _, err := l.receiveConns(func() int { return room })
		done <- childResult{got, err}
	}()
	msgs, stop := startReader(parentEnd)
	sent, kept, _, err := g.handOver(parentEnd, msgs, make(chan error))
	stop()
	if err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer func() {
		for _, a := range res.got {
			a.c.Close()
		}
	}()
	if len(sent) != len(res.got) || len(sent)+len(kept) != n+1 {
		t.Fatalf("sent %d, child got %d, kept %d; want sent == got and sent+kept == %d", len(sent), len(res.got), len(kept), n+1)
	}
	if string(kept[0].State) != "no fd" {
		t.Errorf("kept first: the connection with state %q, want the one without a descriptor", kept[0].State)
	}
	if len(sent) != room {
		t.Fatalf("the child took %d, want its room, %d", len(sent), room)
	}
	for i, a := range res.got {
		if len(a.state) != 1 || a.state[0] != byte(i) {
			t.Fatalf("connection %d came with state %v, want [%d]", i, a.state, byte(i))
		}
	}
	// The same sockets, each open once: what a peer writes, its adopted
	// conn reads (a descriptor closed twice would have closed another).
	for i, a := range res.got {
		if _, err := peers[i].Write([]byte{'x', byte(i)}); err != nil {
			t.Fatal(err)
		}
		_ = a.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(a.c, b); err != nil || b[0] != 'x' || b[1] != byte(i) {
			t.Fatalf("adopted conn %d read %q, %v", i, b, err)
		}
	}
	for _, c := range append(sent, kept...) {
		c.Conn.Close()
	}
}

// TestHoldGC: the collector is off while held, back to its setting after,
// however often restore is called; holdGC(false) changes nothing.
func TestHoldGC(t *testing.T) {
	gcPercent := func() int { v := debug.SetGCPercent(0); debug.SetGCPercent(v); return v }
	defer debug.SetGCPercent(debug.SetGCPercent(77))
	holdGC(false)()
	if got := gcPercent(); got != 77 {
		t.Fatalf("holdGC(false): GC percent %d, want 77", got)
	}
	restore := holdGC(true)
	if got := gcPercent(); got != -1 {
		t.Fatalf("held: GC percent %d, want -1 (off)", got)
	}
	restore()
	debug.SetGCPercent(50)
	restore() // a second call does not undo a later change
	if got := gcPercent(); got != 50 {
		t.Fatalf("after restore: GC percent %d, want 50", got)
	}
}
