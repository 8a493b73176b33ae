package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net"
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
