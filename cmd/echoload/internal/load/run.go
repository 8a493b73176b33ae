package load

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Options are the presentation options of a run.
type Options struct {
	// Progress, if not nil, receives a live one-line progress display
	// (meant for a terminal: it uses carriage returns and ANSI erase).
	Progress io.Writer
	// ProgressInterval is the refresh period of the progress line
	// (default 250ms).
	ProgressInterval time.Duration
	// NoFileLimit is copied into the report.
	NoFileLimit uint64
}

// Run validates cfg, runs the workloads it describes (or the hold mode),
// and returns the report. It returns an error only if the run could not be
// set up; failures of the server under test are in the report
// (Report.Pass). Cancelling ctx ends the run early; operations in flight
// still complete (each is bounded by cfg.Timeout) and are reported.
func Run(ctx context.Context, cfg Config, opts Options) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	target, err := ParseTarget(cfg.Addr)
	if err != nil {
		return nil, err
	}
	rec := NewRecorder(cfg.Reload.Window)
	var reloader *Reloader
	if cfg.Reload.Enabled() {
		if reloader, err = NewReloader(cfg.Reload, rec); err != nil {
			return nil, fmt.Errorf("reloads: %w", err)
		}
	}

	// Background goroutines: reloads and progress display. They stop
	// when the workload is over.
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	var bg sync.WaitGroup
	if reloader != nil {
		bg.Go(func() { reloader.Run(bgCtx) })
	}
	if opts.Progress != nil {
		bg.Go(func() { showProgress(bgCtx, opts.Progress, rec, opts.ProgressInterval) })
	}

	var rep *Report
	if cfg.Hold > 0 {
		hr, elapsed := runHold(ctx, &cfg, target, rec)
		stopBackground()
		bg.Wait()
		rep = rec.report(&cfg, elapsed)
		rep.Mode = "hold"
		rep.Hold = hr
		rep.Pass = rep.Pass && hr.Opened == hr.Requested && hr.StillEchoing == hr.Opened
	} else {
		elapsed := runLoad(ctx, &cfg, target, rec)
		stopBackground()
		bg.Wait()
		rep = rec.report(&cfg, elapsed)
	}
	rep.NoFileLimit = opts.NoFileLimit
	return rep, nil
}

// runLoad runs the short-connection and stream workloads until the
// duration elapses, the count is reached, or ctx is done. It returns the
// elapsed time.
func runLoad(ctx context.Context, cfg *Config, target Target, rec *Recorder) time.Duration {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var cancelTimeout context.CancelFunc
		runCtx, cancelTimeout = context.WithTimeout(runCtx, cfg.Duration)
		defer cancelTimeout()
	}
	ids := newIDSource()
	var wg sync.WaitGroup
	if cfg.Streams > 0 {
		s := &streamLoad{cfg: cfg, target: target, rec: rec, ids: ids}
		wg.Go(func() { s.run(runCtx) })
	}
	if cfg.Concurrency > 0 {
		s := &shortLoad{cfg: cfg, target: target, rec: rec, ids: ids}
		wg.Go(func() {
			s.run(runCtx)
			cancel() // -count reached: the whole run is over
		})
	}
	wg.Wait()
	return rec.Since()
}
