// Command echod is an echo daemon that reloads and upgrades in place
// without refusing, resetting or corrupting a connection: SIGHUP or
// "echod reload" execs the binary at the same path afresh with the same
// sockets; SIGTERM, SIGINT or "echod stop" drain and exit (a second one
// forces). The lifecycle is handoff.Run's; this command wires flags,
// configuration and exit codes. Usage: echod -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
	"github.com/echod/echod/handoff/control"
	"github.com/echod/echod/handoff/metrics"
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
	if len(args) > 0 && (args[0] == "reload" || args[0] == "reload-status" || args[0] == "status" || args[0] == "stop") {
		if args[0] == "status" {
			return runStatus(args[1:], stdout, stderr)
		}
		return runClient(args[0], args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "version" {
		args = []string{"-version"}
	}
	cfg, err := parseConfig(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		handoff.ReportFailure(err)
		fmt.Fprintf(stderr, "echod: %v\n", err)
		return 2
	case cfg.showVersion || cfg.checkOnly:
		fmt.Fprintln(stdout, map[bool]string{true: version, false: "echod: configuration ok"}[cfg.showVersion])
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
	// Signals first: a SIGHUP during start-up is served once ready.
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
	// Counted (and carried to the next generation) even when not served.
	m := metrics.New(metrics.Options{Version: version})
	var web []handoff.HTTPEndpoint
	if cfg.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		web = append(web, handoff.HTTPEndpoint{Name: "metrics", Spec: cfg.metricsSpec, Handler: mux})
	}
	return handoff.Run(context.Background(), handoff.Config{
		Options:  handoff.Options{UpgradeTimeout: cfg.UpgradeTimeout, PIDFile: cfg.PIDFile, Logger: log, FDStore: store, Notifier: notifier, Hooks: m.Hooks(), Carry: m.Carry},
		HTTP:     web,
		Listen:   cfg.specs,
		Fallback: []handoff.Spec{fallback},
		Control:  cfg.Control,
		// The default path, not one asked for: another echod may serve it.
		ControlIfFree: cfg.Control == defaultControlPath(),
		DrainTimeout:  cfg.DrainTimeout,
		Signals:       sigs,
		Systemd:       notifier,
		Version:       version,
		Migrate:       cfg.Migrate,
		NewServer: func(g *handoff.Generation, _ []*handoff.Listener) (handoff.Server, error) {
			srv = daemon.New(daemon.Config{IdleTimeout: cfg.IdleTimeout, MaxConns: cfg.MaxConns, Logger: log.With("gen", g.Number())})
			if err := m.Attach(g, srv.Stats); err != nil {
				log.Warn("metrics: the reload series start at zero", "err", err)
			}
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
		return map[bool]int{true: 0, false: 2}[errors.Is(err, flag.ErrHelp)]
	}
	if *path == "" {
		fmt.Fprintf(stderr, "echod %s: no control socket: give -control PATH (under systemd, RuntimeDirectory= sets it)\n", cmd)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ans, err := control.Command(ctx, *path, cmd)
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
