package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/echod/echod/daemon"
)

// Example serves on a loopback port, echoes one message and drains.
func Example() {
	srv := daemon.New(daemon.Config{IdleTimeout: time.Minute, MaxConns: 100})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	const msg = "hello, echo"
	if _, err := io.WriteString(c, msg); err != nil {
		fmt.Println(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		fmt.Println(err)
	}
	fmt.Printf("echoed: %s\n", buf)
	c.Close() // Shutdown waits for the client to hang up

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	fmt.Println("serve:", <-served)
	// Output:
	// echoed: hello, echo
	// shutdown: <nil>
	// serve: daemon: server closed
}

// ExampleHandlerFunc serves another protocol: each line a client sends
// comes back upper-cased. The server closes the connection when the
// handler returns, here at the client's half-close.
func ExampleHandlerFunc() {
	upper := daemon.HandlerFunc(func(_ context.Context, c net.Conn) error {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintln(c, strings.ToUpper(sc.Text())); err != nil {
				return err
			}
		}
		return sc.Err()
	})
	srv := daemon.New(daemon.Config{Handler: upper, MaxConns: 100})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hello\nhandler\n"); err != nil {
		fmt.Println(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		fmt.Println(err)
	}
	reply, err := io.ReadAll(c) // to the EOF of the server's close
	if err != nil {
		fmt.Println(err)
	}
	fmt.Print(string(reply))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	fmt.Println("serve:", <-served)
	// Output:
	// HELLO
	// HANDLER
	// shutdown: <nil>
	// serve: daemon: server closed
}

// ExampleServer_Detach moves a live connection from one server to another,
// as a new generation of a daemon takes over its predecessor's clients:
// the client goes on talking on the same connection and notices nothing.
// Between processes the detached files travel over a Unix socket
// (SCM_RIGHTS); here both servers are in one process.
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
		nc, err := net.FileConn(d.File) // a duplicate: d.File is still ours
		d.File.Close()
		if err == nil {
			err = next.Adopt(nc, d.State)
		}
		if err != nil {
			fmt.Println(err)
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
