package load

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config describes one run.
type Config struct {
	Addr           string        // as given: host:port, unix:/path or /path
	Duration       time.Duration // bound on the run (load) or the hold time (hold mode); 0 = until Count
	Count          int64         // total short connections; 0 = unlimited (bounded by Duration)
	Rate           float64       // short connections per second; 0 = as fast as possible
	Concurrency    int           // short-connection workers; 0 disables short connections
	Size           int           // message size in bytes, header included
	Streams        int           // long-lived streams
	StreamInterval time.Duration // pause between messages on a stream; 0 = back to back
	Timeout        time.Duration // bound on connect and on each read/write
	Hold           int           // hold mode: number of idle connections to hold
	Reload         ReloadConfig
}

// ReloadConfig describes the periodic reloads triggered during a run.
type ReloadConfig struct {
	Cmd     string        // shell command run with sh -c
	Signal  string        // signal name (HUP, SIGUSR2) or number, sent to the pid in PidFile
	PidFile string        // file holding the daemon's pid
	Every   time.Duration // interval between reload starts
	Window  time.Duration // an operation is "near" a reload if it overlaps [start, end+Window]
	// Timeout bounds each reload: the command, or the wait for the new
	// pid. 0 means DefaultReloadTimeout. It is separate from
	// Config.Timeout: a reload may legitimately be queued for as long as
	// the previous generation drains its connections.
	Timeout time.Duration
}

// DefaultReloadTimeout is the default bound on one reload. It exceeds
// echod's default drain timeout (30s), behind which a reload may be queued.
const DefaultReloadTimeout = 60 * time.Second

// Enabled reports whether reloads are configured.
func (r ReloadConfig) Enabled() bool { return r.Cmd != "" || r.PidFile != "" }

// Mode returns "cmd", "signal" or "" (no reloads).
func (r ReloadConfig) Mode() string {
	switch {
	case r.Cmd != "":
		return "cmd"
	case r.PidFile != "":
		return "signal"
	}
	return ""
}

// Target is a parsed -addr.
type Target struct {
	Network string // "tcp" or "unix"
	Address string
}

func (t Target) String() string {
	if t.Network == "unix" {
		return "unix:" + t.Address
	}
	return t.Address
}

// ParseTarget parses host:port, tcp:host:port, unix:/path, or an absolute
// path (a Unix socket).
func ParseTarget(s string) (Target, error) {
	switch {
	case s == "":
		return Target{}, errors.New("empty address")
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if p == "" {
			return Target{}, fmt.Errorf("address %q: empty socket path", s)
		}
		return Target{Network: "unix", Address: p}, nil
	case strings.HasPrefix(s, "/"):
		return Target{Network: "unix", Address: s}, nil
	}
	hp := strings.TrimPrefix(s, "tcp:")
	if _, _, err := net.SplitHostPort(hp); err != nil {
		return Target{}, fmt.Errorf("address %q: %w (want host:port, unix:/path or /path)", s, err)
	}
	return Target{Network: "tcp", Address: hp}, nil
}

// Validate checks the configuration for contradictions and fills defaults
// that depend on other fields.
func (c *Config) Validate() error {
	if _, err := ParseTarget(c.Addr); err != nil {
		return err
	}
	if c.Timeout <= 0 {
		return errors.New("-timeout must be positive")
	}
	if c.Duration < 0 || c.Count < 0 || c.Rate < 0 || c.Concurrency < 0 || c.Streams < 0 || c.StreamInterval < 0 || c.Hold < 0 {
		return errors.New("-duration, -count, -rate, -concurrency, -streams, -stream-interval and -hold must not be negative")
	}
	if c.Size < HeaderSize || c.Size > MaxMessageSize {
		return fmt.Errorf("-size %d out of range [%d, %d] (the %d-byte header is included)", c.Size, HeaderSize, MaxMessageSize, HeaderSize)
	}
	if c.Hold > 0 {
		if c.Duration <= 0 {
			return errors.New("-hold needs a positive -duration (how long to hold the connections)")
		}
		if c.Concurrency == 0 {
			c.Concurrency = 1
		}
	} else {
		if c.Concurrency == 0 && c.Streams == 0 {
			return errors.New("nothing to do: -concurrency 0 and -streams 0")
		}
		if c.Duration == 0 && (c.Count == 0 || c.Concurrency == 0) {
			return errors.New("unbounded run: give a positive -duration, or -count with -concurrency > 0")
		}
	}
	r := &c.Reload
	if r.Cmd != "" && (r.Signal != "" || r.PidFile != "") {
		return errors.New("-reload-cmd and -reload-signal/-reload-pid-file are mutually exclusive")
	}
	if r.Signal != "" && r.PidFile == "" {
		return errors.New("-reload-signal needs -reload-pid-file")
	}
	if r.PidFile != "" && r.Signal == "" {
		r.Signal = "HUP"
	}
	if r.Signal != "" {
		if _, err := ParseSignal(r.Signal); err != nil {
			return err
		}
	}
	if r.Enabled() && r.Every <= 0 {
		return errors.New("-reload-every must be positive")
	}
	if r.Window < 0 {
		return errors.New("-reload-window must not be negative")
	}
	if r.Timeout < 0 {
		return errors.New("-reload-timeout must be positive")
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultReloadTimeout
	}
	return nil
}
