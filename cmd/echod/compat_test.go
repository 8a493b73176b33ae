package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// previousRelease is the commit of the release before hand-over protocol
// version 2: it speaks version 1 (ECHOD_HANDOFF and a status file).
const previousRelease = "5e5aa0a8dae43a66fe08e828225293e7c04c6c74"

// lastProtocol2Build is the last commit before live connections moved
// without a duplicate descriptor and in batches: it speaks protocol 2, and
// its parent side sends connections the way this build's child must still
// take them.
const lastProtocol2Build = "96ba251"

// lastRelease is the release before this one (7f332ce, the last commit
// on main before it): protocol 2 with the staged hand-over.
const lastRelease = "7f332ce22f952630c05e3e2dca27be66dacd4c47"

// builds are the echods built from git, once each per test binary run,
// into binDir (removed by TestMain), by commit.
var (
	buildsMu sync.Mutex
	builds   = map[string]*gitBuild{}
)

type gitBuild struct {
	once sync.Once
	bin  string
	skip string // why it cannot be built here (no git, no such commit)
	err  error
}

// buildPreviousRelease returns the path of the previous release's echod
// (version "previous"), built from git. It skips the test when git or the
// commit is not available (a shallow clone, a source tarball); a build
// that fails otherwise fails the test.
func buildPreviousRelease(t testing.TB) string {
	t.Helper()
	return buildFromGit(t, previousRelease, "previous")
}

// buildFromGit returns the path of echod built at commit, with version
// ver; it skips the test when git or the commit is not available.
func buildFromGit(t testing.TB, commit, ver string) string {
	t.Helper()
	buildsMu.Lock()
	b := builds[commit]
	if b == nil {
		b = &gitBuild{}
		builds[commit] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() { b.bin, b.skip, b.err = buildCommit(commit, ver) })
	if b.skip != "" {
		t.Skipf("cannot build commit %s to test compatibility with: %s", commit, b.skip)
	}
	if b.err != nil {
		t.Fatalf("build commit %s: %v", commit, b.err)
	}
	return b.bin
}

func buildCommit(commit, ver string) (bin, skip string, err error) {
	if _, err := exec.LookPath("git"); err != nil {
		return "", "git is not installed: " + err.Error(), nil
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", "not in a git checkout: " + cmdErr(err), nil
	}
	root := strings.TrimSpace(string(top))
	if _, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").Output(); err != nil {
		return "", "the repository has no such commit (a shallow clone?): " + cmdErr(err), nil
	}
	src := filepath.Join(binDir, "src-"+commit)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("git archive | tar: %w: %s", err, out)
	}
	bin = filepath.Join(binDir, "echod-"+commit)
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+ver, "-o", bin, "./cmd/echod")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, "", nil
}

// cmdErr is err with the stderr of a failed command, if any.
func cmdErr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err.Error()
}

// waitLoadProgress waits (bounded) until l has more than n successful
// connections, and returns its count then.
func waitLoadProgress(t testing.TB, what string, l *load, n int64) int64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok := l.ok.Load(); ok > n {
			return ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no successful connection beyond %d within 15s (%d failed: %q)", what, n, l.failures.Load(), l.errorsSoFar())
		}
		<-tick.C
	}
}

func (l *load) errorsSoFar() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// startingLine waits for generation gen's "starting" line.
func (in *instance) startingLine(gen int) string {
	in.t.Helper()
	return in.log.waitFor(in.t, 15*time.Second, fmt.Sprintf("generation %d starting", gen), contains("msg=starting", fmt.Sprintf("gen=%d ", gen)))
}

// pidFileNames checks that the PID file names pid.
func (in *instance) pidFileNames(t testing.TB, pid int) {
	t.Helper()
	b, err := os.ReadFile(in.pidFile)
	if err != nil {
		t.Fatalf("PID file: %v", err)
	}
	if got, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || got != pid {
		t.Fatalf("PID file holds %q, want %d", b, pid)
	}
}

