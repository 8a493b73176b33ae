package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/echod/echod/cmd/echoload/load"
)

// options is the parsed command line.
type options struct {
	cfg      load.Config
	jsonPath string
	plotPath string
}

// parseFlags parses args (without the program name). Usage and flag errors
// are written to stderr.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("echoload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: echoload [flags]\n\nLoad generator and verifier for echo servers; see 'go doc github.com/echod/echod/cmd/echoload'.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:7007", "server address: `host:port`, unix:/path or /path")
	fs.DurationVar(&c.Duration, "duration", defaultDuration, "run length (hold mode: how long to hold); 0 = until -count")
	fs.Int64Var(&c.Count, "count", 0, "total short connections, 0 = unlimited (the run ends at whichever of -duration/-count comes first)")
	fs.Float64Var(&c.Rate, "rate", 0, "target short connections per second, 0 = as fast as possible")
	fs.IntVar(&c.Concurrency, "concurrency", 4, "short-connection workers (hold mode: parallel opens); 0 disables short connections")
	fs.IntVar(&c.Size, "size", 64, fmt.Sprintf("message size in bytes, including the %d-byte header", load.HeaderSize))
	fs.IntVar(&c.Streams, "streams", 0, "long-lived streams, each one connection exchanging messages for the whole run")
	fs.DurationVar(&c.StreamInterval, "stream-interval", 0, "pause between messages on a stream, 0 = back to back")
	fs.DurationVar(&c.Timeout, "timeout", defaultTimeout, "bound on connect and on each read and write (not on reloads: see -reload-timeout)")
	fs.IntVar(&c.Hold, "hold", 0, "hold mode: open `N` idle connections, verify each, hold them for -duration, verify again, close")
	fs.StringVar(&c.Reload.Cmd, "reload-cmd", "", "reload by running this shell `command` (sh -c) every -reload-every")
	fs.StringVar(&c.Reload.Signal, "reload-signal", "", "reload by sending this `signal` (HUP, USR2, ...) to the pid in -reload-pid-file")
	fs.StringVar(&c.Reload.PidFile, "reload-pid-file", "", "pid `file` of the daemon; a reload ends when it names a new pid (signal defaults to HUP)")
	fs.DurationVar(&c.Reload.Every, "reload-every", defaultReloadEvery, "interval between reload starts")
	fs.DurationVar(&c.Reload.Timeout, "reload-timeout", load.DefaultReloadTimeout, "bound on each reload (the command, or the wait for a new pid); a signal reload still waiting when the run ends is pending, not failed")
	fs.DurationVar(&c.Reload.Window, "reload-window", defaultReloadWindow, "operations overlapping [reload start, reload end + window] count as near a reload")
	fs.StringVar(&o.jsonPath, "json", "", "write the full report as JSON to `file`")
	fs.StringVar(&o.plotPath, "plot", "", "draw RTT over time with reloads marked to `file` (.png, .svg or .pdf)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.Reload.Timeout <= 0 {
		return nil, errors.New("-reload-timeout must be positive")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.plotPath != "" {
		if c.Hold > 0 {
			return nil, errors.New("-plot is not available with -hold (there is no latency timeline)")
		}
		if err := load.CheckPlotPath(o.plotPath); err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}
