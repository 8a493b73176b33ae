package load

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ReportVersion is bumped when a JSON field changes meaning or disappears.
const ReportVersion = 1

// Report is everything measured in a run. Field names in JSON are stable.
// Durations are in milliseconds (suffix _ms) or seconds (suffix _seconds).
type Report struct {
	Version        int             `json:"version"`
	Mode           string          `json:"mode"` // "load" or "hold"
	Pass           bool            `json:"pass"`
	Config         ConfigReport    `json:"config"`
	StartedAt      time.Time       `json:"started_at"`
	ElapsedSeconds float64         `json:"elapsed_seconds"`
	NoFileLimit    uint64          `json:"nofile_limit"`
	Short          ShortReport     `json:"short"`
	Streams        StreamReport    `json:"streams"`
	Hold           *HoldReport     `json:"hold,omitempty"`
	Messages       int64           `json:"messages"`
	Bytes          int64           `json:"bytes"`
	Throughput     Throughput      `json:"throughput"`
	Connect        LatencyGroup    `json:"connect_latency"`
	RTT            LatencyGroup    `json:"rtt_latency"`
	Failures       FailureReport   `json:"failures"`
	FirstFailures  []FailureRecord `json:"first_failures"`
	Reloads        ReloadReport    `json:"reloads"`
	Timeline       TimelineReport  `json:"timeline"`
}

// ConfigReport echoes the run's configuration.
type ConfigReport struct {
	Addr             string  `json:"addr"`
	DurationSeconds  float64 `json:"duration_seconds"`
	Count            int64   `json:"count"`
	Rate             float64 `json:"rate"`
	Concurrency      int     `json:"concurrency"`
	Size             int     `json:"size"`
	Streams          int     `json:"streams"`
	StreamIntervalMS float64 `json:"stream_interval_ms"`
	TimeoutMS        float64 `json:"timeout_ms"` // connect and each read/write (not reloads)
	Hold             int     `json:"hold"`
	ReloadMode       string  `json:"reload_mode"` // "", "cmd" or "signal"
	ReloadCmd        string  `json:"reload_cmd,omitempty"`
	ReloadSignal     string  `json:"reload_signal,omitempty"`
	ReloadPidFile    string  `json:"reload_pid_file,omitempty"`
	ReloadEveryMS    float64 `json:"reload_every_ms"`
	ReloadWindowMS   float64 `json:"reload_window_ms"`
	ReloadTimeoutMS  float64 `json:"reload_timeout_ms"`
}

// ShortReport counts short connections.
type ShortReport struct {
	Attempted int64 `json:"attempted"`
	OK        int64 `json:"ok"`
	Failed    int64 `json:"failed"`
}

// StreamReport counts long-lived stream activity.
type StreamReport struct {
	Streams     int   `json:"streams"`
	Connections int64 `json:"connections"` // successful connects, reconnects included
	Messages    int64 `json:"messages"`    // verified round trips
	Failed      int64 `json:"failed"`
}

// Throughput of verified echoes.
type Throughput struct {
	MessagesPerSec float64 `json:"messages_per_sec"`
	MBPerSec       float64 `json:"mb_per_sec"` // verified echoed bytes, one direction, 10^6 bytes
}

