package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// shortLoad drives short connections: connect, one verified round trip,
// close.
type shortLoad struct {
	cfg    *Config
	target Target
	rec    *Recorder
	ids    *idSource
	issued atomic.Int64
	begin  time.Time // reference for the rate schedule
}

// run starts cfg.Concurrency workers and returns when all have stopped:
// when ctx is done, or when cfg.Count connections have been issued and
// completed. An operation in flight when ctx is done is completed (it is
// bounded by cfg.Timeout), not abandoned.
func (s *shortLoad) run(ctx context.Context) {
	s.begin = time.Now()
	var wg sync.WaitGroup
	for range s.cfg.Concurrency {
		wg.Go(func() { s.worker(ctx) })
	}
	wg.Wait()
}

func (s *shortLoad) worker(ctx context.Context) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		n := s.issued.Add(1)
		if s.cfg.Count > 0 && n > s.cfg.Count {
			return
		}
		if s.cfg.Rate > 0 {
			due := s.begin.Add(time.Duration(float64(n-1) / s.cfg.Rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
		}
		s.once()
	}
}

// once performs one short connection and records its outcome.
func (s *shortLoad) once() {
	id := s.ids.id()
	t0 := s.rec.Since()
	c, err := dial(s.target, s.cfg.Timeout)
	if err != nil {
		s.rec.Fail(WorkloadShort, id, t0, err)
		return
	}
	t1 := s.rec.Since()
	s.rec.Connect(t0, t1-t0)
	ec := newEchoConn(c, id, s.cfg.Size, s.cfg.Timeout)
	err = ec.roundTrip()
	t2 := s.rec.Since()
	cerr := ec.Close()
	switch {
	case err != nil:
		s.rec.Fail(WorkloadShort, id, t0, err)
	case cerr != nil:
		s.rec.Fail(WorkloadShort, id, t0, phaseErr(PhaseClose, cerr))
	default:
		s.rec.RTT(WorkloadShort, t1, t2, s.cfg.Size)
	}
}
