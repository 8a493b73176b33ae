package systemd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The activation tests re-execute the test binary with the sockets as fds
// 3, 4, ... (cmd.ExtraFiles). The child runs only TestActivatedHelper,
// which sets LISTEN_PID to its own pid, calls Activated and prints what it
// got, one tab-separated record a line:
//
//	sock <name> <network> <address>
//	err <quoted error>
//	env <variable> <set|unset>
//	fd3 <open|closed>
//	accepted <name>
const (
	helperEnv    = "ECHOD_TEST_ACTIVATED_HELPER"
	setPIDEnv    = "ECHOD_TEST_SET_LISTEN_PID"
	acceptEnv    = "ECHOD_TEST_ACCEPT" // name of the socket to accept one connection on
	helperPrefix = "helper:\t"
)

func TestActivatedHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the activation tests")
	}
	out := func(format string, args ...any) { fmt.Printf(helperPrefix+format+"\n", args...) }
	if os.Getenv(setPIDEnv) == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	socks, err := Activated()
	if err != nil {
		out("err\t%q", err.Error())
		// Everything taken was closed, fd 3 included.
		if _, ferr := unix.FcntlInt(3, unix.F_GETFD, 0); ferr == nil {
			out("fd3\topen")
		} else {
			out("fd3\tclosed")
		}
	}
	for _, s := range socks {
		out("sock\t%s\t%s\t%s", s.Name, s.Listener.Addr().Network(), s.Listener.Addr())
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, set := os.LookupEnv(v); set {
			out("env\t%s\tset", v)
		} else {
			out("env\t%s\tunset", v)
		}
	}
	if name := os.Getenv(acceptEnv); name != "" {
		for _, s := range socks {
			if s.Name != name {
				continue
			}
			if d, ok := s.Listener.(interface{ SetDeadline(time.Time) error }); ok {
				d.SetDeadline(time.Now().Add(10 * time.Second))
			}
			c, err := s.Listener.Accept()
			if err != nil {
				t.Fatalf("accept on %s: %v", name, err)
			}
			c.Write([]byte("hi"))
			c.Close()
			out("accepted\t%s", name)
		}
	}
	for _, s := range socks {
		s.Listener.Close()
	}
}

type helperResult struct {
	socks    [][3]string // name, network, address
	err      string
	fd3      string
	env      map[string]string
	accepted []string
	output   string // everything, for failure messages
}

// startHelper starts the helper with files as fds 3, 4, ... and the given
// LISTEN_FDS and LISTEN_FDNAMES (LISTEN_PID is set by the helper itself).
// wait must be called to collect the result.
func startHelper(t *testing.T, files []*os.File, listenFDs, fdNames string, extraEnv ...string) (wait func() helperResult) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestActivatedHelper$", "-test.count=1", "-test.timeout=60s")
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "ECHOD_TEST_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, helperEnv+"=1", setPIDEnv+"=1", "LISTEN_FDS="+listenFDs, "LISTEN_FDNAMES="+fdNames)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.ExtraFiles = files
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() helperResult {
		t.Helper()
		err := cmd.Wait()
		res := helperResult{env: map[string]string{}, output: stdout.String() + stderr.String()}
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, res.output)
		}
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), helperPrefix)
			if !ok {
				continue
			}
			f := strings.Split(line, "\t")
			switch {
			case f[0] == "sock" && len(f) == 4:
				res.socks = append(res.socks, [3]string{f[1], f[2], f[3]})
			case f[0] == "err" && len(f) == 2:
				s, err := strconv.Unquote(f[1])
				if err != nil {
					t.Fatalf("helper printed %q: %v", line, err)
				}
				res.err = s
			case f[0] == "fd3" && len(f) == 2:
				res.fd3 = f[1]
			case f[0] == "env" && len(f) == 3:
				res.env[f[1]] = f[2]
			case f[0] == "accepted" && len(f) == 2:
				res.accepted = append(res.accepted, f[1])
			default:
				t.Fatalf("helper printed %q", line)
			}
		}
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			if res.env[v] != "unset" {
				t.Errorf("after Activated, %s is %q in the environment, want unset\n%s", v, res.env[v], res.output)
			}
		}
		return res
	}
}

// fileOf returns a dup of c's descriptor, closed at the end of the test.
func fileOf(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestActivatedListeners(t *testing.T) {
	tcp1, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp1.Close()
	tcp2, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp2.Close()
	path := filepath.Join(sockDir(t), "echo.sock")
	ux, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()

	files := []*os.File{fileOf(t, tcp1), fileOf(t, tcp2), fileOf(t, ux)}
	wait := startHelper(t, files, "3", "a:b:c", acceptEnv+"=b")
	for _, f := range files {
		f.Close() // the child has its own copies
	}

	// Connect to "b"; the connection waits in the backlog until the
	// helper accepts it.
	c, err := net.DialTimeout("tcp", tcp2.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("reading from the helper: %v", err)
	}
	if string(got) != "hi" {
		t.Errorf("read %q through the activated listener, want \"hi\"", got)
	}

	res := wait()
	if res.err != "" {
		t.Fatalf("Activated: %s", res.err)
	}
	want := [][3]string{
		{"a", "tcp", tcp1.Addr().String()},
		{"b", "tcp", tcp2.Addr().String()},
		{"c", "unix", path},
	}
	if fmt.Sprint(res.socks) != fmt.Sprint(want) {
		t.Errorf("sockets:\n got %q\nwant %q\n%s", res.socks, want, res.output)
	}
	if len(res.accepted) != 1 || res.accepted[0] != "b" {
		t.Errorf("helper accepted on %q, want [b]", res.accepted)
	}
	// The activated Unix listener does not own the path: closing it in
	// the child must leave the socket file in place.
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file after the helper closed its listener: %v", err)
	}
}

