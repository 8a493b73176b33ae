package load

import (
	"context"
	"fmt"
	"io"
	"time"
)

// showProgress rewrites one status line on w every interval until ctx is
// done, then erases it.
func showProgress(ctx context.Context, w io.Writer, rec *Recorder, interval time.Duration) {
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := rec.Progress()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\x1b[K")
			return
		case <-t.C:
			cur := rec.Progress()
			fmt.Fprint(w, "\r\x1b[K"+progressLine(prev, cur))
			prev = cur
		}
	}
}

// progressLine formats the live status from two snapshots.
func progressLine(prev, cur Progress) string {
	dt := (cur.Elapsed - prev.Elapsed).Seconds()
	msgs := cur.ShortOK + cur.StreamMsgs
	var rate, mbps float64
	if dt > 0 {
		rate = float64(msgs-prev.ShortOK-prev.StreamMsgs) / dt
		mbps = float64(cur.Bytes-prev.Bytes) / dt / 1e6
	}
	line := fmt.Sprintf("%6.1fs  short ok %d  stream msgs %d  %.0f msg/s  %.2f MB/s  errors %d  reloads %d (%d failed",
		cur.Elapsed.Seconds(), cur.ShortOK, cur.StreamMsgs, rate, mbps, cur.Failures, cur.Reloads, cur.ReloadFails)
	if cur.ReloadPend > 0 {
		line += fmt.Sprintf(", %d pending", cur.ReloadPend)
	}
	if cur.ReloadActive > 0 {
		line += fmt.Sprintf(", 1 in progress for %.1fs", cur.ReloadActive.Seconds())
	}
	if cur.ReloadSkip > 0 {
		line += fmt.Sprintf(", %d ticks skipped", cur.ReloadSkip)
	}
	return line + ")"
}
