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
// still complete (each is bounded by cfg.Timeout) and are reported. When
// the run ends, a reload command in progress still runs to completion
// (bounded by cfg.Reload.Timeout); a signal reload still waiting for the
// new generation is reported as pending.
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

	// The run's context: done when the load's duration ends, -count is
	// reached, the hold is over, or ctx is done. Reloads stop being
	// triggered then; the reload in progress is recorded as pending
	// (signal mode) or allowed to complete (command mode, bounded by the
	// reload timeout).
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	if cfg.Hold == 0 && cfg.Duration > 0 {
		var cancelTimeout context.CancelFunc
		runCtx, cancelTimeout = context.WithTimeout(runCtx, cfg.Duration)
		defer cancelTimeout()
	}
	var reloads sync.WaitGroup
	if reloader != nil {
		reloads.Go(func() { reloader.Run(runCtx) })
	}
	// The progress display lasts until the reloads are over too.
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	var progress sync.WaitGroup
	if opts.Progress != nil {
		progress.Go(func() { showProgress(progressCtx, opts.Progress, rec, opts.ProgressInterval) })
	}
	finish := func() {
		endRun()
		reloads.Wait()
		stopProgress()
		progress.Wait()
	}

	var rep *Report
	if cfg.Hold > 0 {
		hr, elapsed := runHold(ctx, &cfg, target, rec)
		finish()
		rep = rec.report(&cfg, elapsed)
		rep.Mode = "hold"
		rep.Hold = hr
		rep.Pass = rep.Pass && hr.Opened == hr.Requested && hr.StillEchoing == hr.Opened
	} else {
		elapsed := runLoad(runCtx, endRun, &cfg, target, rec)
		finish()
		rep = rec.report(&cfg, elapsed)
	}
	rep.NoFileLimit = opts.NoFileLimit
	return rep, nil
}

// runLoad runs the short-connection and stream workloads until runCtx is
// done (the duration elapsed or the run was cancelled) or the count is
// reached, which calls endRun. It returns the elapsed time.
func runLoad(runCtx context.Context, endRun context.CancelFunc, cfg *Config, target Target, rec *Recorder) time.Duration {
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
			endRun() // -count reached: the whole run is over
		})
	}
	wg.Wait()
	return rec.Since()
}
