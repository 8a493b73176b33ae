package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	// Named echoload: package main already has a func load (helpers_test.go).
	echoload "github.com/echod/echod/cmd/echoload/load"
	"github.com/echod/echod/systemd/systemdtest"
)

// The benchmarks in this file are scenarios through a real systemd user
// manager: echoload drives the service while systemctl reloads, restarts
// or kills it. They report figures (b.ReportMetric and the echoload table
// in the log); they assert nothing about speed. Run them with
//
//	go test -run '^$' -bench Systemd -benchtime 1x -v ./cmd/echod

// runEcholoadAgainst builds echoload, runs it against addr with a reload
// command, logs its table and reports the figures.
func runEcholoadAgainst(b *testing.B, m *systemdtest.Manager, addr, reloadCmd, every string, dur time.Duration, extra ...string) {
	b.Helper()
	dir := b.TempDir()
	loadBin := filepath.Join(dir, "echoload")
	if out, err := exec.Command("go", "build", "-o", loadBin, "../echoload").CombinedOutput(); err != nil {
		b.Fatalf("build echoload: %v\n%s", err, out)
	}
	js := filepath.Join(dir, "report.json")
	cmdline := []string{"-addr", addr, "-duration", dur.String(), "-concurrency", "4",
		"-reload-cmd", "XDG_RUNTIME_DIR=" + m.RuntimeDir() + " " + reloadCmd, "-reload-every", every,
		"-timeout", "10s", "-json", js}
	cmdline = append(cmdline, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	cpu0, cpuErr := processCPU(m.PID())
	b.ResetTimer()
	out, err := exec.CommandContext(ctx, loadBin, cmdline...).CombinedOutput()
	b.StopTimer()
	if cpu1, err := processCPU(m.PID()); err == nil && cpuErr == nil {
		// The service manager's own work: restarts, notify messages, the
		// fd store.
		b.ReportMetric(float64((cpu1 - cpu0).Milliseconds()), "manager-cpu-ms")
	}
	b.Logf("echoload %s\n%s", strings.Join(cmdline, " "), out)
	raw, rerr := os.ReadFile(js)
	if rerr != nil {
		b.Fatalf("echoload: %v (%v)", rerr, err)
	}
	var r echoload.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.Reloads.Count), "reloads")
	b.ReportMetric(float64(r.Reloads.Failed), "reloads-failed")
	b.ReportMetric(float64(r.Short.OK), "conns-ok")
	if r.Streams.Connections > 0 {
		b.ReportMetric(float64(r.Streams.Connections), "stream-conns")
		b.ReportMetric(float64(r.Streams.Messages), "stream-msgs")
	}
	b.ReportMetric(float64(r.Failures.All.Total), "failures")
	b.ReportMetric(float64(r.Failures.All.ConnectRefused), "refused")
	b.ReportMetric(r.Reloads.Duration.P50MS, "reload-p50-ms")
	b.ReportMetric(r.Reloads.Duration.P99MS, "reload-p99-ms")
	b.ReportMetric(r.Connect.NearReload.P99MS, "connect-near-p99-ms")
	b.ReportMetric(r.Connect.NearReload.MaxMS, "connect-near-max-ms")
	b.ReportMetric(r.RTT.Steady.P99MS, "rtt-steady-p99-ms")
	b.ReportMetric(r.RTT.NearReload.P99MS, "rtt-near-p99-ms")
}

// processCPU returns the user and system CPU time process pid used so far
// (/proc/PID/stat).
func processCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	const hz = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / hz, nil
}

// BenchmarkSystemdReload: `systemctl --user reload` every 200ms for 20s
// under short-connection load, through the shipped socket units.
func BenchmarkSystemdReload(b *testing.B) {
	m := systemdtest.Start(b)
	u := installShippedUnits(b, m, "")
	if out, err := m.Systemctl(context.Background(), "start", u.name+".socket"); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	runEcholoadAgainst(b, m, u.tcp, "systemctl --user reload "+u.service(), "200ms", 20*time.Second)
}

// BenchmarkSystemdFDStoreRestart: `systemctl --user restart` every second
// for 15s under load, listeners in the fd store: clients wait in the
// backlog while no process runs; the connect latency shows how long.
func BenchmarkSystemdFDStoreRestart(b *testing.B) {
	m := systemdtest.Start(b)
	u := installFDStoreUnit(b, m, freePort(b))
	u.start(b)
	runEcholoadAgainst(b, m, u.tcp, "systemctl --user restart "+u.service(), "1s", 15*time.Second)
}

// BenchmarkSystemdFDStoreRestartConns: 10,000 long-lived streams (one
// message every 2 s each, every byte verified), `systemctl --user
// restart` every 5 s for 20 s: each stopping process leaves its
// connections in the fd store and the next serves them. stream-conns
// equal to the streams means no stream reconnected; rtt-near-p99-ms is
// the pause a stream sees across a restart.
func BenchmarkSystemdFDStoreRestartConns(b *testing.B) {
	m := systemdtest.Start(b)
	u := installFDStoreUnit(b, m, freePort(b))
	u.start(b)
	runEcholoadAgainst(b, m, u.tcp, "systemctl --user restart "+u.service(), "5s", 20*time.Second,
		"-concurrency", "0", "-streams", "10000", "-stream-interval", "2s")
	if os.Getenv("ECHOD_BENCH_LOG") != "" {
		b.Log(u.log(b))
	}
}

// BenchmarkSystemdFDStoreCrashConns: the same 10,000 streams, SIGKILL of
// the main pid every 5 s for 20 s (Restart=always): the next process
// serves the copies of the connections kept in the store. A message the
// killed process had read and not echoed is lost: its stream fails
// (timeout) and reconnects, counted in failures and stream-conns.
func BenchmarkSystemdFDStoreCrashConns(b *testing.B) {
	m := systemdtest.Start(b)
	u := installFDStoreUnit(b, m, freePort(b))
	u.start(b)
	runEcholoadAgainst(b, m, u.tcp, "systemctl --user kill --signal=KILL "+u.service(), "5s", 20*time.Second,
		"-concurrency", "0", "-streams", "10000", "-stream-interval", "2s")
}

// BenchmarkSystemdFDStoreCrash: SIGKILL of the service every 2s for 15s
// under load; Restart=always brings it back with the stored socket.
// Connections in flight in the killed process are lost (counted as
// failures); none should be refused.
func BenchmarkSystemdFDStoreCrash(b *testing.B) {
	m := systemdtest.Start(b)
	u := installFDStoreUnit(b, m, freePort(b))
	u.start(b)
	runEcholoadAgainst(b, m, u.tcp, "systemctl --user kill --signal=KILL "+u.service(), "2s", 15*time.Second)
}
