package control_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/echod/echod/handoff/control"
)

// Example serves a control socket, asks for the status and stops.
func Example() {
	dir, err := os.MkdirTemp("", "control-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "control")

	ln, err := control.Listen(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := control.NewServer(control.HandlerFunc(func(ctx context.Context, cmd string) control.Reply {
		if cmd == "status" {
			return control.Reply{Kind: control.OK, Text: "generation 1: serving"}
		}
		return control.UnknownCommand(cmd, "status")
	}), nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ans, err := control.Request(ctx, path, "status")
	fmt.Printf("status: %s (%v)\n", ans, err)
	_, err = control.Request(ctx, path, "upgrade")
	fmt.Println("upgrade:", err)

	fmt.Println("shutdown:", srv.Shutdown(ctx))
	fmt.Println("serve:", <-served)
	// Output:
	// status: generation 1: serving (<nil>)
	// upgrade: unknown command "upgrade" (want status)
	// shutdown: <nil>
	// serve: control: server closed
}
