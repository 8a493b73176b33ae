package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/echod/echod/cmd/echoload/load"
)

const (
	defaultDuration     = 10 * time.Second
	defaultTimeout      = 5 * time.Second
	defaultReloadEvery  = time.Second
	defaultReloadWindow = 100 * time.Millisecond
)

// Exit statuses.
const (
	exitOK      = 0 // every operation succeeded, no reload failed (pending ones do not count)
	exitFailure = 1 // at least one failure (or failed reload)
	exitUsage   = 2 // bad flags or the run could not be set up
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "echoload: %v\n", err)
		return exitUsage
	}
	nofile, err := load.RaiseNoFileLimit()
	if err != nil {
		fmt.Fprintf(stderr, "echoload: warning: %v\n", err)
	}
	opts := load.Options{NoFileLimit: nofile}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		opts.Progress = stderr
	}
	rep, err := load.Run(ctx, o.cfg, opts)
	if err != nil {
		fmt.Fprintf(stderr, "echoload: %v\n", err)
		return exitUsage
	}
	code := exitOK
	if !rep.Pass {
		code = exitFailure
	}
	if err := rep.WriteTable(stdout); err != nil {
		fmt.Fprintf(stderr, "echoload: %v\n", err)
		code = exitFailure
	}
	if o.jsonPath != "" {
		if err := rep.WriteJSON(o.jsonPath); err != nil {
			fmt.Fprintf(stderr, "echoload: %v\n", err)
			code = exitFailure
		}
	}
	if o.plotPath != "" {
		if err := rep.WritePlot(o.plotPath); err != nil {
			fmt.Fprintf(stderr, "echoload: %v\n", err)
			code = exitFailure
		}
	}
	return code
}
