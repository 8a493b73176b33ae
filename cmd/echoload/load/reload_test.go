package load

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newTestReloader(t *testing.T, cfg ReloadConfig) (*Reloader, *Recorder) {
	t.Helper()
	rec := NewRecorder(100 * time.Millisecond)
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Every == 0 {
		cfg.Every = time.Millisecond
	}
	r, err := NewReloader(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	return r, rec
}

func TestReloadCmd(t *testing.T) {
	for _, tt := range []struct {
		cmd    string
		ok     bool
		status int
		errSub string
	}{
		{"true", true, 0, ""},
		{"false", false, 1, "exit status 1"},
		{"echo broken >&2; exit 3", false, 3, "broken"},
	} {
		t.Run(tt.cmd, func(t *testing.T) {
			r, rec := newTestReloader(t, ReloadConfig{Cmd: tt.cmd})
			ev := r.Once(context.Background())
			if ev.OK != tt.ok || ev.ExitStatus != tt.status || !strings.Contains(ev.Err, tt.errSub) || ev.End < ev.Start {
				t.Fatalf("event = %+v, want ok=%v status=%d error containing %q", ev, tt.ok, tt.status, tt.errSub)
			}
			rep := rec.report(&Config{Reload: ReloadConfig{Cmd: tt.cmd}}, time.Second)
			wantFailed := 0
			if !tt.ok {
				wantFailed = 1
			}
			if rep.Reloads.Count != 1 || rep.Reloads.Failed != wantFailed || rep.Pass != tt.ok {
				t.Errorf("reloads = %+v, pass = %v", rep.Reloads, rep.Pass)
			}
		})
	}
}

func TestReloadCmdTimeout(t *testing.T) {
	r, _ := newTestReloader(t, ReloadConfig{Cmd: "exec sleep 10", Timeout: 50 * time.Millisecond})
	ev := r.Once(context.Background())
	if ev.OK || !strings.Contains(ev.Err, "timed out") {
		t.Fatalf("event = %+v, want a timeout failure", ev)
	}
}

// TestReloaderRun checks the periodic loop: it reloads repeatedly and stops
// when its context is cancelled.
func TestReloaderRun(t *testing.T) {
	r, rec := newTestReloader(t, ReloadConfig{Cmd: "true", Every: 5 * time.Millisecond})
	events := make(chan ReloadEvent, 100)
	r.onReload = func(ev ReloadEvent) { events <- ev }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	for range 3 {
		if ev := <-events; !ev.OK {
			t.Errorf("reload failed: %+v", ev)
		}
	}
	cancel()
	wg.Wait()
	if p := rec.Progress(); p.Reloads < 3 || p.ReloadFails != 0 {
		t.Errorf("progress = %+v", p)
	}
}

// TestReloadSignal uses this test process as the "daemon": it catches
// SIGUSR1 and answers by writing a new pid to the pid file.
func TestReloadSignal(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	writePID := func(pid int) {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	t.Run("new generation", func(t *testing.T) {
		writePID(os.Getpid())
		const newPID = 999999
		done := make(chan struct{})
		go func() {
			defer close(done)
			<-sigs
			writePID(newPID)
		}()
		r, rec := newTestReloader(t, ReloadConfig{Signal: "usr1", PidFile: pidFile})
		ev := r.Once(context.Background())
		<-done
		if !ev.OK || ev.OldPID != os.Getpid() || ev.NewPID != newPID {
			t.Fatalf("event = %+v", ev)
		}
		if rep := rec.report(&Config{}, time.Second); rep.Reloads.Duration.Count != 1 {
			t.Errorf("reload duration = %+v", rep.Reloads.Duration)
		}
	})
	t.Run("no new generation", func(t *testing.T) {
		writePID(os.Getpid())
		r, _ := newTestReloader(t, ReloadConfig{Signal: "SIGUSR1", PidFile: pidFile, Timeout: 30 * time.Millisecond})
		ev := r.Once(context.Background())
		<-sigs // the signal was delivered
		if ev.OK || ev.Pending || !strings.Contains(ev.Err, "still names pid") || !strings.Contains(ev.Err, "-reload-timeout") {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("pending when the run ends", func(t *testing.T) {
		// The pid file never changes, the reload timeout is far away,
		// and the run ends (ctx is cancelled) once the signal arrived.
		writePID(os.Getpid())
		r, rec := newTestReloader(t, ReloadConfig{Signal: "USR1", PidFile: pidFile, Timeout: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan ReloadEvent, 1)
		go func() { done <- r.Once(ctx) }()
		<-sigs
		cancel()
		ev := <-done
		if ev.OK || !ev.Pending || ev.Err != "" || ev.OldPID != os.Getpid() || ev.NewPID != 0 || ev.End < ev.Start {
			t.Fatalf("event = %+v, want pending", ev)
		}
		rep := rec.report(&Config{Reload: ReloadConfig{PidFile: pidFile, Signal: "USR1"}}, time.Second)
		r2 := rep.Reloads
		if !rep.Pass || r2.Count != 1 || r2.Pending != 1 || r2.Failed != 0 || r2.OK != 0 || r2.Duration.Count != 0 ||
			len(r2.Failures) != 0 || len(r2.Events) != 1 || !r2.Events[0].Pending || r2.Events[0].OK {
			t.Errorf("pass = %v, reloads = %+v", rep.Pass, r2)
		}
		if p := rec.Progress(); p.Reloads != 1 || p.ReloadFails != 0 || p.ReloadPend != 1 || p.ReloadActive != 0 {
			t.Errorf("progress = %+v", p)
		}
	})
	t.Run("missing pid file", func(t *testing.T) {
		r, _ := newTestReloader(t, ReloadConfig{Signal: "HUP", PidFile: pidFile + ".missing"})
		if ev := r.Once(context.Background()); ev.OK || !strings.Contains(ev.Err, "read pid file") {
			t.Fatalf("event = %+v", ev)
		}
	})
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"HUP": syscall.SIGHUP, "sighup": syscall.SIGHUP, "USR2": syscall.SIGUSR2, "10": syscall.Signal(10)} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSignal("NOPE"); err == nil {
		t.Error("ParseSignal(NOPE) succeeded")
	}
}

// TestRunWithReloads runs load and reload commands together and checks
// that reloads are counted and that a failing reload command fails the run
// even though the server never failed.
func TestRunWithReloads(t *testing.T) {
	addr := startTCP(t, echoHandler)
	for _, tt := range []struct {
		cmd  string
		pass bool
	}{{"true", true}, {"false", false}} {
		t.Run(tt.cmd, func(t *testing.T) {
			rep, err := Run(context.Background(), Config{
				Addr: addr, Duration: 300 * time.Millisecond, Concurrency: 2, Streams: 1, Size: testSize,
				Timeout: 2 * time.Second,
				Reload:  ReloadConfig{Cmd: tt.cmd, Every: 20 * time.Millisecond, Window: 10 * time.Millisecond},
			}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			r := rep.Reloads
			if r.Count == 0 || r.Count != len(r.Events) || rep.Pass != tt.pass || rep.Failures.All.Total != 0 {
				t.Fatalf("pass=%v reloads: count %d ok %d failed %d; failures %+v", rep.Pass, r.Count, r.OK, r.Failed, rep.Failures.All)
			}
			if tt.pass && (r.Failed != 0 || r.Duration.Count != int64(r.OK)) || !tt.pass && r.OK != 0 {
				t.Errorf("reloads: count %d ok %d failed %d duration %+v", r.Count, r.OK, r.Failed, r.Duration)
			}
			if rep.RTT.NearReload.Count == 0 || rep.RTT.NearReload.Count+rep.RTT.Steady.Count != rep.RTT.All.Count {
				t.Errorf("rtt near %d steady %d all %d", rep.RTT.NearReload.Count, rep.RTT.Steady.Count, rep.RTT.All.Count)
			}
		})
	}
}

// signalDaemon makes this test process the "daemon" of signal mode: it
// writes its own pid to a pid file, which never changes (the new
// generation never appears), and catches SIGUSR1 so that reloads do not
// kill it. It returns the pid file.
func signalDaemon(t *testing.T) string {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	t.Cleanup(func() { signal.Stop(sigs) })
	return pidFile
}

// TestRunSignalPending: the new generation never appears (as when echod
// queues a reload behind a generation draining long-lived streams) and
// the run ends long before the reload timeout. The reload in progress is
// pending, not failed; the run passes; later ticks were skipped.
func TestRunSignalPending(t *testing.T) {
	pidFile := signalDaemon(t)
	rep, err := Run(context.Background(), Config{
		Addr: startTCP(t, echoHandler), Duration: 300 * time.Millisecond, Streams: 1, Size: testSize,
		Timeout: 2 * time.Second,
		Reload:  ReloadConfig{Signal: "USR1", PidFile: pidFile, Every: 5 * time.Millisecond, Timeout: time.Hour},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Reloads
	if !rep.Pass || r.Count != 1 || r.Pending != 1 || r.OK != 0 || r.Failed != 0 || r.Duration.Count != 0 || len(r.Failures) != 0 {
		t.Fatalf("pass = %v, reloads = %+v, failures = %+v", rep.Pass, r, rep.Failures.All)
	}
	if ev := r.Events[0]; !ev.Pending || ev.OK || ev.Error != "" || ev.OldPID != os.Getpid() {
		t.Errorf("event = %+v", ev)
	}
	// The reload lasted from the first tick (5ms) to the end of the run
	// (300ms): the ticks in between were skipped.
	if r.Skipped == 0 {
		t.Errorf("no skipped tick: %+v", r)
	}
	if rep.Config.ReloadTimeoutMS != float64(time.Hour.Milliseconds()) {
		t.Errorf("reload_timeout_ms = %v", rep.Config.ReloadTimeoutMS)
	}

	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"PASS", "reloads: 1 (ok 0, failed 0, pending 1)", "still waiting for the new generation when the run ended", "ticks came while a reload was still in progress", "no new pid after"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
	if err := rep.WritePlot(filepath.Join(t.TempDir(), "p.svg")); err != nil {
		t.Error(err)
	}
}

// TestRunSignalReloadTimeout: the new generation never appears and the
// reload timeout is short compared with the run: the reloads fail, and so
// does the run, though the server never failed.
func TestRunSignalReloadTimeout(t *testing.T) {
	pidFile := signalDaemon(t)
	rep, err := Run(context.Background(), Config{
		Addr: startTCP(t, echoHandler), Duration: 400 * time.Millisecond, Streams: 1, Size: testSize,
		Timeout: 2 * time.Second,
		Reload:  ReloadConfig{Signal: "USR1", PidFile: pidFile, Every: 50 * time.Millisecond, Timeout: 20 * time.Millisecond},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Reloads
	if rep.Pass || r.Failed == 0 || r.OK != 0 || r.Pending > 1 || r.Count != r.Failed+r.Pending || rep.Failures.All.Total != 0 {
		t.Fatalf("pass = %v, reloads = %+v, failures = %+v", rep.Pass, r, rep.Failures.All)
	}
	if !strings.Contains(r.Failures[0].Error, "still names pid") {
		t.Errorf("first reload failure = %+v", r.Failures[0])
	}
}

// TestReloaderSkips checks that ticks arriving while a reload is in
// progress are skipped and counted, and that Run waits for the reload
// command in progress when its context is done.
func TestReloaderSkips(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The command blocks until the test writes to the fifo.
	r, rec := newTestReloader(t, ReloadConfig{Cmd: "read x < " + fifo, Every: time.Millisecond, Timeout: time.Minute})
	started := make(chan struct{})
	var once sync.Once
	r.onSkip = func() { once.Do(func() { close(started) }) }
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		r.Run(ctx)
	}()
	<-started // a tick was skipped: the first reload is in progress
	cancel()
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the command opened it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("go\n"); err != nil {
		t.Error(err)
	}
	f.Close()
	<-ran
	rep := rec.report(&Config{Reload: r.cfg}, time.Second)
	if r2 := rep.Reloads; r2.Count != 1 || r2.OK != 1 || r2.Pending != 0 || r2.Skipped == 0 {
		t.Errorf("reloads = %+v", r2)
	}
}
