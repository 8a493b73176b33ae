package systemd

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// checkEnvErr asserts that err is a bad-environment error naming variable.
func checkEnvErr(t *testing.T, err error, variable string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one naming %s", variable)
	}
	if !errors.Is(err, ErrBadEnvironment) {
		t.Errorf("error %q does not wrap ErrBadEnvironment", err)
	}
	if !strings.Contains(err.Error(), variable) {
		t.Errorf("error %q does not name %s", err, variable)
	}
}

func TestParseListenEnv(t *testing.T) {
	const pid = 4242
	self := strconv.Itoa(pid)
	tests := []struct {
		name                 string
		listenPID, fds, fdns string
		want                 ListenEnv
		wantErrVar           string // "" means no error
	}{
		{name: "unset", want: ListenEnv{}},
		{name: "names unset alone", fdns: "a:b", want: ListenEnv{}},
		{name: "zero fds", listenPID: self, fds: "0", want: ListenEnv{N: 0, Names: []string{}}},
		{name: "zero fds ignores names", listenPID: self, fds: "0", fdns: "a", want: ListenEnv{N: 0, Names: []string{}}},
		{name: "good without names", listenPID: self, fds: "2", want: ListenEnv{N: 2, Names: []string{"", ""}}},
		{name: "good with names", listenPID: self, fds: "3", fdns: "http:admin:unix", want: ListenEnv{N: 3, Names: []string{"http", "admin", "unix"}}},
		{name: "empty names allowed", listenPID: self, fds: "3", fdns: "a::c", want: ListenEnv{N: 3, Names: []string{"a", "", "c"}}},
		{name: "max fds", listenPID: self, fds: strconv.Itoa(maxListenFDs), want: ListenEnv{N: maxListenFDs, Names: make([]string, maxListenFDs)}},

		{name: "pid unset, fds set", fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "pid garbage", listenPID: "abc", fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "pid with space", listenPID: " " + self, fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "pid zero", listenPID: "0", fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "pid negative", listenPID: "-4242", fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "pid overflow", listenPID: "99999999999999999999999", fds: "1", wantErrVar: "LISTEN_PID"},
		{name: "other pid", listenPID: "4243", fds: "1", wantErrVar: "LISTEN_PID"},

		{name: "fds unset", listenPID: self, wantErrVar: "LISTEN_FDS"},
		{name: "fds garbage", listenPID: self, fds: "two", wantErrVar: "LISTEN_FDS"},
		{name: "fds trailing garbage", listenPID: self, fds: "2x", wantErrVar: "LISTEN_FDS"},
		{name: "fds negative", listenPID: self, fds: "-1", wantErrVar: "LISTEN_FDS"},
		{name: "fds huge", listenPID: self, fds: strconv.Itoa(maxListenFDs + 1), wantErrVar: "LISTEN_FDS"},
		{name: "fds overflow", listenPID: self, fds: "99999999999999999999999", wantErrVar: "LISTEN_FDS"},

		{name: "too few names", listenPID: self, fds: "3", fdns: "a:b", wantErrVar: "LISTEN_FDNAMES"},
		{name: "too many names", listenPID: self, fds: "1", fdns: "a:b", wantErrVar: "LISTEN_FDNAMES"},
		{name: "name with newline", listenPID: self, fds: "2", fdns: "a:b\nc", wantErrVar: "LISTEN_FDNAMES"},
		{name: "name with tab", listenPID: self, fds: "1", fdns: "a\tb", wantErrVar: "LISTEN_FDNAMES"},
		{name: "name with DEL", listenPID: self, fds: "1", fdns: "a\x7f", wantErrVar: "LISTEN_FDNAMES"},
		{name: "name non-ASCII", listenPID: self, fds: "1", fdns: "café", wantErrVar: "LISTEN_FDNAMES"},
		{name: "name too long", listenPID: self, fds: "1", fdns: strings.Repeat("n", 256), wantErrVar: "LISTEN_FDNAMES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseListenEnv(pid, tt.listenPID, tt.fds, tt.fdns)
			if tt.wantErrVar != "" {
				checkEnvErr(t, err, tt.wantErrVar)
				if !reflect.DeepEqual(got, ListenEnv{}) {
					t.Errorf("on error got %+v, want the zero ListenEnv", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseListenEnv(%d, %q, %q, %q): %v", pid, tt.listenPID, tt.fds, tt.fdns, err)
			}
			if got.N != tt.want.N || len(got.Names) != len(tt.want.Names) {
				t.Fatalf("got N=%d len(Names)=%d, want N=%d len(Names)=%d", got.N, len(got.Names), tt.want.N, len(tt.want.Names))
			}
			if len(tt.want.Names) > 0 && !reflect.DeepEqual(got.Names, tt.want.Names) {
				t.Errorf("got names %q, want %q", got.Names, tt.want.Names)
			}
		})
	}
}

func TestCheckFDName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "http", true},
		{"punctuation", "echod.socket", true},
		{"space and tilde", "a b~", true},
		{"255 bytes", strings.Repeat("x", 255), true},
		{"256 bytes", strings.Repeat("x", 256), false},
		{"empty", "", false},
		{"colon", "a:b", false},
		{"only colon", ":", false},
		{"newline", "a\nb", false},
		{"NUL", "a\x00", false},
		{"tab", "\t", false},
		{"escape", "\x1b[0m", false},
		{"DEL", "\x7f", false},
		{"non-ASCII", "é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckFDName(tt.in)
			if tt.ok && err != nil {
				t.Errorf("CheckFDName(%q) = %v, want nil", tt.in, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("CheckFDName(%q) = nil, want an error", tt.in)
			}
		})
	}
}

