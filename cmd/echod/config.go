package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/echod/echod/handoff"
)

// defaultListen is where echod listens when nothing else is configured and
// systemd passed no socket.
const defaultListen = "127.0.0.1:7007"

// config is echod's configuration. Every field is a flag and a key of the
// TOML file given with -config; a flag given on the command line wins.
type config struct {
	Listen         []string `toml:"listen"`
	DrainTimeout   duration `toml:"drain-timeout"`
	UpgradeTimeout duration `toml:"upgrade-timeout"`
	IdleTimeout    duration `toml:"idle-timeout"`
	MaxConns       int      `toml:"max-conns"`
	PIDFile        string   `toml:"pid-file"`
	Control        string   `toml:"control"`
	LogLevel       string   `toml:"log-level"`
	FDStore        bool     `toml:"fdstore"`

	configFile string
	specs      []handoff.Spec
}

// duration is a time.Duration written as "30s" in TOML.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func defaultConfig() config {
	c := config{
		DrainTimeout:   duration{30 * time.Second},
		UpgradeTimeout: duration{10 * time.Second},
		LogLevel:       "info",
	}
	if rd := os.Getenv("RUNTIME_DIRECTORY"); rd != "" {
		// systemd's RuntimeDirectory=; the first one if several.
		c.Control = strings.SplitN(rd, ":", 2)[0] + "/control.sock"
	}
	return c
}

// listFlag collects a repeatable string flag.
type listFlag struct{ vals *[]string }

func (l listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}
func (l listFlag) Set(s string) error { *l.vals = append(*l.vals, s); return nil }

// parseConfig reads the command line and the file it names, and validates
// the result. Errors name the flag, key or value at fault.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("echod", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var fl config
	fs.Var(listFlag{&fl.Listen}, "listen", "address to listen on: host:port, [ipv6]:port, /path or unix:/path; repeatable (default "+defaultListen+" when systemd passes no socket)")
	fs.StringVar(&fl.configFile, "config", "", "TOML file with the same settings; re-read on every reload")
	fs.DurationVar(&fl.DrainTimeout.Duration, "drain-timeout", 30*time.Second, "how long a stopping or replaced generation waits for its connections before closing them")
	fs.DurationVar(&fl.UpgradeTimeout.Duration, "upgrade-timeout", 10*time.Second, "how long a new generation may take to become ready")
	fs.DurationVar(&fl.IdleTimeout.Duration, "idle-timeout", 0, "close connections idle this long (0: never)")
	fs.IntVar(&fl.MaxConns, "max-conns", 0, "most connections served at once; more wait in the kernel backlog (0: no limit)")
	fs.StringVar(&fl.PIDFile, "pid-file", "", "write the serving generation's pid here (atomically, when it is ready)")
	fs.StringVar(&fl.Control, "control", defaultConfig().Control, "control socket for 'echod reload' and 'echod status' (default $RUNTIME_DIRECTORY/control.sock under systemd; empty: none)")
	fs.StringVar(&fl.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&fl.FDStore, "fdstore", false, "keep the listeners echod binds in systemd's fd store (FileDescriptorStoreMax=), so restarts and crashes refuse no connection")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: echod [flags]\n       echod reload|status|stop [-control PATH] [-timeout D]\n       echod version\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	cfg := defaultConfig()
	cfg.configFile = fl.configFile
	if cfg.configFile != "" {
		if err := readConfigFile(cfg.configFile, &cfg); err != nil {
			return config{}, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = fl.Listen
		case "drain-timeout":
			cfg.DrainTimeout = fl.DrainTimeout
		case "upgrade-timeout":
			cfg.UpgradeTimeout = fl.UpgradeTimeout
		case "idle-timeout":
			cfg.IdleTimeout = fl.IdleTimeout
		case "max-conns":
			cfg.MaxConns = fl.MaxConns
		case "pid-file":
			cfg.PIDFile = fl.PIDFile
		case "control":
			cfg.Control = fl.Control
		case "log-level":
			cfg.LogLevel = fl.LogLevel
		case "fdstore":
			cfg.FDStore = fl.FDStore
		}
	})
	if err := cfg.validate(); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// readConfigFile decodes the TOML file at path over cfg. Unknown keys are
// an error, so a typo does not pass silently.
func readConfigFile(path string, cfg *config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return decodeConfig(path, b, cfg)
}

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
		if err != nil {
			errs = append(errs, fmt.Errorf("listen: %w", err))
			continue
		}
		if seen[s] {
			errs = append(errs, fmt.Errorf("listen: %s given twice", l))
			continue
		}
		seen[s] = true
		c.specs = append(c.specs, s)
	}
	if c.DrainTimeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("drain-timeout: %v is negative", c.DrainTimeout.Duration))
	}
	if c.UpgradeTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("upgrade-timeout: %v must be positive", c.UpgradeTimeout.Duration))
	}
	if c.IdleTimeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("idle-timeout: %v is negative", c.IdleTimeout.Duration))
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
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
