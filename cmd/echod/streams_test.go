package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
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

	mu   sync.Mutex
	errs []string
}

const chunkWords = 8

// startStreams opens n streams to addr; it fails if one cannot connect.
func startStreams(network, addr string, n int, interval time.Duration) (*streams, error) {
	return startStreamsDial(func() (net.Conn, error) { return net.DialTimeout(network, addr, 10*time.Second) }, n, interval)
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
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
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
}

// failures returns what went wrong so far.
func (s *streams) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
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
