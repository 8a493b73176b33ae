package load

import (
	"context"
	"sync"
	"time"
)

// reconnectBackoff is the pause before a stream reconnects after a failed
// connect, so that a server that is down is not hammered.
const reconnectBackoff = 10 * time.Millisecond

// streamLoad drives long-lived streams: each keeps one connection open and
// exchanges verified messages until ctx is done. After a failure the stream
// reconnects (and the failure is counted).
type streamLoad struct {
	cfg    *Config
	target Target
	rec    *Recorder
	ids    *idSource
}

func (s *streamLoad) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range s.cfg.Streams {
		wg.Go(func() { s.stream(ctx) })
	}
	wg.Wait()
}

func (s *streamLoad) stream(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// pause waits for d or until ctx is done; it reports whether to go on.
	pause := func(d time.Duration) bool {
		if d <= 0 {
			return ctx.Err() == nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			timer.Stop() // Go >= 1.23: no stale value is delivered after Stop
			return false
		case <-timer.C:
			return true
		}
	}
	for ctx.Err() == nil {
		id := s.ids.id()
		t0 := s.rec.Since()
		c, err := dial(s.target, s.cfg.Timeout)
		if err != nil {
			s.rec.Fail(WorkloadStream, id, t0, err)
			if !pause(reconnectBackoff) {
				return
			}
			continue
		}
		s.rec.Connect(t0, s.rec.Since()-t0)
		s.rec.StreamConnected()
		s.exchange(ctx, newEchoConn(c, id, s.cfg.Size, s.cfg.Timeout), pause)
	}
}

// exchange runs round trips on ec until ctx is done or one fails, then
// closes ec.
func (s *streamLoad) exchange(ctx context.Context, ec *echoConn, pause func(time.Duration) bool) {
	defer ec.Close()
	for ctx.Err() == nil {
		t0 := s.rec.Since()
		if err := ec.roundTrip(); err != nil {
			s.rec.Fail(WorkloadStream, ec.id, t0, err)
			return
		}
		s.rec.RTT(WorkloadStream, t0, s.rec.Since(), s.cfg.Size)
		if !pause(s.cfg.StreamInterval) {
			return
		}
	}
}
