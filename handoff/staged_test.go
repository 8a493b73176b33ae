//go:build linux

package handoff

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

// TestStagedHandOver: both sides of the staged hand-over over a real
// channel. Before the commit the child takes copies within its room and
// the parent takes nothing out; after it, each copied connection still
// served moves with its state, as the very socket; one the parent closed
// meanwhile is closed in the child too (its peer reads EOF); those beyond
// the room were never taken out of the parent.
func TestStagedHandOver(t *testing.T) {
	parentEnd, childEnd := testChannelPair(t)
	const n, room, closedOne = 600, 500, 7
	conns, peers := socketConns(t, n, indexState)
	index := map[net.Conn]int{}
	var mu sync.Mutex
	served := map[net.Conn]bool{}
	var live []net.Conn
	for i, d := range conns {
		index[d.Conn] = i
		served[d.Conn] = true
		live = append(live, d.Conn)
	}
	var kept []int
	g := &Generation{log: slog.New(slog.DiscardHandler)}
	m := &Migration{
		Pause:  func() {},
		Resume: func() {},
		Detach: func(context.Context, int) ([]daemon.DetachedConn, error) {
			t.Error("the staged hand-over called Detach")
			return nil, nil
		},
		Adopt: func(c net.Conn, _ []byte) error {
			kept = append(kept, index[c])
			return nil
		},
		Live: func() []net.Conn {
			mu.Lock()
			defer mu.Unlock()
			var out []net.Conn
			for _, c := range live {
				if served[c] {
					out = append(out, c)
				}
			}
			return out
		},
		DetachConns: func(_ context.Context, cs []net.Conn) ([]daemon.DetachedConn, error) {
			mu.Lock()
			defer mu.Unlock()
			var out []daemon.DetachedConn
			for _, c := range cs {
				if served[c] {
					delete(served, c)
					out = append(out, daemon.DetachedConn{Conn: c, State: indexState(index[c])})
				}
			}
			return out, nil
		},
	}

	type adopted struct {
		c     net.Conn
		state []byte
	}
	child := &Generation{log: slog.New(slog.DiscardHandler)}
	var got []adopted
	child.AcceptConns(func(c net.Conn, state []byte) error {
		got = append(got, adopted{c, state})
		return nil
	}, func() int { return room })
	staged := make(chan []net.Conn, 1)
	childRes := make(chan HandOverResult, 1)
	go func() {
		l := &parentLink{version: protoVersion, ch: childEnd}
		pending, st, err := l.receiveConns(func() int { return room })
		if err != nil || len(pending) > 0 {
			t.Errorf("child: %d adopted before the commit, %v", len(pending), err)
		}
		staged <- st
		child.rollIn(l, st, func(r HandOverResult) { childRes <- r })
	}()

	msgs, stop := startReader(parentEnd)
	sent, err := g.stageConns(m, parentEnd, msgs, make(chan error))
	stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != room {
		t.Fatalf("the child took %d copies, want its room, %d", len(sent), room)
	}
	if st := <-staged; len(st) != room {
		t.Fatalf("the child holds %d copies, want %d", len(st), room)
	}
	mu.Lock()
	if len(served) != n {
		t.Fatalf("%d connections served by the parent after the staging, want all %d", len(served), n)
	}
	// The parent's handler closes one after its copy went.
	delete(served, conns[closedOne].Conn)
	conns[closedOne].Conn.Close()
	mu.Unlock()

	res, moved := g.rollOut(m, parentEnd, sent)
	if res.Err != nil || res.Moved != room-1 || res.Kept != 0 || res.Lost != 0 || len(moved) != room-1 {
		t.Fatalf("parent: %+v, %d moved; want %d moved and nothing else", res, len(moved), room-1)
	}
	closeConns(moved)
	var cr HandOverResult
	select {
	case cr = <-childRes:
	case <-time.After(10 * time.Second):
		t.Fatal("the child's side did not end")
	}
	if cr.Err != nil || cr.Moved != room-1 || cr.Kept != 1 {
		t.Fatalf("child: %+v, want %d moved, 1 not resumed", cr, room-1)
	}
	if len(kept) != 0 {
		t.Fatalf("parent served %d again, want none", len(kept))
	}
	if len(served) != n-room {
		t.Fatalf("%d connections left in the parent, want the %d beyond the room", len(served), n-room)
	}
	// Each moved connection is the very socket named by its state.
	for _, a := range got {
		i := int(a.state[0]) | int(a.state[1])<<8
		if i >= room || i == closedOne {
			t.Fatalf("connection %d moved", i)
		}
		if _, err := peers[i].Write([]byte{'x', byte(i)}); err != nil {
			t.Fatal(err)
		}
		_ = a.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(a.c, b); err != nil || b[0] != 'x' || b[1] != byte(i) {
			t.Fatalf("moved connection %d read %q, %v", i, b, err)
		}
		a.c.Close()
	}
	// Closed in the parent, and its copy in the child: the peer sees it.
	_ = peers[closedOne].SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peers[closedOne].Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer of the connection closed in the parent read %d bytes, %v; want EOF", n, err)
	}
	for c := range served {
		c.Close()
	}
}
