package load

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxFirstFailures is how many failures are kept verbatim for the report.
const maxFirstFailures = 10

// histMaxMicros is the largest latency the histograms track (1 hour);
// larger values are clamped.
const histMaxMicros = int64(time.Hour / time.Microsecond)

// Workload names used in failure records.
const (
	WorkloadShort  = "short"
	WorkloadStream = "stream"
	WorkloadHold   = "hold"
)

// Failure is one failed operation.
type Failure struct {
	At         time.Duration // when it was observed, since the start of the run
	OpStart    time.Duration // when the failed operation started
	Class      Class
	Workload   string
	ConnID     uint64
	NearReload bool
	Err        error
}

// ReloadEvent is one reload attempt. It either succeeded (OK), failed
// (neither OK nor Pending), or is Pending.
type ReloadEvent struct {
	Start, End time.Duration // since the start of the run; a pending reload ends with the run
	OK         bool
	// Pending (signal mode only) marks a reload still waiting for the new
	// generation when the run ended, e.g. queued by the daemon behind a
	// generation that drains long-lived connections. It is neither a
	// success nor a failure.
	Pending    bool
	ExitStatus int // command mode: exit status (-1 if it did not exit normally)
	OldPID     int // signal mode
	NewPID     int // signal mode
	Err        string
}

// Recorder collects every measurement of a run. It is safe for concurrent
// use. Latencies are recorded in microseconds.
type Recorder struct {
	start  time.Time
	window time.Duration

	// Reload state for classifying operations as near a reload: the
	// reload in progress and the last finished one (times since start).
	reloadMu        sync.Mutex
	reloadActive    bool
	reloadStart     time.Duration // of the reload in progress
	reloadFinished  bool
	lastReloadStart time.Duration
	lastReloadEnd   time.Duration

	// Live counters (read by the progress display).
	shortOK     atomic.Int64
	streamMsgs  atomic.Int64
	failures    atomic.Int64
	reloads     atomic.Int64
	reloadFails atomic.Int64
	reloadPend  atomic.Int64
	reloadSkip  atomic.Int64
	bytes       atomic.Int64

	mu            sync.Mutex
	connectSteady *hdrhistogram.Histogram
	connectNear   *hdrhistogram.Histogram
	rttSteady     *hdrhistogram.Histogram
	rttNear       *hdrhistogram.Histogram
	reloadDur     *hdrhistogram.Histogram
	failSteady    [numClasses]int64
	failNear      [numClasses]int64
	first         []Failure
	reloadEvents  []ReloadEvent
	timeline      *timeline
	streamConns   int64
	streamFails   int64
	shortFails    int64
}

// NewRecorder returns a recorder whose clock starts now. window is the
// reload window (see ReloadConfig.Window).
func NewRecorder(window time.Duration) *Recorder {
	r := &Recorder{
		start:         time.Now(),
		window:        window,
		connectSteady: newHist(),
		connectNear:   newHist(),
		rttSteady:     newHist(),
		rttNear:       newHist(),
		reloadDur:     newHist(),
		timeline:      newTimeline(100 * time.Millisecond),
	}
	return r
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxMicros, 3) }

func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := min(max(d.Microseconds(), 1), histMaxMicros)
	_ = h.RecordValue(us) // cannot fail: us is within the trackable range
}

// Since returns the time elapsed since the recorder was created.
func (r *Recorder) Since() time.Duration { return time.Since(r.start) }

// Start returns the wall-clock start of the run.
func (r *Recorder) Start() time.Time { return r.start }

// nearReload reports whether the operation [opStart, opEnd] overlaps the
// window [start, end + window] of the reload in progress or of the last
// finished one. Reloads run one at a time and operations are recorded as
// soon as they end, so no earlier reload can matter.
func (r *Recorder) nearReload(opStart, opEnd time.Duration) bool {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.reloadActive && r.reloadStart <= opEnd {
		return true
	}
	return r.reloadFinished && r.lastReloadStart <= opEnd && r.lastReloadEnd+r.window >= opStart
}

// ReloadBegin marks the start of a reload at t (since start).
func (r *Recorder) ReloadBegin(t time.Duration) {
	r.reloadMu.Lock()
	r.reloadActive, r.reloadStart = true, t
	r.reloadMu.Unlock()
}

