//go:build linux

package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

// stackInuse returns StackInuse after a GC.
func stackInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}

// BenchmarkDetachAdopt moves detachConns idle echo connections from one
// server to another: Detach on the first, then net.FileConn and Adopt on
// the second, as a new generation takes them over (without the SCM_RIGHTS
// transfer between processes). The clients live in a helper process (this
// test binary again, TestDetachBenchClients), so that both ends fit within
// the file descriptor limit; it checks every connection echoes, through
// the second server, afterwards.
//
// ns/op is one move of all detachConns connections; "ns/conn" the same per
// connection, "detach-ns/conn" and "adopt-ns/conn" its two halves,
// "detach-ms" the whole Detach. "adopted-stack-B/conn" is the growth of
// StackInuse per adopted connection once they are all idle again, and
// "start-stack-B" the size the runtime gave their goroutines' stacks at
// first: the two are equal when no goroutine had to grow its stack. (Go
// sizes new stacks from the average use it saw at the last GC, 2 KiB at
// the least: right after the forced GC of this measurement, which sees
// only a few goroutines, that is sometimes 4 KiB; GODEBUG
// adaptivestackstart=0 keeps it at 2 KiB.)
func BenchmarkDetachAdopt(b *testing.B) {
	const detachConns = 10000
	var detachT, adoptT time.Duration
	var stack, start float64
	for b.Loop() {
		b.StopTimer()
		m := newMove(b, detachConns)
		b.StartTimer()
		m.run(b)
		b.StopTimer()
		m.check(b)
		m.close(b)
		b.StartTimer()
		detachT += m.detachT
		adoptT += m.adoptT
		stack += m.stack
		start += m.start
	}
	n := float64(b.N)
	b.ReportMetric(float64(detachT+adoptT)/n/detachConns, "ns/conn")
	b.ReportMetric(float64(detachT)/n/detachConns, "detach-ns/conn")
	b.ReportMetric(float64(adoptT)/n/detachConns, "adopt-ns/conn")
	b.ReportMetric(float64(detachT)/n/1e6, "detach-ms")
	b.ReportMetric(stack/n, "adopted-stack-B/conn")
	b.ReportMetric(start/n, "start-stack-B")
}

// move is one iteration of BenchmarkDetachAdopt: n idle connections served
// by from, to be moved to to.
type move struct {
	n        int
	from, to *daemon.Server
	served   chan error
	clients  *clientProc

	detachT, adoptT time.Duration
	stackBefore     uint64
	stack, start    float64

	closeOnce sync.Once
}

func newMove(b *testing.B, n int) *move {
	m := &move{n: n, from: daemon.New(daemon.Config{}), to: daemon.New(daemon.Config{}), served: make(chan error, 1)}
	ln := listen(b, "tcp")
	go func() { m.served <- m.from.Serve(ln) }()
	m.clients = startClients(b, "tcp", ln.Addr().String(), n)
	b.Cleanup(func() { m.close(b) }) // if the iteration fails
	m.clients.expect(b, "", "ready")
	if st := m.from.Stats(); st.Active != n {
		b.Fatalf("Active = %d, want %d", st.Active, n)
	}
	return m
}

// run is the part measured: Detach on from, then FileConn and Adopt on
// to. It measures the stacks between the two, the timer stopped.
func (m *move) run(b *testing.B) {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conns, err := m.from.Detach(ctx)
	m.detachT = time.Since(begin)
	if err != nil || len(conns) != m.n {
		closeDetached(conns)
		b.Fatalf("Detach = %d connections, %v; want %d", len(conns), err, m.n)
	}
	b.StopTimer()
	m.stackBefore = stackInuse()
	m.start = float64(startingStackSize())
	b.StartTimer()
	begin = time.Now()
	for i, d := range conns {
		c, err := moved(d.Conn)
		if err == nil {
			err = m.to.Adopt(c, d.State)
		}
		if err != nil {
			closeDetached(conns[i+1:])
			b.Fatalf("connection %d: %v", i, err)
		}
	}
	m.adoptT = time.Since(begin)
}

// check has every client echo through to, and measures the stacks.
func (m *move) check(b *testing.B) {
	m.clients.expect(b, "check", "ok")
	after := stackInuse()
	m.stack = (float64(after) - float64(m.stackBefore)) / float64(m.n)
	if st := m.to.Stats(); st.Active != m.n || st.Adopted != uint64(m.n) {
		b.Fatalf("adopting server: Stats = %+v", st)
	}
}

// close ends the clients and both servers, once.
func (m *move) close(b *testing.B) {
	m.closeOnce.Do(func() {
		m.clients.stop(b)
		m.to.Close()
		m.from.Close()
		<-m.served
	})
}

// startingStackSize is the size of a new goroutine's stack now.
func startingStackSize() uint64 {
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// clientProc is the helper process that holds the benchmark's clients.
type clientProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

const clientsEnv = "DAEMON_BENCH_CLIENTS"

func startClients(b *testing.B, network, addr string, n int) *clientProc {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDetachBenchClients$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", clientsEnv, network, addr, n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &clientProc{cmd: cmd, in: in, lines: make(chan string, 16)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// expect sends cmd (if any) and waits for the reply want.
func (p *clientProc) expect(b *testing.B, cmd, want string) {
	b.Helper()
	if cmd != "" {
		if _, err := fmt.Fprintln(p.in, cmd); err != nil {
			b.Fatalf("helper: %v", err)
		}
	}
	select {
	case line, ok := <-p.lines:
		if !ok || line != want {
			b.Fatalf("helper said %q (open %v), want %q", line, ok, want)
		}
	case <-time.After(time.Minute):
		b.Fatalf("helper: no %q within a minute", want)
	}
}

// stop closes the helper's stdin: it closes its clients and exits.
func (p *clientProc) stop(b *testing.B) {
	p.in.Close()
	for range p.lines {
	}
	if err := p.cmd.Wait(); err != nil {
		b.Errorf("helper: %v", err)
	}
}

// TestDetachBenchClients is BenchmarkDetachAdopt's helper process: it
// dials the connections, echoes a byte on each, says "ready", and then
// answers each "check" line with "ok" once every connection echoed another
// byte, until its stdin closes.
func TestDetachBenchClients(t *testing.T) {
	spec := os.Getenv(clientsEnv)
	if spec == "" {
		t.Skip("the helper process of BenchmarkDetachAdopt")
	}
	var (
		network, addr string
		n             int
	)
	if _, err := fmt.Sscan(spec, &network, &addr, &n); err != nil {
		t.Fatalf("%s=%q: %v", clientsEnv, spec, err)
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	const workers = 8
	each := func(f func(i int) error) error {
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := w; i < n; i += workers {
					if err := f(i); err != nil {
						errs <- fmt.Errorf("connection %d: %w", i, err)
						return
					}
				}
				errs <- nil
			}()
		}
		var first error
		for range workers {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	echoOn := func(i int, msg byte) error {
		c := conns[i]
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			return err
		}
		return echo(c, []byte{msg})
	}
	err := each(func(i int) error {
		c, err := net.DialTimeout(network, addr, ioTimeout)
		if err != nil {
			return err
		}
		conns[i] = c
		return echoOn(i, 'a')
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "check" {
			continue
		}
		if err := each(func(i int) error { return echoOn(i, 'b') }); err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("ok")
		}
	}
}
