package main

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/echod/echod/cmd/echoload/load"
)

func TestParseLogLine(t *testing.T) {
	line := `time=2026-11-25T07:30:33.045Z level=INFO msg=listener gen=1 pid=5592 name=127.0.0.1:0 addr=127.0.0.1:44673 origin=bound inherited=false`
	kv := parseLogLine(line)
	if got := listenerAddr(kv); got != "127.0.0.1:44673" {
		t.Errorf("listenerAddr = %q, want 127.0.0.1:44673", got)
	}
	if kv["gen"] != "1" || kv["pid"] != "5592" || kv["inherited"] != "false" {
		t.Errorf("fields: %v", kv)
	}

	kv = parseLogLine(`time=x level=INFO msg="upgrade waits for the previous generation to finish draining" gen=2 pid=77`)
	if kv["msg"] != "upgrade waits for the previous generation to finish draining" || kv["pid"] != "77" {
		t.Errorf("quoted msg: %v", kv)
	}
	kv = parseLogLine(`level=WARN msg=x err="a \"quoted\" = b" pid=3`)
	if kv["err"] != `a "quoted" = b` || kv["pid"] != "3" {
		t.Errorf("escaped value: %v", kv)
	}
	for _, l := range []string{
		`time=x level=INFO msg=ready gen=1 pid=5592 listeners=1`,
		`echod: some error`,
		``,
	} {
		if a := listenerAddr(parseLogLine(l)); a != "" {
			t.Errorf("listenerAddr(%q) = %q, want empty", l, a)
		}
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	rss, err := readRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 1<<34 {
		t.Errorf("RSS of the test process = %d bytes, implausible", rss)
	}

	before, err := countFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after, err := countFDs(pid)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Other goroutines of the test binary may open descriptors too, but
	// not at this point; opening one file adds exactly one.
	if after != before+1 {
		t.Errorf("fds: %d before opening a file, %d after, want +1", before, after)
	}
	if !alive(pid) {
		t.Error("alive(self) = false")
	}
	if alive(1 << 30) {
		t.Error("alive(nonexistent pid) = true")
	}
}

func TestParsers(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 1\n"))
	if err != nil || rss != 2048*1024 {
		t.Errorf("parseVmRSS = %d, %v", rss, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\nState:\tS\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
	st, err := parseStatState([]byte("123 (a) b (c)) Z 1 2 3"))
	if err != nil || st != 'Z' {
		t.Errorf("parseStatState = %q, %v", st, err)
	}
	model, n := parseCPUModel([]byte("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n"))
	if model != "AMD EPYC 9B14" || n != 2 {
		t.Errorf("parseCPUModel = %q, %d", model, n)
	}
	if runtime.GOOS == "linux" {
		m := describeMachine("go1.x")
		if m.CPU == "" || m.Kernel == "" || m.NumCPU < 1 {
			t.Errorf("describeMachine = %+v", m)
		}
	}
}

func TestMarkdownTable(t *testing.T) {
	got := mdTable([]string{"server", "msg/s", "note"}, [][]string{
		{"echod", "12,345", "a|b"},
		{"plain", "987", "-"},
		{"x", "-"},
	})
	want := strings.Join([]string{
		"| server |  msg/s | note |",
		"| ------ | -----: | ---- |",
		"| echod  | 12,345 | a\\|b |",
		"| plain  |    987 | -    |",
		"| x      |      - |      |",
		"",
	}, "\n")
	if got != want {
		t.Errorf("mdTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtInt(0), "0"},
		{fmtInt(999), "999"},
		{fmtInt(1000), "1,000"},
		{fmtInt(-1234567), "-1,234,567"},
		{fmtF(12345.6, 0), "12,346"},
		{fmtF(0.1234, 3), "0.123"},
		{fmtRatio(1, 2), "0.50x"},
		{fmtRatio(1, 0), "-"},
		{fmtBytes(3900), "3.8 KiB"},
		{fmtBytes(512), "512 B"},
		{shellQuote([]string{"go", "test", "-run=^$", "a b", "", "it's"}), `go test '-run=^$' 'a b' '' 'it'\''s'`},
		{failuresString(load.FailureCounts{}), "0"},
		{failuresString(load.FailureCounts{Reset: 2, EOF: 1, Total: 3}), "2 reset, 1 eof"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if !numeric("1.5x") || !numeric("-3") || numeric("abc") || numeric("3 / 4") {
		t.Error("numeric misclassifies")
	}
	if plateau([]usage{{1, 10}, {5, 20}, {5, 30}, {2, 40}}) != (usage{5, 30}) {
		t.Error("plateau: want the last sample with the most fds")
	}
}