func TestActivatedDefaultNames(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	res := startHelper(t, []*os.File{fileOf(t, ln)}, "1", "")()
	if res.err != "" || len(res.socks) != 1 {
		t.Fatalf("Activated: %q, sockets %q", res.err, res.socks)
	}
	if want := "LISTEN_FD_3"; res.socks[0][0] != want {
		t.Errorf("name without LISTEN_FDNAMES = %q, want %q", res.socks[0][0], want)
	}
}

func TestActivatedRejects(t *testing.T) {
	tests := []struct {
		name    string
		file    func(t *testing.T) *os.File
		wantErr string
	}{
		{
			name: "udp",
			file: func(t *testing.T) *os.File {
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return fileOf(t, c)
			},
			wantErr: "socket type",
		},
		{
			name: "unixgram",
			file: func(t *testing.T) *os.File {
				c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(sockDir(t), "dgram.sock"), Net: "unixgram"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return fileOf(t, c)
			},
			wantErr: "socket type",
		},
		{
			name: "regular file",
			file: func(t *testing.T) *os.File {
				f, err := os.CreateTemp(t.TempDir(), "notasocket")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return f
			},
			wantErr: "not a socket",
		},
		{
			name: "connected tcp",
			file: func(t *testing.T) *os.File {
				ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return fileOf(t, c)
			},
			wantErr: "not listening",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := startHelper(t, []*os.File{tt.file(t)}, "1", "bad")()
			if res.err == "" {
				t.Fatalf("Activated accepted a %s: %q", tt.name, res.socks)
			}
			if !strings.Contains(res.err, tt.wantErr) || !strings.Contains(res.err, "fd 3 (bad)") {
				t.Errorf("error %q does not contain %q and name fd 3 (bad)", res.err, tt.wantErr)
			}
			if len(res.socks) != 0 {
				t.Errorf("sockets returned with an error: %q", res.socks)
			}
			if res.fd3 != "closed" {
				t.Errorf("fd 3 is %s after the error, want closed", res.fd3)
			}
		})
	}
}

// TestActivatedRejectsOneOfMany: one bad fd among good ones fails the
// whole call, names the bad fd, and returns nothing.
func TestActivatedRejectsOneOfMany(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	res := startHelper(t, []*os.File{fileOf(t, ln), fileOf(t, udp)}, "2", "http:dns")()
	if !strings.Contains(res.err, "fd 4 (dns)") || !strings.Contains(res.err, "socket type") || strings.Contains(res.err, "http") {
		t.Errorf("error %q should name fd 4 (dns) only", res.err)
	}
	if len(res.socks) != 0 {
		t.Errorf("sockets returned with an error: %q", res.socks)
	}
}

// In-process cases: Activated fails (or returns nothing) before it looks at
// any fd, so they are safe to run here.
func TestActivatedEnvironmentErrors(t *testing.T) {
	t.Run("not activated", func(t *testing.T) {
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			t.Setenv(v, "")
			os.Unsetenv(v)
		}
		socks, err := Activated()
		if socks != nil || err != nil {
			t.Errorf("Activated() = %v, %v; want nil, nil", socks, err)
		}
	})
	t.Run("zero fds", func(t *testing.T) {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		t.Setenv("LISTEN_FDS", "0")
		t.Setenv("LISTEN_FDNAMES", "")
		socks, err := Activated()
		if socks != nil || err != nil {
			t.Errorf("Activated() = %v, %v; want nil, nil", socks, err)
		}
		checkListenEnvUnset(t)
	})
	for _, tt := range []struct{ name, pid, fds, names, variable string }{
		{"other pid", "1", "1", "", "LISTEN_PID"},
		{"bad fds", "self", "x", "", "LISTEN_FDS"},
		{"name mismatch", "self", "2", "a", "LISTEN_FDNAMES"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.pid == "self" {
				tt.pid = strconv.Itoa(os.Getpid())
			}
			t.Setenv("LISTEN_PID", tt.pid)
			t.Setenv("LISTEN_FDS", tt.fds)
			t.Setenv("LISTEN_FDNAMES", tt.names)
			socks, err := Activated()
			if socks != nil {
				t.Errorf("sockets with a bad environment: %v", socks)
			}
			if !errors.Is(err, ErrBadEnvironment) || !strings.Contains(err.Error(), tt.variable) {
				t.Errorf("Activated() error %v, want ErrBadEnvironment naming %s", err, tt.variable)
			}
			checkListenEnvUnset(t)
		})
	}
}

func checkListenEnvUnset(t *testing.T) {
	t.Helper()
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if val, set := os.LookupEnv(v); set {
			t.Errorf("after Activated, %s=%q is still set", v, val)
		}
	}
}
