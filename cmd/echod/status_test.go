package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/handoff"
)

// statusOf runs `echod status args...` against in and returns its output.
func statusOf(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(echodBin(t), append([]string{"status"}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("echod status %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestStatusReport: `echod status -json` reports the serving generation
// (pid, generation, state, version), its listeners (inherited after a
// reload), its connections (the 3 open ones, taken over from generation
// 1) and its reloads (a failed one with its reason and time); the table
// says the same.
func TestStatusReport(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "echod.toml")
	if err := os.WriteFile(cfgFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	in := startEchod(t, echodBin(t), "-listen", "127.0.0.1:0", "-config", cfgFile, "-drain-timeout", "5m")
	for range 3 {
		mustEcho(t, "tcp", in.addrs[0], 100)
	}
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	pid2 := in.readyPID(2)
	if err := os.WriteFile(cfgFile, []byte("max-conns = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := in.reload(); err == nil {
		t.Fatal("reload with a bad configuration succeeded")
	}
	env := cleanEnv()
	var rep handoff.StatusReport
	out := statusOf(t, env, "-json", "-control", in.control)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	switch {
	case rep.PID != pid2 || rep.Generation != 2 || rep.State != "serving" || rep.Version != "test":
		t.Errorf("report: pid %d generation %d state %q version %q; want %d, 2, serving, test", rep.PID, rep.Generation, rep.State, rep.Version, pid2)
	case len(rep.Listeners) != 1 || rep.Listeners[0].Addr != in.addrs[0] || !rep.Listeners[0].Inherited || rep.Listeners[0].Origin != "bound":
		t.Errorf("listeners %+v; want %s, bound, inherited", rep.Listeners, in.addrs[0])
	case rep.Connections == nil || rep.Connections.Open != 3 || rep.Connections.Adopted != 3:
		t.Errorf("connections %+v; want 3 open, 3 adopted", rep.Connections)
	case rep.Adopted == nil || rep.Adopted.Moved != 3:
		t.Errorf("adopted %+v; want 3 moved", rep.Adopted)
	case rep.Reloads.Failed != 1 || !strings.Contains(rep.Reloads.LastError, "max-conns") || rep.Reloads.LastErrorAt == nil || time.Since(*rep.Reloads.LastErrorAt) > time.Minute:
		t.Errorf("reloads %+v; want 1 failed, naming max-conns, with its time", rep.Reloads)
	}
	table := statusOf(t, env, "-control", in.control)
	if !strings.HasPrefix(table, "generation 2 pid "+strconv.Itoa(pid2)+" ") {
		t.Errorf("the status table does not start with the status line:\n%s", table)
	}
	for _, want := range []string{"GENERATION", "\n2 ", strconv.Itoa(pid2), "serving", in.addrs[0], "bound, inherited", "3 open", "taken over from generation 1: 3 connections", "1 failed", "max-conns"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
}

// TestStatusDefaultControlPath: with no -control, echod makes its control
// socket at the default path ($XDG_RUNTIME_DIR/echod/control.sock here) and
// `echod status` with no flags finds it; a second echod with the same
// default does not take the path over: it serves without a control socket
// and says why.
func TestStatusDefaultControlPath(t *testing.T) {
	xdg, err := os.MkdirTemp("", "xdg") // short: a socket path must fit 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(xdg) })
	env := append(cleanEnv(), "XDG_RUNTIME_DIR="+xdg)
	start := func() (*exec.Cmd, *logWatcher) {
		cmd := exec.Command(echodBin(t), "-listen", "127.0.0.1:0")
		cmd.Env = env
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		w := newLogWatcher(pr)
		t.Cleanup(func() {
			_ = cmd.Process.Signal(unix.SIGTERM)
			_ = cmd.Wait()
		})
		w.waitFor(t, 10*time.Second, "ready", contains("msg=ready", "gen=1 "))
		return cmd, w
	}
	first, _ := start()
	if fi, err := os.Stat(filepath.Join(xdg, "echod", "control.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no control socket at the default path: %v", err)
	}
	if out := statusOf(t, env); !strings.Contains(out, strconv.Itoa(first.Process.Pid)) {
		t.Fatalf("echod status (no flags) does not name pid %d:\n%s", first.Process.Pid, out)
	}
	_, w2 := start()
	w2.waitFor(t, 10*time.Second, "the warning", contains("no control socket", "another process serves the default path"))
	if out := statusOf(t, env); !strings.Contains(out, strconv.Itoa(first.Process.Pid)) {
		t.Fatalf("after a second echod, the default path answers:\n%s\nwant the first (pid %d)", out, first.Process.Pid)
	}
}

// TestDefaultControlPathOrder: RUNTIME_DIRECTORY (systemd), then
// XDG_RUNTIME_DIR, then /run/echod for root or the temp directory.
func TestDefaultControlPathOrder(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "/run/a:/run/b")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
	if got := defaultControlPath(); got != "/run/a/control.sock" {
		t.Errorf("with RUNTIME_DIRECTORY: %s", got)
	}
	t.Setenv("RUNTIME_DIRECTORY", "")
	if got := defaultControlPath(); got != "/run/user/7/echod/control.sock" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "relative")
	want := filepath.Join(os.TempDir(), "echod-"+strconv.Itoa(os.Geteuid()), "control.sock")
	if os.Geteuid() == 0 {
		want = "/run/echod/control.sock"
	}
	if got := defaultControlPath(); got != want {
		t.Errorf("without either: %s, want %s", got, want)
	}
}
