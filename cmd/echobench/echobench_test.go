package main

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

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

func TestParseHandOver(t *testing.T) {
	line := `time=2026-12-02T04:31:14.795Z level=INFO msg="connection hand-over" gen=1 pid=25392 upgrade_succeeded=true staged=true moved=10000 kept=0 lost=0 took=1.70231s detach=54.204ms copy=130.441ms commit=177µs move=116.959ms err=<nil>`
	kv := parseLogLine(line)
	h, ok := parseHandOver(kv)
	if !ok {
		t.Fatal("not recognised")
	}
	want := handOver{gen: 1, succeeded: true, moved: 10000, took: 1702310 * time.Microsecond, copy: 130441 * time.Microsecond, move: 116959 * time.Microsecond}
	if h != want {
		t.Errorf("parseHandOver = %+v, want %+v", h, want)
	}
	if at := logTime(kv, time.Time{}); !at.Equal(time.Date(2026, 12, 2, 4, 31, 14, 795e6, time.UTC)) {
		t.Errorf("logTime = %v", at)
	}
	now := time.Now()
	if at := logTime(map[string]string{}, now); !at.Equal(now) {
		t.Errorf("logTime without time= = %v, want now", at)
	}

	h, ok = parseHandOver(parseLogLine(`level=INFO msg="connection hand-over" gen=3 pid=7 upgrade_succeeded=false moved=0 kept=90 lost=10 took=12ms err="handoff: batch 2: no answer"`))
	if !ok || h.succeeded || h.gen != 3 || h.kept != 90 || h.lost != 10 || h.took != 12*time.Millisecond || h.err != "handoff: batch 2: no answer" {
		t.Errorf("failed hand-over: %+v", h)
	}
	if h, _ := parseHandOver(parseLogLine(`msg="connection hand-over" gen=2`)); h.took != -1 || h.copy != -1 || h.move != -1 {
		t.Errorf("without took=, copy=, move=: %+v, want -1 each", h)
	}
	if _, ok := parseHandOver(parseLogLine(`level=INFO msg=ready gen=1 pid=5 listeners=1`)); ok {
		t.Error("a ready line taken for a hand-over")
	}
}

func TestMigRows(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rep := &load.Report{StartedAt: t0, ElapsedSeconds: 15, Config: load.ConfigReport{Size: 64}}
	rep.Streams.Messages = 1_500_000
	rep.Streams.Connections = 10000
	rep.Failures.All = load.FailureCounts{ConnectTimeout: 2, Timeout: 1, Total: 3}
	rep.Reloads.Events = []load.ReloadEventReport{{StartMS: 8000, DurationMS: 120, OK: true}}
	rep.Timeline.BucketMS = 100
	rep.Timeline.Points = []load.TimelinePoint{{StartMS: 6000, Count: 5, P99MS: 3, MaxMS: 4}, {StartMS: 7900, Count: 5, P99MS: 2, MaxMS: 9}, {StartMS: 8000, Count: 5, P99MS: 50, MaxMS: 60}}
	sighup := t0.Add(8 * time.Second)
	mig := &migRun{migrate: true, streams: 10000, interval: migInterval, rep: rep, t0: t0, sighup: sighup, reload: &rep.Reloads.Events[0],
		gens: map[int]genInfo{1: {gen: 1, exitAt: sighup.Add(150 * time.Millisecond)}, 2: {gen: 2, readyAt: sighup.Add(140 * time.Millisecond)}},
		ho:   &handOver{gen: 1, succeeded: true, moved: 10000, took: 85 * time.Millisecond, copy: 50 * time.Millisecond, move: 35 * time.Millisecond}, detach: 20 * time.Millisecond,
		fdsBase: 10, fdsUp: 10010, upAt: 2 * time.Second, measured: true, oldAfter: -1, newAfter: 10012}
	drain := &migRun{streams: 10000, interval: migInterval, rep: rep, t0: t0, sighup: sighup, reload: &rep.Reloads.Events[0],
		gens: map[int]genInfo{}, detach: -1, fdsBase: 10, fdsUp: -1, upAt: -1, measured: true, oldAfter: 10009, newAfter: 12}
	rows := migRows([]*migRun{mig, drain, nil}, true)
	get := func(prefix string) []string {
		for _, r := range rows {
			if strings.HasPrefix(r[0], prefix) {
				return r
			}
		}
		t.Fatalf("no row %q", prefix)
		return nil
	}
	for _, c := range []struct {
		row  string
		want []string
	}{
		{"hand-over took", []string{"85.0", "-", "error"}},
		{"moved / kept / lost", []string{"10,000 / 0 / 0", "- (no hand-over)", "error"}},
		{"SIGHUP → new generation ready", []string{"140", "-", "error"}},
		{"old generation exited", []string{"150", "-", "error"}},
		{"fds 1 s after", []string{"exited / 10,012", "10,009 / 12", "error"}},
		{"connections in generation 1", []string{"10,000", "-", "error"}},
		{"every stream open", []string{"2.00", "not by the SIGHUP", "error"}},
		{"RTT in the", []string{"3.0 / 9.0", "3.0 / 9.0", "error"}},
		{"bytes lost", []string{"64", "64", "error"}},
		{"stream msg/s", []string{"100,000 / 100,000", "100,000 / 100,000", "error"}},
	} {
		r := get(c.row)
		if got := r[1 : len(r)-1]; strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: got %q, want %q", r[0], got, c.want)
		}
	}
	if s := saturated([]*migRun{mig}); s != "" {
		t.Errorf("saturated at the offered rate: %q", s)
	}
	rep2 := *rep
	rep2.Streams.Messages = 150_000
	if s := saturated([]*migRun{{migrate: true, streams: 10000, interval: migInterval, rep: &rep2, loadAvg: "3.00 2.00 1.00"}}); !strings.Contains(s, "10,000 of 100,000") {
		t.Errorf("saturated = %q", s)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := maxOf([]float64{1, 7, 3}); got != 7 {
		t.Errorf("maxOf = %v, want 7", got)
	}
}
