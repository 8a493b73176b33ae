package daemon_test

import (
	"net"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/echod/echod/daemon"
)

func scanned() (scan, start uint64) {
	s := []metrics.Sample{{Name: "/gc/scan/stack:bytes"}, {Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func TestScratchScan(t *testing.T) {
	for _, adopt := range []bool{false, true} {
		scan(t, adopt)
	}
}

func scan(t *testing.T, adopt bool) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln2.Close()
	if adopt {
		ln, ln2 = ln2, ln
	}
	srv := daemon.New(daemon.Config{})
	go srv.Serve(ln)
	defer srv.Close()
	runtime.GC()
	s0, _ := scanned()
	g0 := runtime.NumGoroutine()
	const n = 2000
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		if adopt {
			sc, err := ln2.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Adopt(sc, []byte("s")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(b); err != nil {
				t.Fatal(err)
			}
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := echo(c, []byte{'x'}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	s1, start := scanned()
	g1 := runtime.NumGoroutine()
	t.Logf("adopt %v: used stack per idle conn goroutine: %.1f bytes (goroutines %d -> %d), starting size %d", adopt, float64(s1-s0)/float64(g1-g0), g0, g1, start)
	for _, c := range cs {
		c.Close()
	}
}
