package load

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// testServer is an echo server (possibly deliberately broken) started by a
// test on a loopback address or a Unix socket. Cleanup closes the listener
// and every accepted connection and waits for all its goroutines.
type testServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startServer(t *testing.T, network, address string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &testServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	if network == "unix" {
		return "unix:" + ln.Addr().String()
	}
	return ln.Addr().String()
}

func startTCP(t *testing.T, handle func(net.Conn)) string {
	return startServer(t, "tcp", "127.0.0.1:0", handle)
}

// shortUnixPath returns a socket path short enough for sun_path.
func shortUnixPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

const testSize = 64

// Handlers. Each reads whole testSize-byte messages.

func echoHandler(c net.Conn) { _, _ = io.Copy(c, c) }

// closeHandler reads the message and closes without echoing (FIN).
func closeHandler(c net.Conn) {
	buf := make([]byte, testSize)
	_, _ = io.ReadFull(c, buf)
}

// resetHandler reads the message and resets the connection (RST).
func resetHandler(c net.Conn) {
	buf := make([]byte, testSize)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	_ = c.(*net.TCPConn).SetLinger(0)
}

// flipHandler echoes every message with one payload byte flipped.
func flipHandler(c net.Conn) {
	buf := make([]byte, testSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		buf[HeaderSize+7] ^= 0x01
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// duplicateHandler echoes the first message twice, then echoes normally.
func duplicateHandler(c net.Conn) {
	buf := make([]byte, testSize)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	if _, err := c.Write(append(append([]byte{}, buf...), buf...)); err != nil {
		return
	}
	_, _ = io.Copy(c, c)
}

// silentHandler reads everything and never answers.
func silentHandler(c net.Conn) { _, _ = io.Copy(io.Discard, c) }
