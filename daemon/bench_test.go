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
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

// BenchmarkEcho measures one round trip (write a message, read its echo)
// on a single loopback TCP connection.
func BenchmarkEcho(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"64B", 64}, {"16KiB", 16 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			ts := start(b, daemon.Config{}, "tcp")
			c := ts.dial(b)
			if err := c.SetDeadline(time.Time{}); err != nil {
				b.Fatal(err)
			}
			msg := payload(1, bc.size)
			got := make([]byte, bc.size)
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				// A 16 KiB message fits the socket buffers, so writing
				// it all before reading cannot deadlock.
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleConnMemory reports what an idle connection costs in memory:
// StackInuse+HeapInuse growth after opening idleConns connections that
// each echoed one byte and now wait. Client and server live in this
// process, so "B/conn" counts both ends; "client-B/conn" is the same
// measurement for client connections left unaccepted in a listener's
// backlog, and "server-B/conn" the difference: the daemon's own cost
// (accepted net.Conn, bookkeeping, parked goroutine stack), of which
// "server-stack-B/conn" is the goroutine stack.
func BenchmarkIdleConnMemory(b *testing.B) {
	const idleConns = 2000
	var total, client, stack float64
	for b.Loop() {
		t, st := idleCost(b, idleConns, true)
		c, cst := idleCost(b, idleConns, false)
		total += t
		client += c
		stack += st - cst
	}
	n := float64(b.N)
	b.ReportMetric(total/n, "B/conn")
	b.ReportMetric(client/n, "client-B/conn")
	b.ReportMetric((total-client)/n, "server-B/conn")
	b.ReportMetric(stack/n, "server-stack-B/conn")
}

// inuse returns StackInuse+HeapInuse, and StackInuse, after a GC.
func inuse() (total, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse + ms.HeapInuse, ms.StackInuse
}

// idleCost opens n connections to a daemon (serve) or to a listener that
// never accepts (!serve) and returns the memory growth per connection, in
// all and of the stacks.
func idleCost(b *testing.B, n int, serve bool) (total, stack float64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	before, beforeStack := inuse()
	var srv *daemon.Server
	if serve {
		srv = daemon.New(daemon.Config{})
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		defer func() { srv.Close(); <-served }()
	}
	one := []byte{'x'}
	for range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
		if err != nil {
			b.Fatalf("dial (after %d connections): %v", len(conns), err)
		}
		conns = append(conns, c)
		if serve {
			// One echo proves the server goroutine runs and leaves it
			// parked, idle, waiting for the next read.
			if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
				b.Fatal(err)
			}
			if err := echo(c, one); err != nil {
				b.Fatal(err)
			}
		}
	}
	if serve {
		if st := srv.Stats(); st.Active != n {
			b.Fatalf("Active = %d, want %d", st.Active, n)
		}
	}
	after, afterStack := inuse()
	runtime.KeepAlive(conns)
	return (float64(after) - float64(before)) / float64(n), (float64(afterStack) - float64(beforeStack)) / float64(n)
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
// "detach-ms" the whole Detach, and "adopted-stack-B/conn" the goroutine
// stack of an idle adopted connection.
func BenchmarkDetachAdopt(b *testing.B) {
	const detachConns = 10000
	var detachT, adoptT time.Duration
	var stack float64
	for b.Loop() {
		b.StopTimer()
		d, a, st := detachAdoptOnce(b, detachConns)
		b.StartTimer()
		detachT += d
		adoptT += a
		stack += st
	}
	n := float64(b.N)
	b.ReportMetric(float64(detachT+adoptT)/n, "ns/op")
	b.ReportMetric(float64(detachT+adoptT)/n/detachConns, "ns/conn")
	b.ReportMetric(float64(detachT)/n/detachConns, "detach-ns/conn")
	b.ReportMetric(float64(detachT)/n/1e6, "detach-ms")
	b.ReportMetric(float64(adoptT)/n/detachConns, "adopt-ns/conn")
	b.ReportMetric(stack/n, "adopted-stack-B/conn")
}

func detachAdoptOnce(b *testing.B, n int) (detachT, adoptT time.Duration, stack float64) {
	a := daemon.New(daemon.Config{})
	ln := listen(b, "tcp")
	served := make(chan error, 1)
	go func() { served <- a.Serve(ln) }()
	defer func() { a.Close(); <-served }()
	clients := startClients(b, "tcp", ln.Addr().String(), n)
	defer clients.stop(b)
	clients.expect(b, "", "ready")
	if st := a.Stats(); st.Active != n {
		b.Fatalf("Active = %d, want %d", st.Active, n)
	}
	next := daemon.New(daemon.Config{})
	defer next.Close()

	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conns, err := a.Detach(ctx)
	detachT = time.Since(begin)
	if err != nil || len(conns) != n {
		closeDetached(conns)
		b.Fatalf("Detach = %d connections, %v; want %d", len(conns), err, n)
	}
	_, before := inuse()
	begin = time.Now()
	for i, d := range conns {
		c, err := net.FileConn(d.File)
		d.File.Close()
		if err == nil {
			err = next.Adopt(c, d.State)
		}
		if err != nil {
			closeDetached(conns[i+1:])
			b.Fatalf("connection %d: %v", i, err)
		}
	}
	adoptT = time.Since(begin)
	clients.expect(b, "check", "ok") // every connection echoes, through next
	_, after := inuse()
	if st := next.Stats(); st.Active != n || st.Adopted != uint64(n) {
		b.Fatalf("adopting server: Stats = %+v", st)
	}
	return detachT, adoptT, (float64(after) - float64(before)) / float64(n)
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
