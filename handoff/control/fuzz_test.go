package control

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"reload", "status\r", "  stop \t", "", "\xff\xfe", "rel\x00oad", "\u0085stop", "status\x1b[2J"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseRequest(line)
		if err != nil {
			if cmd != "" {
				t.Errorf("error %v with command %q", err, cmd)
			}
			return
		}
		switch {
		case cmd == "" || len(cmd) > maxRequest:
			t.Errorf("command of %d bytes", len(cmd))
		case !utf8.ValidString(cmd):
			t.Errorf("command %q is not UTF-8", cmd)
		case strings.IndexFunc(cmd, unicode.IsControl) >= 0:
			t.Errorf("command %q has control characters", cmd)
		case strings.TrimSpace(cmd) != cmd:
			t.Errorf("command %q has white space around it", cmd)
		case !strings.Contains(string(line), cmd):
			t.Errorf("command %q is not in the line %q", cmd, line)
		}
		// The command as a line parses to itself.
		if again, err := parseRequest([]byte(cmd)); err != nil || again != cmd {
			t.Errorf("parseRequest(%q) = %q, %v", cmd, again, err)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"ok pid=1 generation=2\n", "ok", "error boom", "retry generation 3 (pid 9) serves now\r\n", "okay", " ok  x ", "error \xff\x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := parseReply(line)
		if err == nil {
			if !r.Kind.valid() {
				t.Errorf("parseReply(%q): kind %v", line, r.Kind)
			}
			if cleanText(r.Text) != r.Text {
				t.Errorf("parseReply(%q): text %q not clean", line, r.Text)
			}
			if again, err := parseReply(r.String() + "\n"); err != nil || again != r {
				t.Errorf("parseReply(%q) = %+v, %v; want %+v", r.String(), again, err, r)
			}
		}
		// Any text is sent as one line that parses back to the clean text.
		for _, k := range []Kind{OK, Error, Retry} {
			sent := Reply{Kind: k, Text: line}.String()
			if strings.ContainsAny(sent, "\r\n") || len(sent) > maxReply || !utf8.ValidString(sent) {
				t.Fatalf("%v %q is sent as %q", k, line, sent)
			}
			got, err := parseReply(sent)
			if want := (Reply{Kind: k, Text: cleanText(line)}); err != nil || got != want {
				t.Fatalf("parseReply(%q) = %+v, %v; want %+v", sent, got, err, want)
			}
		}
	})
}