func TestParseWatchdog(t *testing.T) {
	const pid = 4242
	self := strconv.Itoa(pid)
	tests := []struct {
		name       string
		usec, wpid string
		inherited  bool
		want       time.Duration
		wantErrVar string
	}{
		{name: "off", want: 0},
		{name: "off with pid", wpid: self, want: 0},
		{name: "off with garbage pid", wpid: "x", want: 0},
		{name: "on without pid", usec: "3000000", want: 3 * time.Second},
		{name: "on for us", usec: "1500", wpid: self, want: 1500 * time.Microsecond},
		{name: "other pid", usec: "3000000", wpid: "4243", want: 0},
		{name: "other pid inherited", usec: "3000000", wpid: "4243", inherited: true, want: 3 * time.Second},
		{name: "garbage pid inherited", usec: "3000000", wpid: "x", inherited: true, want: 3 * time.Second},
		{name: "huge is clamped", usec: strconv.FormatUint(1<<62, 10), want: time.Duration(uint64(1<<62) / 1000 * 1000)},

		{name: "usec garbage", usec: "3s", wantErrVar: "WATCHDOG_USEC"},
		{name: "usec zero", usec: "0", wantErrVar: "WATCHDOG_USEC"},
		{name: "usec negative", usec: "-1", wantErrVar: "WATCHDOG_USEC"},
		{name: "usec overflow", usec: "18446744073709551616", wantErrVar: "WATCHDOG_USEC"},
		{name: "usec garbage inherited", usec: "x", inherited: true, wantErrVar: "WATCHDOG_USEC"},
		{name: "pid garbage", usec: "3000000", wpid: "me", wantErrVar: "WATCHDOG_PID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWatchdog(pid, tt.usec, tt.wpid, tt.inherited)
			if tt.wantErrVar != "" {
				checkEnvErr(t, err, tt.wantErrVar)
				if got != 0 {
					t.Errorf("on error got %v, want 0", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWatchdog(%d, %q, %q, %v): %v", pid, tt.usec, tt.wpid, tt.inherited, err)
			}
			if got != tt.want {
				t.Errorf("ParseWatchdog(%d, %q, %q, %v) = %v, want %v", pid, tt.usec, tt.wpid, tt.inherited, got, tt.want)
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(1<<30)) // not us
	if d, err := WatchdogInterval(false); err != nil || d != 0 {
		t.Errorf("WatchdogInterval(false) for another pid = %v, %v; want 0, nil", d, err)
	}
	if d, err := WatchdogInterval(true); err != nil || d != 2*time.Second {
		t.Errorf("WatchdogInterval(true) = %v, %v; want 2s, nil", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "bad")
	if _, err := WatchdogInterval(true); !errors.Is(err, ErrBadEnvironment) {
		t.Errorf("WatchdogInterval with WATCHDOG_USEC=bad: %v, want ErrBadEnvironment", err)
	}
}

func TestStatus(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "STATUS="},
		{"serving 3 connections", "STATUS=serving 3 connections"},
		{"a\nREADY=1", "STATUS=a READY=1"},
		{"a\r\n\tb\x00c\x7fd", "STATUS=a   b c d"},
		{"héllo ✓", "STATUS=héllo ✓"},
		{strings.Repeat("x", 2000), "STATUS=" + strings.Repeat("x", 1024)},
	}
	for _, tt := range tests {
		if got := Status(tt.in); got != tt.want {
			t.Errorf("Status(%.40q) = %.60q, want %.60q", tt.in, got, tt.want)
		}
		if err := CheckState(Status(tt.in)); err != nil {
			t.Errorf("CheckState(Status(%.40q)): %v", tt.in, err)
		}
	}
	// A multi-byte rune straddling the cut is kept whole, never split.
	s := Status(strings.Repeat("x", 1023) + "日本")
	if !utf8.ValidString(s) || !strings.HasSuffix(s, "x日") {
		t.Errorf("Status cut a rune badly: ...%q", s[len(s)-8:])
	}
}

func TestMainPID(t *testing.T) {
	if got := MainPID(1234); got != "MAINPID=1234" {
		t.Errorf("MainPID(1234) = %q", got)
	}
	if err := CheckState(MainPID(1234)); err != nil {
		t.Error(err)
	}
}

func TestCheckState(t *testing.T) {
	good := []string{Ready, Reloading, Stopping, Watchdog, "STATUS=", "STATUS=a=b", "X_1=\t\r", "FDNAME=http", "MAINPID=1"}
	bad := []string{"", "=1", "NOKEY", "lowercase=1", "Ready=1", "A-B=1", " READY=1", "READY =1", "STATUS=a\nREADY=1", "STATUS=a\x00", "É=1"}
	for _, l := range good {
		if err := CheckState(l); err != nil {
			t.Errorf("CheckState(%q) = %v, want nil", l, err)
		}
	}
	for _, l := range bad {
		if err := CheckState(l); !errors.Is(err, ErrInvalidState) {
			t.Errorf("CheckState(%q) = %v, want ErrInvalidState", l, err)
		}
	}
}
