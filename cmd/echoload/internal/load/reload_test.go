package load

import (
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
			ev := r.Once()
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
	ev := r.Once()
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
		ev := r.Once()
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
		ev := r.Once()
		<-sigs // the signal was delivered
		if ev.OK || !strings.Contains(ev.Err, "still names pid") {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("missing pid file", func(t *testing.T) {
		r, _ := newTestReloader(t, ReloadConfig{Signal: "HUP", PidFile: pidFile + ".missing"})
		if ev := r.Once(); ev.OK || !strings.Contains(ev.Err, "read pid file") {
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