// stopLoad stops l and fails the test if any connection failed or none
// succeeded.
func stopLoad(t testing.TB, what string, l *load) {
	t.Helper()
	ok, failed, errs := l.stop()
	t.Logf("load on %s: %d connections ok, %d failed", what, ok, failed)
	if failed != 0 {
		t.Errorf("load on %s: %d of %d connections failed; first errors:\n%s", what, failed, ok+failed, strings.Join(errs, "\n"))
	}
	if ok == 0 {
		t.Errorf("load on %s: no connection succeeded", what)
	}
}

// TestUpgradeFromPreviousRelease: the previous release (hand-over protocol
// version 1) runs; its binary is replaced by this build and a reload, asked
// by this release's client, runs this build as generation 2, which speaks
// version 1 with its parent. Under load, no connection is lost; the
// listening socket is the same; the connections held by generation 1 are
// drained. A second reload (this build to this build) speaks version 2.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	prev := buildPreviousRelease(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "echod")
	sock := filepath.Join(dir, "echo.sock")
	copyExec(t, prev, bin)
	in := startEchod(t, bin, "-listen", "127.0.0.1:0", "-listen", "unix:"+sock)
	if l := in.startingLine(1); !strings.Contains(l, "version=previous") {
		t.Fatalf("generation 1 is not the previous release: %q", l)
	}
	var tcpAddr string
	for _, a := range in.addrs {
		if !strings.HasPrefix(a, "/") {
			tcpAddr = a
		}
	}
	if tcpAddr == "" {
		t.Fatalf("no TCP listener logged by generation 1: %q", in.addrs)
	}
	pid1 := in.cmd.Process.Pid

	tcpLoad := startLoad("tcp", tcpAddr, 4)
	t.Cleanup(func() { tcpLoad.stop() })
	unixLoad := startLoad("unix", sock, 4)
	t.Cleanup(func() { unixLoad.stop() })
	var held []*echoConn
	for i := range 10 {
		if i%2 == 0 {
			held = append(held, mustEcho(t, "tcp", tcpAddr, 1024))
		} else {
			held = append(held, mustEcho(t, "unix", sock, 1024))
		}
	}
	inode := listenInode(t, tcpAddr)
	tcpOK := waitLoadProgress(t, "TCP load under generation 1", tcpLoad, 0)
	unixOK := waitLoadProgress(t, "Unix load under generation 1", unixLoad, 0)

	// Upgrade: previous release → this build.
	copyExec(t, echodBin(t), bin)
	if _, err := in.reload(); err != nil {
		t.Fatalf("reload from the previous release: %v\nlog:\n%s", err, in.log)
	}
	pid2 := in.readyPID(2)
	if pid2 == pid1 || pid2 == 0 {
		t.Fatalf("generation 2 pid %d, generation 1 pid %d", pid2, pid1)
	}
	if l := in.startingLine(2); !strings.Contains(l, "protocol=1") || !strings.Contains(l, "inherited=true") || !strings.Contains(l, "version=test") {
		t.Fatalf("generation 2 starting line %q, want this build (version=test), inherited=true, protocol=1", l)
	}
	if got := listenInode(t, tcpAddr); got != inode {
		t.Fatalf("listening socket changed across the upgrade: inode %s, was %s", got, inode)
	}
	if !holdsSocket(t, pid2, inode) {
		t.Fatalf("generation 2 (pid %d) does not hold the listening socket %s", pid2, inode)
	}
	for i, c := range held {
		if err := c.roundTrip(4096); err != nil {
			t.Fatalf("held connection %d (opened under the previous release) after the upgrade: %v", i, err)
		}
	}
	tcpOK = waitLoadProgress(t, "TCP load after the upgrade", tcpLoad, tcpOK)
	unixOK = waitLoadProgress(t, "Unix load after the upgrade", unixLoad, unixOK)
	for _, c := range held {
		c.Close()
	}
	waitExit(t, pid1, 15*time.Second)
	in.pidFileNames(t, pid2)
	if in.log.has(contains("upgrade failed")) {
		t.Fatalf("an upgrade failed:\n%s", in.log)
	}

	// This build → this build: protocol 2.
	if _, err := in.reload(); err != nil {
		t.Fatalf("second reload: %v\nlog:\n%s", err, in.log)
	}
	pid3 := in.readyPID(3)
	if pid3 == pid2 || pid3 == pid1 || pid3 == 0 {
		t.Fatalf("generation 3 pid %d; generation 2 %d, 1 %d", pid3, pid2, pid1)
	}
	if l := in.startingLine(3); !strings.Contains(l, "protocol=2") || !strings.Contains(l, "inherited=true") {
		t.Fatalf("generation 3 starting line %q, want inherited=true, protocol=2", l)
	}
	if got := listenInode(t, tcpAddr); got != inode {
		t.Fatalf("listening socket changed across the second reload: inode %s, was %s", got, inode)
	}
	waitExit(t, pid2, 15*time.Second)
	waitLoadProgress(t, "TCP load under generation 3", tcpLoad, tcpOK)
	waitLoadProgress(t, "Unix load under generation 3", unixLoad, unixOK)
	stopLoad(t, "TCP", tcpLoad)
	stopLoad(t, "Unix", unixLoad)
	if in.log.has(contains("upgrade failed")) {
		t.Fatalf("an upgrade failed:\n%s", in.log)
	}
	in.pidFileNames(t, pid3)
}

