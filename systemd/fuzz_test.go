package systemd

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The fuzz targets below run only their seed corpus in a normal go test;
// run them with e.g. go test -run='^$' -fuzz='^FuzzStatus$' -fuzztime=20s ./systemd/

const fuzzPID = 4242

func FuzzParseListenEnv(f *testing.F) {
	self := strconv.Itoa(fuzzPID)
	for _, seed := range [][3]string{
		{"", "", ""},
		{self, "0", ""},
		{self, "1", ""},
		{self, "3", "a:b:c"},
		{self, "3", "a::c"},
		{self, "2", "a:b:c"},
		{self, "1", "a\nb"},
		{self, "65536", ""},
		{self, "65537", ""},
		{self, "-1", ""},
		{"1", "1", "x"},
		{"-4242", "1", ""},
		{"+4242", "+1", "x"},
		{self, "1", strings.Repeat("n", 256)},
		{"garbage", "garbage", "garbage"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, listenPID, listenFDs, fdNames string) {
		env, err := ParseListenEnv(fuzzPID, listenPID, listenFDs, fdNames)
		if err != nil {
			if !errors.Is(err, ErrBadEnvironment) {
				t.Fatalf("error %q does not wrap ErrBadEnvironment", err)
			}
			if env.N != 0 || env.Names != nil {
				t.Fatalf("error %q with non-zero result %+v", err, env)
			}
			return
		}
		if env.N < 0 || env.N > maxListenFDs {
			t.Fatalf("N=%d out of range", env.N)
		}
		if len(env.Names) != env.N {
			t.Fatalf("len(Names)=%d, N=%d", len(env.Names), env.N)
		}
		if listenPID != "" || listenFDs != "" {
			if p, err := strconv.Atoi(listenPID); err != nil || p != fuzzPID {
				t.Fatalf("accepted LISTEN_PID=%q for pid %d", listenPID, fuzzPID)
			}
		}
		for i, name := range env.Names {
			if name == "" {
				continue
			}
			if err := CheckFDName(name); err != nil {
				t.Fatalf("name %d: %v", i, err)
			}
		}
	})
}

func FuzzStatus(f *testing.F) {
	for _, seed := range []string{
		"",
		"serving",
		"a\nREADY=1",
		"\x00\r\n\t\x7f",
		"\xff\xfe",
		"日本語",
		strings.Repeat("x", 1023) + "日本",
		strings.Repeat("é", 700),
		"\u2028\u0085",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s := Status(text)
		if err := CheckState(s); err != nil {
			t.Fatalf("CheckState(Status(%q)): %v", text, err)
		}
		if strings.ContainsRune(s, '\n') {
			t.Fatalf("Status(%q) = %q contains a newline", text, s)
		}
		if !strings.HasPrefix(s, "STATUS=") {
			t.Fatalf("Status(%q) = %q lacks the STATUS= prefix", text, s)
		}
		if len(s) > 1024+len("STATUS=")+utf8.UTFMax-1 {
			t.Fatalf("len(Status(%q)) = %d, too long", text, len(s))
		}
		// Short texts without control characters (unicode.IsControl) are kept verbatim
		// (invalid UTF-8 becomes U+FFFD, as ranging over a string does).
		if utf8.ValidString(text) && len(text) <= 1024 && !strings.ContainsFunc(text, unicode.IsControl) {
			if s != "STATUS="+text {
				t.Fatalf("Status(%q) = %q, want it unchanged", text, s)
			}
		}
	})
}

func FuzzCheckState(f *testing.F) {
	for _, seed := range []string{
		"READY=1", "STATUS=a\nREADY=1", "NOKEY", "lowercase=1", "=", "A=", "A=\x00",
		"A=b=c", "A=\r", "\nA=1", "A\n=1", "READY=1\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		err := CheckState(line)
		if err != nil {
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("CheckState(%q) = %v, not ErrInvalidState", line, err)
			}
			return
		}
		if strings.ContainsAny(line, "\n\x00") {
			t.Fatalf("CheckState accepted %q, which is not exactly one line", line)
		}
		key, _, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.Trim(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
			t.Fatalf("CheckState accepted %q with a bad key", line)
		}
	})
}

func FuzzParseWatchdog(f *testing.F) {
	self := strconv.Itoa(fuzzPID)
	for _, seed := range []struct {
		usec, pid string
		inh       bool
	}{
		{"", "", false},
		{"3000000", "", false},
		{"3000000", self, false},
		{"3000000", "1", false},
		{"3000000", "1", true},
		{"0", "", false},
		{"-1", "", false},
		{"x", "", true},
		{"3000000", "x", false},
		{"3000000", "x", true},
		{"9223372036854775807", "", false},
		{"18446744073709551615", "", false},
	} {
		f.Add(seed.usec, seed.pid, seed.inh)
	}
	f.Fuzz(func(t *testing.T, usec, wdPID string, inherited bool) {
		d, err := ParseWatchdog(fuzzPID, usec, wdPID, inherited)
		if err != nil {
			if !errors.Is(err, ErrBadEnvironment) {
				t.Fatalf("error %q does not wrap ErrBadEnvironment", err)
			}
			if d != 0 {
				t.Fatalf("error %q with d=%v", err, d)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseWatchdog(%q, %q, %v) = %v < 0", usec, wdPID, inherited, d)
		}
		if usec == "" && d != 0 {
			t.Fatalf("watchdog on without WATCHDOG_USEC: %v", d)
		}
		if d == 0 {
			return
		}
		u, perr := strconv.ParseUint(usec, 10, 64)
		if perr != nil || u == 0 {
			t.Fatalf("accepted WATCHDOG_USEC=%q", usec)
		}
		if d%time.Microsecond != 0 || (u <= uint64(1<<62)/1000 && d != time.Duration(u)*time.Microsecond) {
			t.Fatalf("ParseWatchdog(%q) = %v", usec, d)
		}
		// Inheritance can only turn the watchdog on, never off or different.
		if d2, err := ParseWatchdog(fuzzPID, usec, wdPID, true); err != nil || d2 != d {
			t.Fatalf("inherited: %v, %v; not inherited: %v", d2, err, d)
		}
	})
}