// ReloadEnd records a finished reload.
func (r *Recorder) ReloadEnd(ev ReloadEvent) {
	r.reloadMu.Lock()
	r.reloadActive = false
	r.reloadFinished, r.lastReloadStart, r.lastReloadEnd = true, ev.Start, ev.End
	r.reloadMu.Unlock()
	r.reloads.Add(1)
	switch {
	case ev.Pending:
		r.reloadPend.Add(1)
	case !ev.OK:
		r.reloadFails.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloadEvents = append(r.reloadEvents, ev)
	if ev.OK {
		record(r.reloadDur, ev.End-ev.Start)
	}
}

// ReloadSkipped counts a reload tick skipped because the previous reload
// was still in progress.
func (r *Recorder) ReloadSkipped() { r.reloadSkip.Add(1) }

// Connect records a successful connect that started at opStart and took d.
func (r *Recorder) Connect(opStart, d time.Duration) {
	near := r.nearReload(opStart, opStart+d)
	r.mu.Lock()
	defer r.mu.Unlock()
	if near {
		record(r.connectNear, d)
	} else {
		record(r.connectSteady, d)
	}
}

// RTT records a verified round trip of n bytes from opStart to opEnd.
func (r *Recorder) RTT(workload string, opStart, opEnd time.Duration, n int) {
	near := r.nearReload(opStart, opEnd)
	d := opEnd - opStart
	if workload == WorkloadShort {
		r.shortOK.Add(1)
	} else {
		r.streamMsgs.Add(1)
	}
	r.bytes.Add(int64(n))
	r.mu.Lock()
	defer r.mu.Unlock()
	if near {
		record(r.rttNear, d)
	} else {
		record(r.rttSteady, d)
	}
	r.timeline.add(opEnd, d, false)
}

// StreamConnected counts a (re)connected stream.
func (r *Recorder) StreamConnected() {
	r.mu.Lock()
	r.streamConns++
	r.mu.Unlock()
}

// Fail records a failed operation that started at opStart; it is observed
// now. The failure class is derived from err.
func (r *Recorder) Fail(workload string, connID uint64, opStart time.Duration, err error) Failure {
	now := r.Since()
	f := Failure{
		At:         now,
		OpStart:    opStart,
		Class:      Classify(err),
		Workload:   workload,
		ConnID:     connID,
		NearReload: r.nearReload(opStart, now),
		Err:        err,
	}
	r.failures.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.NearReload {
		r.failNear[f.Class]++
	} else {
		r.failSteady[f.Class]++
	}
	switch workload {
	case WorkloadShort:
		r.shortFails++
	case WorkloadStream:
		r.streamFails++
	}
	if len(r.first) < maxFirstFailures {
		r.first = append(r.first, f)
	}
	r.timeline.add(now, 0, true)
	return f
}

// Progress is a snapshot of the live counters.
type Progress struct {
	Elapsed     time.Duration
	ShortOK     int64
	StreamMsgs  int64
	Failures    int64
	Reloads     int64
	ReloadFails int64
	ReloadPend  int64 // reloads still in progress when the run ended
	ReloadSkip  int64 // reload ticks skipped because a reload was in progress
	// ReloadActive is how long the reload in progress has lasted, 0 if
	// none is: a long one may be queued by the daemon (then pending at
	// the end of the run).
	ReloadActive time.Duration
	Bytes        int64
}

// Progress returns the live counters.
func (r *Recorder) Progress() Progress {
	now := r.Since()
	var active time.Duration
	r.reloadMu.Lock()
	if r.reloadActive {
		active = max(now-r.reloadStart, 1)
	}
	r.reloadMu.Unlock()
	return Progress{
		Elapsed:      now,
		ShortOK:      r.shortOK.Load(),
		StreamMsgs:   r.streamMsgs.Load(),
		Failures:     r.failures.Load(),
		Reloads:      r.reloads.Load(),
		ReloadFails:  r.reloadFails.Load(),
		ReloadPend:   r.reloadPend.Load(),
		ReloadSkip:   r.reloadSkip.Load(),
		ReloadActive: active,
		Bytes:        r.bytes.Load(),
	}
}

// FailureCount returns the number of failures so far per class, near
// reloads and in steady state.
func (r *Recorder) FailureCount() (steady, near [numClasses]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failSteady, r.failNear
}
