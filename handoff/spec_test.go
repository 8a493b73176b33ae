package handoff_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/echod/echod/handoff"
)

// goodSpecs are addresses ParseSpec accepts, with what it makes of them.
var goodSpecs = []struct {
	in   string
	want handoff.Spec
}{
	{"127.0.0.1:7007", handoff.Spec{Network: "tcp", Address: "127.0.0.1:7007"}},
	{":7007", handoff.Spec{Network: "tcp", Address: ":7007"}},
	{"[::1]:0", handoff.Spec{Network: "tcp", Address: "[::1]:0"}},
	{"tcp4:127.0.0.1:1", handoff.Spec{Network: "tcp4", Address: "127.0.0.1:1"}},
	{"tcp6:[::1]:1", handoff.Spec{Network: "tcp6", Address: "[::1]:1"}},
	{"tcp:127.0.0.1:1", handoff.Spec{Network: "tcp", Address: "127.0.0.1:1"}},
	{"localhost:80", handoff.Spec{Network: "tcp", Address: "localhost:80"}},
	{"127.0.0.1:0080", handoff.Spec{Network: "tcp", Address: "127.0.0.1:80"}},
	{"127.0.0.1:65535", handoff.Spec{Network: "tcp", Address: "127.0.0.1:65535"}},
	{"tcp6:[::ffff:1.2.3.4]:1", handoff.Spec{Network: "tcp6", Address: "[::ffff:1.2.3.4]:1"}},
	{"/run/x.sock", handoff.Spec{Network: "unix", Address: "/run/x.sock"}},
	{"unix:/run/x.sock", handoff.Spec{Network: "unix", Address: "/run/x.sock"}},
	{"unix:/a/../b.sock", handoff.Spec{Network: "unix", Address: "/b.sock"}},
	{"//run//x.sock/", handoff.Spec{Network: "unix", Address: "/run/x.sock"}},
	{"/" + strings.Repeat("p", 106), handoff.Spec{Network: "unix", Address: "/" + strings.Repeat("p", 106)}},
}

// badSpecs are addresses ParseSpec rejects.
var badSpecs = []string{
	"",
	"localhost",
	"127.0.0.1",
	"127.0.0.1:",
	"127.0.0.1:99999",
	"127.0.0.1:65536",
	"127.0.0.1:-1",
	"127.0.0.1:http",
	"unix:rel.sock",
	"unix:",
	"rel.sock",
	"/" + strings.Repeat("p", 199), // 200 bytes
	"/" + strings.Repeat("p", 107), // 108 bytes: one too many for sun_path
	"unix:/" + strings.Repeat("p", 199),
	"tcp4:[::1]:1",
	"tcp6:127.0.0.1:1",
	"a b:80",
	"[fe80::1%eth0]:80",
	"a/b:80",
	"/run/x\x00.sock",
	"127.0.0.1:80\n",
	"unix:/run/x.sock\nunix:/run/y.sock",
	"\x00",
}

func TestParseSpecGood(t *testing.T) {
	for _, tc := range goodSpecs {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			got, err := handoff.ParseSpec(tc.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSpec(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
			again, err := handoff.ParseSpec(got.String())
			if err != nil {
				t.Fatalf("ParseSpec(%q) (String of %#v): %v", got.String(), got, err)
			}
			if again != got {
				t.Fatalf("round trip: ParseSpec(%q) = %#v, want %#v", got.String(), again, got)
			}
		})
	}
}

func TestParseSpecBad(t *testing.T) {
	for _, in := range badSpecs {
		t.Run(strconv.Quote(in), func(t *testing.T) {
			got, err := handoff.ParseSpec(in)
			if err == nil {
				t.Fatalf("ParseSpec(%q) = %#v, want an error", in, got)
			}
			if !errors.Is(err, handoff.ErrBadAddress) {
				t.Errorf("ParseSpec(%q) error %q does not wrap ErrBadAddress", in, err)
			}
			if got != (handoff.Spec{}) {
				t.Errorf("ParseSpec(%q) returned %#v with its error, want the zero Spec", in, got)
			}
			// The message names the input, quoted, so a NUL or newline in
			// it cannot garble a log line. The empty input is named by the
			// word "empty" instead.
			want := strconv.Quote(in)
			if in == "" {
				want = "empty"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseSpec(%q) error %q does not contain %s", in, err, want)
			}
			if strings.ContainsAny(err.Error(), "\x00\n") {
				t.Errorf("ParseSpec(%q) error %q contains a raw NUL or newline", in, err)
			}
		})
	}
}

// TestParseSpecHostNamedLikeNetwork: "tcp:" forces TCP in front of a host
// that is spelt like a network prefix. Spec.String drops the "tcp:" prefix,
// so the printed form no longer parses (or parses to something else).
func TestParseSpecHostNamedLikeNetwork(t *testing.T) {
	for _, in := range []string{"tcp:tcp4:1", "tcp:tcp6:1", "tcp:tcp:1", "tcp:unix:1", "[tcp4]:1"} {
		t.Run(strconv.Quote(in), func(t *testing.T) {
			spec, err := handoff.ParseSpec(in)
			if err != nil {
				return // rejecting such a host is a fine answer too
			}
			checkRoundTrip(t, in, spec)
		})
	}
}

func checkRoundTrip(t *testing.T, in string, spec handoff.Spec) {
	t.Helper()
	again, err := handoff.ParseSpec(spec.String())
	if err != nil {
		t.Fatalf("ParseSpec(%q) = %#v, whose String %q does not parse: %v", in, spec, spec.String(), err)
	}
	if again != spec {
		t.Fatalf("ParseSpec(%q) = %#v, but ParseSpec(%q) = %#v", in, spec, spec.String(), again)
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, tc := range goodSpecs {
		f.Add(tc.in)
	}
	for _, in := range badSpecs {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := handoff.ParseSpec(in)
		if err != nil {
			if !errors.Is(err, handoff.ErrBadAddress) {
				t.Fatalf("ParseSpec(%q) error %q does not wrap ErrBadAddress", in, err)
			}
			return
		}
		switch spec.Network {
		case "tcp", "tcp4", "tcp6":
			if strings.HasPrefix(spec.Address, "/") {
				t.Fatalf("ParseSpec(%q) = %#v: a TCP address that looks like a path", in, spec)
			}
		case "unix":
			if !strings.HasPrefix(spec.Address, "/") {
				t.Fatalf("ParseSpec(%q) = %#v: a relative Unix socket path", in, spec)
			}
			if len(spec.Address) > 107 {
				t.Fatalf("ParseSpec(%q) = %#v: a Unix socket path of %d bytes does not fit sun_path", in, spec, len(spec.Address))
			}
		default:
			t.Fatalf("ParseSpec(%q) = %#v: unknown network", in, spec)
		}
		checkRoundTrip(t, in, spec)
	})
}
