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