// TestRollbackToPreviousReleaseIsRefused: this build runs; its binary is
// replaced by the previous release, which does not speak hand-over
// protocol version 2. The reload is refused before the exec and says why;
// the running generation serves on. With this build put back, the next
// reload works.
func TestRollbackToPreviousReleaseIsRefused(t *testing.T) {
	prev := buildPreviousRelease(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "echod")
	copyExec(t, echodBin(t), bin)
	in := startEchod(t, bin, "-listen", "127.0.0.1:0")
	addr := in.addrs[0]
	pid1 := in.cmd.Process.Pid
	ld := startLoad("tcp", addr, 4)
	t.Cleanup(func() { ld.stop() })
	held := mustEcho(t, "tcp", addr, 1024)
	okBefore := waitLoadProgress(t, "load before the rollback", ld, 0)

	copyExec(t, prev, bin)
	_, err := in.reload()
	if err == nil {
		t.Fatalf("reload to the previous release succeeded; log:\n%s", in.log)
	}
	if !strings.Contains(err.Error(), "hand-over protocol") {
		t.Fatalf("reload error %q does not mention the hand-over protocol", err)
	}
	t.Logf("reload refused: %v", err)
	// The command line client says so too, and exits non-zero. It is
	// this build from elsewhere, not the file at the daemon's path.
	out, err := exec.Command(echodBin(t), "reload", "-control", in.control).CombinedOutput()
	if err == nil {
		t.Fatalf("echod reload exited 0 for a rollback: %s", out)
	}
	if !strings.Contains(string(out), "hand-over protocol") {
		t.Fatalf("echod reload printed %q, want a reason about the hand-over protocol", out)
	}

	if !alive(pid1) {
		t.Fatal("the running generation died")
	}
	in.log.waitFor(t, 5*time.Second, "failure logged", contains("upgrade failed", "gen=1 "))
	// Refused before the exec: no other process ever logged.
	if pids := in.pids(); len(pids) != 1 || pids[0] != pid1 {
		t.Fatalf("processes that logged: %v, want only generation 1 (%d): the previous release was exec'd\nlog:\n%s", pids, pid1, in.log)
	}
	if in.log.has(contains("gen=2 ")) {
		t.Fatalf("a generation 2 logged:\n%s", in.log)
	}
	if s := in.status(t); !strings.Contains(s, "generation 1 ") || !strings.Contains(s, fmt.Sprintf("pid %d ", pid1)) || !strings.Contains(s, "last reload failed") {
		t.Fatalf("status %q, want generation 1, pid %d and the failed reload", s, pid1)
	}
	if err := held.roundTrip(4096); err != nil {
		t.Fatalf("connection held across the refused reload: %v", err)
	}
	mustEcho(t, "tcp", addr, 4096).Close()
	okBefore = waitLoadProgress(t, "load after the refused reload", ld, okBefore)

	// Put this build back: the reload works.
	copyExec(t, echodBin(t), bin)
	if _, err := in.reload(); err != nil {
		t.Fatalf("reload with this build back in place: %v\nlog:\n%s", err, in.log)
	}
	pid2 := in.readyPID(2)
	if pid2 == pid1 || pid2 == 0 {
		t.Fatalf("generation 2 pid %d, generation 1 pid %d", pid2, pid1)
	}
	if l := in.startingLine(2); !strings.Contains(l, "protocol=2") {
		t.Fatalf("generation 2 starting line %q, want protocol=2", l)
	}
	held.Close()
	waitExit(t, pid1, 15*time.Second)
	waitLoadProgress(t, "load under generation 2", ld, okBefore)
	stopLoad(t, "TCP", ld)
	in.pidFileNames(t, pid2)
}

