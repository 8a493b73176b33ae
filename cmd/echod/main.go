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
//	echod version                 print the version (also: echod -version)
//
// SIGHUP reloads (the binary at the same path is exec'd afresh with the same
// listening sockets), SIGTERM and SIGINT stop after draining; a second one
// during the drain forces the stop. The lifecycle is package handoff's
// (handoff.Run); this command only wires flags, configuration and exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
	"github.com/echod/echod/handoff/control"
	"github.com/echod/echod/systemd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit status: 0, 1 (failed at run time or forced
// stop) or 2 (bad command line or configuration).
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
	switch {
	case cfg.showVersion:
		fmt.Fprintln(stdout, version)
		return 0
	case cfg.checkOnly:
		fmt.Fprintln(stdout, "echod: configuration ok")
		return 0
	}
	if err := serve(cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "echod: %v\n", err)
		return 1
	}
	return 0
}

// serve runs this process's generation until it is replaced or stopped.
func serve(cfg config, stderr io.Writer) error {
	// Signals first: a SIGHUP that arrives while this generation starts is
	// kept and served once it is ready.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	log := newLogger(stderr, cfg.LogLevel)
	notifier := systemd.NewNotifier()
	var store *systemd.Notifier
	if cfg.FDStore {
		store = notifier
		if !notifier.Enabled() {
			log.Warn("fdstore: not running under systemd (NOTIFY_SOCKET unset): listeners are not stored")
		}
	}
	fallback, _ := handoff.ParseSpec(defaultListen)
	var srv *daemon.Server
	return handoff.Run(context.Background(), handoff.Config{
		Options: handoff.Options{
			UpgradeTimeout: cfg.UpgradeTimeout,
			PIDFile:        cfg.PIDFile,
			Logger:         log,
			FDStore:        store,
			Notifier:       notifier,
		},
		Listen:       cfg.specs,
		Fallback:     []handoff.Spec{fallback},
		Control:      cfg.Control,
		DrainTimeout: cfg.DrainTimeout,
		Signals:      sigs,
		Systemd:      notifier,
		Version:      version,
		NewServer: func(g *handoff.Generation, _ []*handoff.Listener) (handoff.Server, error) {
			srv = daemon.New(daemon.Config{IdleTimeout: cfg.IdleTimeout, MaxConns: cfg.MaxConns, Logger: log.With("gen", g.Number())})
			return srv, nil
		},
		Status: func() string { return strconv.Itoa(srv.Stats().Active) + " connections" },
	})
}

func runClient(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echod "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("control", defaultConfig().Control, "control socket of the running echod")
	timeout := fs.Duration("timeout", 80*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "echod %s: no control socket: give -control PATH (under systemd, RuntimeDirectory= sets it)\n", cmd)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ans, err := control.Request(ctx, *path, cmd)
	if err == nil && cmd == "stop" {
		// "pid=N": the process that drains last; wait until it is gone.
		pid, perr := strconv.Atoi(strings.TrimPrefix(ans, "pid="))
		if err = perr; err == nil {
			err = control.WaitExit(ctx, pid)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "echod %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintln(stdout, ans)
	return 0
}

// newLogger logs text lines to w; without timestamps when stderr goes to
// the journal, which adds its own.
func newLogger(w io.Writer, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // validated by parseConfig
	opts := &slog.HandlerOptions{Level: lvl}
	if ok, _ := journal.StderrIsJournalStream(); ok {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
