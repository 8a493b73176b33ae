// Command echod is an echo daemon that reloads and upgrades in place
// without refusing, resetting or corrupting a connection.
//
//	echod [flags]                 serve (see echod -h)
//	echod reload [-control PATH]  ask the running daemon to reload; returns
//	                              when the new generation serves, non-zero
//	                              with the reason when the reload failed
//	echod status [-control PATH]  print the running generation's status
//	echod version                 print the version
//
// SIGHUP reloads (the binary at the same path is exec'd afresh with the same
// listening sockets), SIGTERM and SIGINT stop after draining.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/echod/echod/handoff"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, version)
			return 0
		case "reload", "status":
			return runClient(args[0], args[1:], stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		handoff.ReportFailure(err)
		fmt.Fprintf(stderr, "echod: %v\n", err)
		return 2
	}
	if err := serve(cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "echod: %v\n", err)
		return 1
	}
	return 0
}

func runClient(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echod "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", defaultConfig().Control, "control socket of the running echod")
	timeout := fs.Duration("timeout", 80*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *control == "" {
		fmt.Fprintf(stderr, "echod %s: no control socket: give -control PATH (under systemd, RuntimeDirectory= sets it)\n", cmd)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ans, err := controlRequest(ctx, *control, cmd)
	if err != nil {
		fmt.Fprintf(stderr, "echod %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintln(stdout, ans)
	return 0
}
