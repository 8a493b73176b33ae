package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// streams are long-lived clients, each sending a numbered byte sequence
// (8-byte big-endian counters, chunkWords at a time, every interval) and
// checking that exactly that sequence comes back: no byte lost,
// duplicated or reordered, no EOF, no reset.
type streams struct {
	conns  []net.Conn
	stop   chan struct{}
	wg     sync.WaitGroup
	rounds atomic.Int64 // round trips verified, all streams
	// Per stream: when the last verified round trip began (its write),
	// as the monotonic time since base.
	base  time.Time
	began []atomic.Int64

	mu    sync.Mutex
	errs  []string
	ended []bool // per stream, with errs
}

const chunkWords = 8

// startStreams opens n streams to addr; it fails if one cannot connect.
func startStreams(network, addr string, n int, interval time.Duration) (*streams, error) {
	return startStreamsDial(func() (net.Conn, error) { return net.DialTimeout(network, addr, 10*time.Second) }, n, interval)
}

// mustStreams opens n streams to addr, closes them when the test ends,
// and waits until each has made a round trip; it fails t if one cannot
// connect.
func mustStreams(t testing.TB, network, addr string, n int, interval time.Duration) *streams {
	t.Helper()
	st, err := startStreams(network, addr, n, interval)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	waitRounds(t, st, int64(n))
	return st
}

// startStreamsDial is startStreams with the connections made by dial.
func startStreamsDial(dial func() (net.Conn, error), n int, interval time.Duration) (*streams, error) {
	s := &streams{stop: make(chan struct{})}
	for i := range n {
		c, err := dial()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
		s.conns = append(s.conns, c)
	}
	s.base = time.Now()
	s.began = make([]atomic.Int64, n)
	s.ended = make([]bool, n)
	for i, c := range s.conns {
		s.wg.Add(1)
		go s.run(i, c, interval)
	}
	return s, nil
}

func (s *streams) run(i int, c net.Conn, interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var next uint64 = uint64(i) << 40 // each stream its own numbers
	out := make([]byte, 8*chunkWords)
	in := make([]byte, len(out))
	for {
		for w := range chunkWords {
			binary.BigEndian.PutUint64(out[8*w:], next)
			next++
		}
		start := time.Now()
		_ = c.SetDeadline(start.Add(60 * time.Second))
		if _, err := c.Write(out); err != nil {
			s.fail(i, "write", err)
			return
		}
		if _, err := io.ReadFull(c, in); err != nil {
			s.fail(i, "read", err)
			return
		}
		if !bytes.Equal(in, out) {
			s.fail(i, "verify", fmt.Errorf("got %x, want %x", in, out))
			return
		}
		s.began[i].Store(int64(start.Sub(s.base)))
		s.rounds.Add(1)
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *streams) fail(i int, op string, err error) {
	select {
	case <-s.stop:
		return // stopping: the test closed it
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf("stream %d: %s: %v", i, op, err))
	s.ended[i] = true
}

// settle waits (bounded) until the fate of every stream is known: it
// ended, or it made a verified round trip that began after since. It
// returns the streams that ended and those that go on. A stream that does
// neither within timeout — its connection open but served by nobody —
// fails the test.
func (s *streams) settle(t testing.TB, since time.Time, timeout time.Duration) (ended, live []int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	after := int64(since.Sub(s.base))
	for {
		ended, live = ended[:0], live[:0]
		var stuck []int
		s.mu.Lock()
		for i := range s.began {
			switch {
			case s.ended[i]:
				ended = append(ended, i)
			case s.began[i].Load() > after:
				live = append(live, i)
			default:
				stuck = append(stuck, i)
			}
		}
		s.mu.Unlock()
		if len(stuck) == 0 {
			return ended, live
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams neither ended nor made a round trip begun after %s within %v: %v (%d ended, %d go on)",
				len(stuck), since.Format(clockLayout), timeout, stuck[:min(len(stuck), 10)], len(ended), len(live))
		}
		time.Sleep(10 * time.Millisecond) // polling per-stream state, bounded
	}
}

// failures returns what went wrong so far.
func (s *streams) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

// closeIntact closes the streams and fails t if any of them failed.
func (s *streams) closeIntact(t testing.TB) {
	t.Helper()
	s.close()
	if f := s.failures(); len(f) > 0 {
		t.Fatalf("%d streams failed: %v", len(f), f[:min(len(f), 5)])
	}
}

// close stops every stream and closes the connections.
func (s *streams) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
	for _, c := range s.conns {
		c.Close()
	}
}
