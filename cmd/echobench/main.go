package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// bench is one benchmark run.
type bench struct {
	echod, echoload string // binaries
	self            string // this program, for -plain-server
	modRoot         string // module root, for go build and go test
	goVersion       string
	tmp             string // scratch: pid files, logs, JSON reports
	plotDir         string // where plots go (next to -out)
	steady          time.Duration
	storm           time.Duration
	log             io.Writer // progress
}

// scenario is one numbered part of the report. A nil run is reported as
// skipped with the reason in skip.
type scenario struct {
	id    int
	title string
	skip  string
	run   func(b *bench, ctx context.Context, sec *section) error
}

func scenarios() []scenario {
	return []scenario{
		{id: 1, title: "Steady state: echod vs a plain io.Copy server", run: (*bench).steadyState},
		{id: 2, title: "Reload storm without systemd (SIGHUP)", run: (*bench).reloadStorm},
		{id: 3, title: "Under a real systemd user manager: reload storm, fd-store restarts and crashes", run: (*bench).systemdBench},
		{id: 4, title: "Memory and file descriptors per idle connection", run: (*bench).memoryFDs},
		{id: 5, title: "Go benchmarks", run: (*bench).goBench},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echobench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	plain := fs.String("plain-server", "", "serve as the plain io.Copy echo server on `ADDR` (used by the benchmark itself)")
	echodBin := fs.String("echod", "", "echod `binary` to use (default: build ./cmd/echod)")
	echoloadBin := fs.String("echoload", "", "echoload `binary` to use (default: build ./cmd/echoload)")
	out := fs.String("out", "cmd/echobench/RESULTS.md", "write the Markdown report to `FILE` too (plots go next to it); empty: stdout only")
	only := fs.String("scenarios", "1,2,3,4,5", "comma-separated scenario numbers to run")
	steady := fs.Duration("steady", 5*time.Second, "length of each steady-state run (scenario 1)")
	storm := fs.Duration("storm", 30*time.Second, "length of the SIGHUP storm (scenario 2a)")
	keep := fs.Bool("keep", false, "keep the scratch directory (logs, JSON reports)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: echobench [flags]\n       echobench -plain-server ADDR\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "echobench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *plain != "" {
		if err := servePlain(*plain, stdout); err != nil {
			fmt.Fprintf(stderr, "echobench -plain-server: %v\n", err)
			return 1
		}
		return 0
	}
	want := map[int]bool{}
	for f := range strings.SplitSeq(*only, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintf(stderr, "echobench: -scenarios: %q is not a number\n", f)
			return 2
		}
		want[n] = true
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	b := &bench{steady: *steady, storm: *storm, log: stderr}
	if *out != "" {
		b.plotDir = filepath.Dir(*out)
		if err := os.MkdirAll(b.plotDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "echobench: %v\n", err)
			return 1
		}
	}
	// Generations whose parent exits are re-parented to us, so that
	// they are reaped (see echodProc.reap) and never outlive the run.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "echobench: warning: cannot become a child subreaper: %v\n", err)
	}
	tmp, err := os.MkdirTemp("", "echobench-")
	if err != nil {
		fmt.Fprintf(stderr, "echobench: %v\n", err)
		return 1
	}
	b.tmp = tmp
	if *keep {
		fmt.Fprintf(stderr, "echobench: scratch directory %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if err := b.setup(ctx, *echodBin, *echoloadBin); err != nil {
		fmt.Fprintf(stderr, "echobench: %v\n", err)
		return 1
	}

	var report strings.Builder
	failed := false
	report.WriteString("# echod benchmark results\n\n")
	fmt.Fprintf(&report, "Produced by `%s` on %s. Everything runs on loopback (127.0.0.1); "+
		"client (echoload) and server share the machine's cores, so the absolute figures are a lower bound "+
		"and the ratios are what matters; anything else running on the machine (see the load averages) "+
		"makes single runs noisy. Latencies are in milliseconds; MB = 10^6 bytes, one direction.\n\n",
		shellQuote(append([]string{"echobench"}, args...)), started.UTC().Format("2006-01-02 15:04 MST"))
	report.WriteString(b.machineSection().String() + "\n")
	for _, sc := range scenarios() {
		if !want[sc.id] {
			continue
		}
		sec := &section{title: fmt.Sprintf("%d. %s", sc.id, sc.title)}
		t0 := time.Now()
		fmt.Fprintf(stderr, "echobench: scenario %d: %s\n", sc.id, sc.title)
		switch {
		case sc.run == nil:
			sec.p("%s", sc.skip)
		default:
			if err := sc.run(b, ctx, sec); err != nil {
				failed = true
				sec.p("**Could not run:** %s", strings.ReplaceAll(err.Error(), "\n", "  \n"))
				fmt.Fprintf(stderr, "echobench: scenario %d: %v\n", sc.id, err)
			}
			sec.p("_Scenario time: %s._", time.Since(t0).Round(time.Second))
		}
		report.WriteString(sec.String() + "\n")
		if ctx.Err() != nil {
			failed = true
			break
		}
	}
	fmt.Fprintf(&report, "_Total time: %s. Load average at the end: %s._\n", time.Since(started).Round(time.Second), loadAvg())

	fmt.Fprint(stdout, report.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report.String()), 0o644); err != nil {
			fmt.Fprintf(stderr, "echobench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "echobench: wrote %s\n", *out)
	}
	if failed {
		return 1
	}
	return 0
}

// setup finds the module root and the toolchain, and builds the binaries
// that were not given.
func (b *bench) setup(ctx context.Context, echodBin, echoloadBin string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.self = self
	if o, err := runCmd(ctx, "", 30*time.Second, "go", "env", "GOMOD", "GOVERSION"); err == nil {
		f := strings.Fields(o)
		if len(f) == 2 && f[0] != os.DevNull {
			b.modRoot = filepath.Dir(f[0])
			b.goVersion = f[1]
		} else if len(f) == 1 {
			b.goVersion = f[0]
		}
	}
	for _, x := range []struct {
		given string
		dst   *string
		pkg   string
	}{{echodBin, &b.echod, "cmd/echod"}, {echoloadBin, &b.echoload, "cmd/echoload"}} {
		if x.given != "" {
			p, err := filepath.Abs(x.given)
			if err != nil {
				return err
			}
			if _, err := os.Stat(p); err != nil {
				return err
			}
			*x.dst = p
			continue
		}
		if b.modRoot == "" {
			return fmt.Errorf("not inside the echod module and no -%s given", filepath.Base(x.pkg))
		}
		*x.dst = filepath.Join(b.tmp, filepath.Base(x.pkg))
		fmt.Fprintf(b.log, "echobench: building %s\n", x.pkg)
		if o, err := runCmd(ctx, b.modRoot, 5*time.Minute, "go", "build", "-o", *x.dst, "./"+x.pkg); err != nil {
			return fmt.Errorf("go build ./%s: %w\n%s", x.pkg, err, o)
		}
	}
	return nil
}

func (b *bench) machineSection() *section {
	m := describeMachine(b.goVersion)
	sec := &section{title: "Machine"}
	rows := [][]string{
		{"CPU", m.CPU},
		{"cores", fmt.Sprintf("%d (%d in /proc/cpuinfo)", m.NumCPU, m.Processors)},
		{"memory", m.MemTotal},
		{"kernel", m.Kernel},
		{"Go (binaries)", cmpOr(b.goVersion, "unknown")},
		{"Go (echobench)", m.Runtime},
		{"RLIMIT_NOFILE", m.NoFile},
		{"load average at start", loadAvg()},
		{"echod", b.echod},
		{"echoload", b.echoload},
	}
	sec.table([]string{"", ""}, rows)
	return sec
}

// loadAvg returns the 1, 5 and 15 minute load averages: other work on the
// machine skews the figures.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
