package daemon_test

import (
	"io"
	"net"
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
// (accepted net.Conn, bookkeeping, parked goroutine stack).
func BenchmarkIdleConnMemory(b *testing.B) {
	const idleConns = 2000
	var total, client float64
	for b.Loop() {
		total += idleCost(b, idleConns, true)
		client += idleCost(b, idleConns, false)
	}
	n := float64(b.N)
	b.ReportMetric(total/n, "B/conn")
	b.ReportMetric(client/n, "client-B/conn")
	b.ReportMetric((total-client)/n, "server-B/conn")
}

func inuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse + ms.HeapInuse
}

// idleCost opens n connections to a daemon (serve) or to a listener that
// never accepts (!serve) and returns the memory growth per connection.
func idleCost(b *testing.B, n int, serve bool) float64 {
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

	before := inuse()
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
	after := inuse()
	runtime.KeepAlive(conns)
	return (float64(after) - float64(before)) / float64(n)
}
