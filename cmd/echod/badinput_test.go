package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runBad starts echod (through sh, so LISTEN_PID=$$ can name the exec'd
// process) with env and extra fds from 3 on, and returns its exit status
// and output. It must exit on its own, non-zero.
func runBad(t *testing.T, script string, env []string, files []*os.File, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", script, "sh", echodBin(t)}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.ExtraFiles = files
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("echod kept running with bad input; output:\n%s", out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

func TestBadInputAtStartup(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tcpFile, _ := tcp.(*net.TCPListener).File()
	defer tcpFile.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, _ := udp.(*net.UDPConn).File()
	defer udpFile.Close()
	regular, err := os.CreateTemp(t.TempDir(), "notasocket")
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	const asChild = `LISTEN_PID=$$ exec "$@"`
	const plain = `exec "$@"`
	cases := []struct {
		name   string
		script string
		env    []string
		files  []*os.File
		args   []string
		want   string
	}{
		{"LISTEN_FDS garbage", asChild, []string{"LISTEN_FDS=three"}, nil, nil, `LISTEN_FDS="three"`},
		{"LISTEN_PID garbage", plain, []string{"LISTEN_PID=abc", "LISTEN_FDS=1"}, nil, nil, `LISTEN_PID="abc"`},
		{"LISTEN_PID of another process", plain, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, nil, nil, "names another process"},
		{"LISTEN_FDNAMES count", asChild, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=a:b"}, []*os.File{tcpFile}, nil, "2 names for LISTEN_FDS=1"},
		{"fd is not a socket", asChild, []string{"LISTEN_FDS=1"}, []*os.File{regular}, nil, "fd 3 (LISTEN_FD_3): not a listening stream socket: not a socket"},
		{"fd is a datagram socket", asChild, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=dns"}, []*os.File{udpFile}, nil, "fd 3 (dns): not a listening stream socket: socket type 2"},
		{"listen unparsable", plain, nil, nil, []string{"-listen", "localhost"}, "listen: handoff: bad listen address \"localhost\""},
		{"listen relative path", plain, nil, nil, []string{"-listen", "unix:echo.sock"}, "must be absolute"},
		{"address in use", plain, nil, nil, []string{"-listen", busy.Addr().String()}, "address already in use"},
		{"config missing", plain, nil, nil, []string{"-config", "/nonexistent/echod.toml"}, "no such file"},
		{"unknown flag", plain, nil, nil, []string{"-lissten", "x"}, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runBad(t, tc.script, tc.env, tc.files, tc.args...)
			if code == 0 {
				t.Fatalf("exit status 0, want non-zero; output:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestSocketActivationWithoutSystemd passes a TCP listener as systemd does
// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and checks echod serves it, by
// name, without binding its default address; a reload keeps it.
func TestSocketActivationWithoutSystemd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	addr := ln.Addr().String()
	ln.Close() // the child holds the socket now (f is a dup)
	defer f.Close()
	dir := t.TempDir()
	ctl := dir + "/ctl.sock"
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh", echodBin(t), "-control", ctl)
	cmd.Env = append(cleanEnv(), "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
	cmd.ExtraFiles = []*os.File{f}
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	f.Close()
	in := &instance{t: t, cmd: cmd, log: newLogWatcher(pr), control: ctl}
	t.Cleanup(in.stopAll)
	l := in.log.waitFor(t, 10*time.Second, "listener line", contains("msg=listener", "gen=1 "))
	if !strings.Contains(l, "name=web") || !strings.Contains(l, "origin=systemd") || !strings.Contains(l, "addr="+addr) {
		t.Fatalf("listener line %q, want the activated socket named web on %s", l, addr)
	}
	in.readyPID(1)
	if in.log.has(contains("msg=listener", defaultListen)) {
		t.Fatal("echod bound its default address although systemd passed a socket")
	}
	c := mustEcho(t, "tcp", addr, 777)
	if _, err := in.reload(); err != nil {
		t.Fatal(err)
	}
	l2 := in.log.waitFor(t, 10*time.Second, "generation 2 listener", contains("msg=listener", "gen=2 "))
	if !strings.Contains(l2, "name=web") || !strings.Contains(l2, "origin=systemd") || !strings.Contains(l2, "inherited=true") {
		t.Fatalf("generation 2 listener %q, want the inherited systemd socket web", l2)
	}
	if err := c.roundTrip(777); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, "tcp", addr, 99)
}
