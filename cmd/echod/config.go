package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/echod/echod/handoff"
)

// defaultListen serves when nothing is configured and systemd passed no socket.
const defaultListen = "127.0.0.1:7007"

// config is echod's configuration. Every field is a flag and a key of the
// TOML file given with -config; a flag given on the command line wins.
type config struct {
	Listen         []string      `toml:"listen"`
	DrainTimeout   time.Duration `toml:"drain-timeout"`
	UpgradeTimeout time.Duration `toml:"upgrade-timeout"`
	IdleTimeout    time.Duration `toml:"idle-timeout"`
	MaxConns       int           `toml:"max-conns"`
	PIDFile        string        `toml:"pid-file"`
	Control        string        `toml:"control"`
	LogLevel       string        `toml:"log-level"`
	FDStore        bool          `toml:"fdstore"`
	Migrate        bool          `toml:"migrate"`
	Metrics        string        `toml:"metrics"`

	configFile             string
	specs                  []handoff.Spec
	checkOnly, showVersion bool // -check-config, -version
	metricsSpec            handoff.Spec
}

func defaultConfig() config {
	return config{DrainTimeout: 30 * time.Second, UpgradeTimeout: 10 * time.Second, LogLevel: "info", Migrate: true, Control: defaultControlPath()}
}

// defaultControlPath is the control socket echod makes, and its clients
// ask, when none is given: under systemd $RUNTIME_DIRECTORY/control.sock
// (RuntimeDirectory=, the first directory if several); else
// $XDG_RUNTIME_DIR/echod/control.sock; else /run/echod/control.sock for
// root and /tmp/echod-<uid>/control.sock for anyone else.
func defaultControlPath() string {
	if rd, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rd != "" {
		return filepath.Join(rd, "control.sock")
	}
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(xdg) {
		return filepath.Join(xdg, "echod", "control.sock")
	}
	if os.Geteuid() == 0 {
		return "/run/echod/control.sock"
	}
	return filepath.Join(os.TempDir(), "echod-"+strconv.Itoa(os.Geteuid()), "control.sock")
}

// flags binds every flag to c, with c's values as defaults.
func flags(c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("echod", flag.ContinueOnError)
	fs.SetOutput(out)
	fromFile := true // the first -listen replaces the file's list
	fs.Func("listen", "address to listen on: host:port, [ipv6]:port, /path or unix:/path; repeatable (default "+defaultListen+" when systemd passes no socket)", func(s string) error {
		if fromFile {
			c.Listen, fromFile = nil, false
		}
		c.Listen = append(c.Listen, s)
		return nil
	})
	fs.StringVar(&c.configFile, "config", c.configFile, "TOML file with the same settings; re-read on every reload")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long a stopping or replaced generation waits for its connections before closing them")
	fs.DurationVar(&c.UpgradeTimeout, "upgrade-timeout", c.UpgradeTimeout, "how long a new generation may take to become ready")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close connections idle this long (0: never)")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "most connections served at once; more wait in the kernel backlog (0: no limit)")
	fs.StringVar(&c.PIDFile, "pid-file", c.PIDFile, "file naming the serving generation's pid (written atomically once it is ready)")
	fs.StringVar(&c.Control, "control", c.Control, "control socket for 'echod reload|reload-status|status|stop' ($RUNTIME_DIRECTORY/control.sock under systemd, else $XDG_RUNTIME_DIR/echod/control.sock, else /run/echod/control.sock (root) or $TMPDIR/echod-UID/control.sock; empty: none)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.BoolVar(&c.FDStore, "fdstore", c.FDStore, "keep the listeners echod binds in systemd's fd store (FileDescriptorStoreMax=), so restarts and crashes refuse no connection; with -migrate, the live connections too (a copy against a crash, all of them at a stop), served by the next process")
	fs.BoolVar(&c.Migrate, "migrate", c.Migrate, "hand live connections to the new generation on reload (false: drain them in the old one)")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "serve Prometheus metrics over HTTP on this address (host:port, /path or unix:/path), a socket every generation inherits (empty: none)")
	fs.BoolVar(&c.checkOnly, "check-config", false, "validate the flags and the config file as a reload would, then exit (0 valid, 2 invalid)")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: echod [flags]\n       echod reload|reload-status|status|stop [-control PATH] [-timeout D]\n       echod version\n\nflags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// parseConfig reads the command line and the file it names, and validates
// the result. Errors name the flag, key or value at fault. The flags are
// parsed twice: once to find -config, then over the file's values.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	pre := defaultConfig()
	if err := flags(&pre, stderr).Parse(args); err != nil {
		return config{}, err
	}
	cfg := defaultConfig()
	if pre.configFile != "" {
		b, err := os.ReadFile(pre.configFile)
		if err != nil {
			return config{}, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(pre.configFile, b, &cfg); err != nil {
			return config{}, err
		}
	}
	fs := flags(&cfg, io.Discard)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

// decodeConfig decodes b over cfg. Unknown keys are an error, so a typo
// does not pass silently.
func decodeConfig(name string, b []byte, cfg *config) error {
	md, err := toml.Decode(string(b), cfg)
	if err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown key(s): %s", name, strings.Join(keys, ", "))
	}
	return nil
}

func (c *config) validate() error {
	var errs []error
	seen := map[handoff.Spec]bool{}
	c.specs = nil
	for _, l := range c.Listen {
		s, err := handoff.ParseSpec(l)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("listen: %w", err))
		case seen[s]:
			errs = append(errs, fmt.Errorf("listen: %s given twice", l))
		default:
			seen[s] = true
			c.specs = append(c.specs, s)
		}
	}
	if c.DrainTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain-timeout %v, idle-timeout %v: must be zero or more", c.DrainTimeout, c.IdleTimeout))
	}
	if c.UpgradeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("upgrade-timeout: %v must be positive", c.UpgradeTimeout))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max-conns: %d is negative", c.MaxConns))
	}
	if c.Control != "" {
		if s, err := handoff.ParseSpec("unix:" + c.Control); err != nil {
			errs = append(errs, fmt.Errorf("control: %w", err))
		} else if seen[s] {
			errs = append(errs, fmt.Errorf("control: %s is also a listen address", c.Control))
		}
	}
	if c.metricsSpec = (handoff.Spec{}); c.Metrics != "" {
		s, err := handoff.ParseSpec(c.Metrics)
		ctl, _ := handoff.ParseSpec("unix:" + c.Control)
		dflt, _ := handoff.ParseSpec(defaultListen)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("metrics: %w", err))
		case seen[s] || (len(c.Listen) == 0 && s == dflt) || (c.Control != "" && s == ctl):
			errs = append(errs, fmt.Errorf("metrics: %s is also a listen address or the control socket", c.Metrics))
		default:
			c.metricsSpec = s
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %q is not debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
