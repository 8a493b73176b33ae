package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/echod/echod/daemon"
)

// ExampleServer_Detach moves a live connection from one server to another,
// as a new generation of a daemon takes over its predecessor's clients:
// the client goes on talking on the same connection and notices nothing.
// Between processes the detached connections' descriptors travel over a
// Unix socket (SCM_RIGHTS, see package handoff), and the process that
// receives one makes a net.Conn of it with net.FileConn; here both servers
// are in one process and adopt the very same net.Conn.
func ExampleServer_Detach() {
	old := daemon.New(daemon.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- old.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	say := func(msg string) {
		if _, err := io.WriteString(c, msg); err != nil {
			fmt.Println(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			fmt.Println(err)
		}
		fmt.Printf("echoed: %s\n", buf)
	}
	say("before the move")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conns, err := old.Detach(ctx) // stops accepting, takes every connection out
	fmt.Println("detached:", len(conns), err)
	fmt.Println("old serve:", <-served)

	next := daemon.New(daemon.Config{})
	defer next.Close()
	for _, d := range conns {
		if err := next.Adopt(d.Conn, d.State); err != nil {
			fmt.Println(err)
			d.Conn.Close()
		}
	}
	say("after the move")

	o, n := old.Stats(), next.Stats()
	fmt.Printf("old: %d detached, %d active; new: %d adopted, %d active\n", o.Detached, o.Active, n.Adopted, n.Active)
	// Output:
	// echoed: before the move
	// detached: 1 <nil>
	// old serve: daemon: server closed
	// echoed: after the move
	// old: 1 detached, 0 active; new: 1 adopted, 1 active
}

// DetachConns moves named connections, so that a caller that copied
// their descriptors elsewhere beforehand (as handoff's staged hand-over
// does) moves them a batch at a time, the others served on meanwhile.
func ExampleServer_DetachConns() {
	old := daemon.New(daemon.Config{})
	defer old.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = old.Serve(ln) }()

	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			panic(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	say := func(c net.Conn, msg string) {
		buf := make([]byte, len(msg))
		if _, err := io.WriteString(c, msg); err != nil {
			fmt.Println(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			fmt.Println(err)
		}
		fmt.Printf("echoed: %s\n", buf)
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	say(a, "a, before")
	say(b, "b, before")

	// The server's side of a.
	var pick []net.Conn
	for _, sc := range old.Conns(0) {
		if sc.RemoteAddr().String() == a.LocalAddr().String() {
			pick = append(pick, sc)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conns, err := old.DetachConns(ctx, pick)
	fmt.Println("detached:", len(conns), err)

	next := daemon.New(daemon.Config{})
	defer next.Close()
	for _, d := range conns {
		if err := next.Adopt(d.Conn, d.State); err != nil {
			fmt.Println(err)
			d.Conn.Close()
		}
	}
	say(a, "a, moved")
	say(b, "b, stayed")

	o, n := old.Stats(), next.Stats()
	fmt.Printf("old: %d detached, %d active; new: %d adopted, %d active\n", o.Detached, o.Active, n.Adopted, n.Active)
	// Output:
	// echoed: a, before
	// echoed: b, before
	// detached: 1 <nil>
	// echoed: a, moved
	// echoed: b, stayed
	// old: 1 detached, 1 active; new: 1 adopted, 1 active
}