// TestUpgradeFromLastProtocol2BuildMovesStreams: the build before the
// hand-over rework (protocol 2, its parent side taking every connection
// out at once and sending duplicates) is upgraded in place to this build
// with 200 streams open and short connections running: every stream moves
// (the reply says moved=200 at least), keeps its exact byte sequence, and
// nothing fails; the next reloads, this build to itself and back to the
// old build, move them again.
func TestUpgradeFromLastProtocol2BuildMovesStreams(t *testing.T) {
	upgradeMovesStreams(t, lastProtocol2Build, "protocol2")
}

// TestUpgradeFromLastReleaseMovesStreams: the same from the previous
// release (the staged hand-over on both sides), and back to it.
func TestUpgradeFromLastReleaseMovesStreams(t *testing.T) {
	upgradeMovesStreams(t, lastRelease, "last-release")
}

// upgradeMovesStreams runs echod built at commit (with version ver), 200
// streams and short-connection load, then reloads it to this build, to
// this build again, and back to the old one: each reload moves every
// stream (moved=200 or more, draining=0), no byte is wrong and nothing
// fails.
func upgradeMovesStreams(t *testing.T, commit, ver string) {
	const n = 200
	old := buildFromGit(t, commit, ver)
	bin := filepath.Join(t.TempDir(), "echod")
	copyExec(t, old, bin)
	in := startEchod(t, bin, "-listen", "127.0.0.1:0", "-drain-timeout", "5m")
	if l := in.startingLine(1); !strings.Contains(l, "version="+ver) {
		t.Fatalf("generation 1 is not the build %s: %q", commit, l)
	}
	st, err := startStreams("tcp", in.addrs[0], n, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ld := startLoad("tcp", in.addrs[0], 2)
	t.Cleanup(func() { ld.stop() })
	waitRounds(t, st, n)
	copyExec(t, echodBin(t), bin)
	for gen := 2; gen <= 4; gen++ {
		ans, err := in.reload()
		if err != nil {
			t.Fatalf("reload to generation %d: %v\n%s", gen, err, in.log)
		}
		// The streams, and the short connections open at that moment.
		m := movedRe.FindStringSubmatch(ans)
		if m == nil {
			t.Fatalf("reload to generation %d answered %q, want moved= and draining=", gen, ans)
		}
		if moved, _ := strconv.Atoi(m[1]); moved < n || m[2] != "0" {
			t.Fatalf("reload to generation %d answered %q, want at least moved=%d and draining=0", gen, ans, n)
		}
		waitRounds(t, st, n)
		if gen == 3 {
			// And back: this build hands over to the old one (same
			// protocol, so a rollback is allowed).
			copyExec(t, old, bin)
		}
	}
	if l := in.startingLine(2); strings.Contains(l, "version="+ver) {
		t.Fatalf("generation 2 is the old build: %q", l)
	}
	ok, failed, errs := ld.stop()
	st.closeIntact(t)
	if failed > 0 || ok == 0 {
		t.Fatalf("short connections: %d ok, %d failed: %v", ok, failed, errs)
	}
	if l := in.startingLine(4); !strings.Contains(l, "version="+ver) {
		t.Fatalf("generation 4 is not the old build: %q", l)
	}
	t.Logf("%s → this build → this build → %[1]s with %d streams: %d verified round trips, %d short connections ok", commit[:7], n, st.rounds.Load(), ok)
}