// Latency summarises a histogram.
type Latency struct {
	Count  int64   `json:"count"`
	MinMS  float64 `json:"min_ms"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// LatencyGroup splits a latency into all, steady-state and near-reload.
type LatencyGroup struct {
	All        Latency `json:"all"`
	Steady     Latency `json:"steady"`
	NearReload Latency `json:"near_reload"`
}

// FailureCounts counts failures per class.
type FailureCounts struct {
	ConnectRefused int64 `json:"connect_refused"`
	ConnectTimeout int64 `json:"connect_timeout"`
	Reset          int64 `json:"reset"`
	EOF            int64 `json:"eof"`
	Timeout        int64 `json:"timeout"`
	Corrupt        int64 `json:"corrupt"`
	Other          int64 `json:"other"`
	Total          int64 `json:"total"`
}

// Get returns the count of class c.
func (f FailureCounts) Get(c Class) int64 {
	return [numClasses]int64{f.ConnectRefused, f.ConnectTimeout, f.Reset, f.EOF, f.Timeout, f.Corrupt, f.Other}[c]
}

func countsOf(a [numClasses]int64) FailureCounts {
	f := FailureCounts{
		ConnectRefused: a[ConnectRefused], ConnectTimeout: a[ConnectTimeout], Reset: a[Reset],
		EOF: a[EOF], Timeout: a[Timeout], Corrupt: a[Corrupt], Other: a[Other],
	}
	for _, n := range a {
		f.Total += n
	}
	return f
}

// FailureReport splits failure counts into all, steady-state and
// near-reload.
type FailureReport struct {
	All        FailureCounts `json:"all"`
	Steady     FailureCounts `json:"steady"`
	NearReload FailureCounts `json:"near_reload"`
}

// FailureRecord is one of the first failures, verbatim.
type FailureRecord struct {
	AtMS       float64 `json:"t_ms"`        // when observed, since start
	OpStartMS  float64 `json:"op_start_ms"` // when the failed operation started
	Class      string  `json:"class"`
	Workload   string  `json:"workload"`
	ConnID     string  `json:"conn_id"`
	NearReload bool    `json:"near_reload"`
	Error      string  `json:"error"`
}

// ReloadReport summarises the reloads. Count = OK + Failed + Pending.
type ReloadReport struct {
	Mode   string `json:"mode"`
	Count  int    `json:"count"`
	OK     int    `json:"ok"`
	Failed int    `json:"failed"`
	// Pending counts reloads (signal mode) still waiting for the new
	// generation when the run ended, e.g. queued by the daemon behind a
	// generation that drains long-lived connections; they do not fail
	// the run.
	Pending int `json:"pending"`
	// Skipped counts reload ticks (every -reload-every) skipped because
	// the previous reload was still in progress: reloads never overlap.
	Skipped  int64               `json:"skipped"`
	Duration Latency             `json:"duration"` // successful reloads only
	Failures []ReloadEventReport `json:"first_failures"`
	Events   []ReloadEventReport `json:"events"`
}

// ReloadEventReport is one reload.
type ReloadEventReport struct {
	StartMS    float64 `json:"start_ms"`
	EndMS      float64 `json:"end_ms"`
	DurationMS float64 `json:"duration_ms"`
	OK         bool    `json:"ok"`
	Pending    bool    `json:"pending"`     // still in progress when the run ended: neither ok nor failed; end_ms is the end of the run
	ExitStatus int     `json:"exit_status"` // command mode; -1 otherwise or if killed
	OldPID     int     `json:"old_pid,omitempty"`
	NewPID     int     `json:"new_pid,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// TimelineReport is RTT latency over time.
type TimelineReport struct {
	BucketMS float64         `json:"bucket_ms"`
	Points   []TimelinePoint `json:"points"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count:  h.TotalCount(),
		MinMS:  usToMS(h.Min()),
		MeanMS: h.Mean() / 1000,
		P50MS:  usToMS(h.ValueAtQuantile(50)),
		P90MS:  usToMS(h.ValueAtQuantile(90)),
		P99MS:  usToMS(h.ValueAtQuantile(99)),
		P999MS: usToMS(h.ValueAtQuantile(99.9)),
		MaxMS:  usToMS(h.Max()),
	}
}

func groupOf(steady, near *hdrhistogram.Histogram) LatencyGroup {
	all := steady.Clone()
	all.Merge(near)
	return LatencyGroup{All: latencyOf(all), Steady: latencyOf(steady), NearReload: latencyOf(near)}
}

func configReport(cfg *Config) ConfigReport {
	r := ConfigReport{
		Addr:             cfg.Addr,
		DurationSeconds:  cfg.Duration.Seconds(),
		Count:            cfg.Count,
		Rate:             cfg.Rate,
		Concurrency:      cfg.Concurrency,
		Size:             cfg.Size,
		Streams:          cfg.Streams,
		StreamIntervalMS: ms(cfg.StreamInterval),
		TimeoutMS:        ms(cfg.Timeout),
		Hold:             cfg.Hold,
		ReloadMode:       cfg.Reload.Mode(),
		ReloadCmd:        cfg.Reload.Cmd,
		ReloadPidFile:    cfg.Reload.PidFile,
	}
	if cfg.Reload.Enabled() {
		r.ReloadSignal = cfg.Reload.Signal
		r.ReloadEveryMS = ms(cfg.Reload.Every)
		r.ReloadWindowMS = ms(cfg.Reload.Window)
		r.ReloadTimeoutMS = ms(cfg.Reload.Timeout)
	}
	return r
}

// report builds the report of a finished run that lasted elapsed.
func (r *Recorder) report(cfg *Config, elapsed time.Duration) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &Report{
		Version:        ReportVersion,
		Mode:           "load",
		Config:         configReport(cfg),
		StartedAt:      r.start,
		ElapsedSeconds: elapsed.Seconds(),
		Connect:        groupOf(r.connectSteady, r.connectNear),
		RTT:            groupOf(r.rttSteady, r.rttNear),
		FirstFailures:  []FailureRecord{},
		Timeline:       TimelineReport{BucketMS: ms(r.timeline.width), Points: r.timeline.points()},
	}
	var all [numClasses]int64
	for c := range numClasses {
		all[c] = r.failSteady[c] + r.failNear[c]
	}
	rep.Failures = FailureReport{All: countsOf(all), Steady: countsOf(r.failSteady), NearReload: countsOf(r.failNear)}
	shortOK := r.shortOK.Load()
	rep.Short = ShortReport{Attempted: shortOK + r.shortFails, OK: shortOK, Failed: r.shortFails}
	rep.Streams = StreamReport{Streams: cfg.Streams, Connections: r.streamConns, Messages: r.streamMsgs.Load(), Failed: r.streamFails}
	rep.Messages = shortOK + rep.Streams.Messages
	rep.Bytes = r.bytes.Load()
	if s := elapsed.Seconds(); s > 0 {
		rep.Throughput = Throughput{MessagesPerSec: float64(rep.Messages) / s, MBPerSec: float64(rep.Bytes) / s / 1e6}
	}
	for _, f := range r.first {
		rep.FirstFailures = append(rep.FirstFailures, FailureRecord{
			AtMS:       ms(f.At),
			OpStartMS:  ms(f.OpStart),
			Class:      f.Class.String(),
			Workload:   f.Workload,
			ConnID:     fmt.Sprintf("%#x", f.ConnID),
			NearReload: f.NearReload,
			Error:      f.Err.Error(),
		})
	}
	rep.Reloads = ReloadReport{
		Mode:     cfg.Reload.Mode(),
		Skipped:  r.reloadSkip.Load(),
		Duration: latencyOf(r.reloadDur),
		Failures: []ReloadEventReport{},
		Events:   make([]ReloadEventReport, 0, len(r.reloadEvents)),
	}
	for _, ev := range r.reloadEvents {
		er := ReloadEventReport{
			StartMS: ms(ev.Start), EndMS: ms(ev.End), DurationMS: ms(ev.End - ev.Start),
			OK: ev.OK, Pending: ev.Pending, ExitStatus: ev.ExitStatus, OldPID: ev.OldPID, NewPID: ev.NewPID, Error: ev.Err,
		}
		rep.Reloads.Count++
		switch {
		case ev.OK:
			rep.Reloads.OK++
		case ev.Pending:
			rep.Reloads.Pending++
		default:
			rep.Reloads.Failed++
			if len(rep.Reloads.Failures) < maxFirstFailures {
				rep.Reloads.Failures = append(rep.Reloads.Failures, er)
			}
		}
		rep.Reloads.Events = append(rep.Reloads.Events, er)
	}
	rep.Pass = rep.Failures.All.Total == 0 && rep.Reloads.Failed == 0
	return rep
}

// WriteJSON writes the report as indented JSON to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
