package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// HoldReport is the outcome of the hold mode.
type HoldReport struct {
	Requested    int     `json:"requested"`
	Opened       int     `json:"opened"`        // connected and echoed one message
	StillEchoing int     `json:"still_echoing"` // echoed a second message after the hold
	FirstError   string  `json:"first_error,omitempty"`
	OpenSeconds  float64 `json:"open_seconds"`
	HeldSeconds  float64 `json:"held_seconds"`
}

// runHold opens cfg.Hold connections (cfg.Concurrency at a time), checks
// each echoes one message, holds them for cfg.Duration, checks each still
// echoes, and closes them. Opening stops at the first failure.
func runHold(ctx context.Context, cfg *Config, target Target, rec *Recorder) (*HoldReport, time.Duration) {
	hr := &HoldReport{Requested: cfg.Hold}
	ids := newIDSource()
	var (
		mu       sync.Mutex
		conns    []*echoConn
		firstErr error
		failed   atomic.Bool
		next     atomic.Int64
	)
	defer func() {
		for _, ec := range conns {
			_ = ec.Close()
		}
	}()
	fail := func(id uint64, t0 time.Duration, err error) {
		rec.Fail(WorkloadHold, id, t0, err)
		failed.Store(true)
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}

	// Open.
	var wg sync.WaitGroup
	for range min(cfg.Concurrency, cfg.Hold) {
		wg.Go(func() {
			for !failed.Load() && ctx.Err() == nil && next.Add(1) <= int64(cfg.Hold) {
				id := ids.id()
				t0 := rec.Since()
				c, err := dial(target, cfg.Timeout)
				if err != nil {
					fail(id, t0, err)
					return
				}
				t1 := rec.Since()
				rec.Connect(t0, t1-t0)
				ec := newEchoConn(c, id, cfg.Size, cfg.Timeout)
				if err := ec.roundTrip(); err != nil {
					_ = ec.Close()
					fail(id, t0, err)
					return
				}
				rec.RTT(WorkloadHold, t1, rec.Since(), cfg.Size)
				mu.Lock()
				conns = append(conns, ec) // closed by the deferred loop
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	opened := rec.Since()
	hr.OpenSeconds = opened.Seconds()
	hr.Opened = len(conns)
	if firstErr != nil {
		hr.FirstError = firstErr.Error()
	}

	// Hold.
	t := time.NewTimer(cfg.Duration)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	hr.HeldSeconds = (rec.Since() - opened).Seconds()

	// Check that every opened connection still echoes.
	var still atomic.Int64
	next.Store(0)
	for range min(cfg.Concurrency, max(len(conns), 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				ec := conns[i]
				t0 := rec.Since()
				if err := ec.roundTrip(); err != nil {
					rec.Fail(WorkloadHold, ec.id, t0, err)
					continue
				}
				rec.RTT(WorkloadHold, t0, rec.Since(), cfg.Size)
				still.Add(1)
			}
		})
	}
	wg.Wait()
	hr.StillEchoing = int(still.Load())
	return hr, rec.Since()
}
