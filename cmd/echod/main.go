// Command echod is an echo daemon that reloads and upgrades in place
// without refusing, resetting or corrupting a connection.
//
//	echod [flags]                 serve (see echod -h)
//	echod reload [-control PATH]  ask the running daemon to reload; returns
//	                              when the new generation serves, non-zero
//	                              with the reason when the reload failed
//	echod status [-control PATH]  print the running generation's status
//	echod stop [-control PATH]    stop after draining; returns when the
//	                              daemon has exited (for ExecStop=)
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
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

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
		case "reload", "status", "stop":
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
	if err == nil && cmd == "stop" {
		err = waitStopped(ctx, ans)
	}
	if err != nil {
		fmt.Fprintf(stderr, "echod %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintln(stdout, ans)
	return 0
}

// waitStopped waits until the process named by a "stop" answer
// ("pid=N") has exited: it drains first, then waits for any previous
// generation.
func waitStopped(ctx context.Context, ans string) error {
	pid, err := strconv.Atoi(strings.TrimPrefix(ans, "pid="))
	if err != nil || pid <= 0 {
		return fmt.Errorf("unexpected answer %q", ans)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	for {
		ms := -1
		if dl, ok := ctx.Deadline(); ok {
			ms = int(time.Until(dl).Milliseconds())
			if ms <= 0 {
				return fmt.Errorf("pid %d still running: %w", pid, context.DeadlineExceeded)
			}
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
