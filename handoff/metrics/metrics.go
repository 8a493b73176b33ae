//go:build linux

package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
)

// Options configure [New].
type Options struct {
	// Namespace prefixes the name of every series of this package but the
	// go_* and process_* ones. Empty means "echod".
	Namespace string
	// Version is the build's version: the version label of
	// <namespace>_build_info.
	Version string
}

// Metrics is one process's metrics. Create it with [New] before
// handoff.Run, give it its hooks and carry (see the package
// documentation) and [Metrics.Attach] it to the generation. Its methods
// are safe for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	version string
	d       descs

	mu          sync.Mutex
	g           generation
	stats       func() daemon.Stats
	c           carried   // the carried series (see carried)
	adoptedIn   bool      // the previous generation's hand-over is counted in c
	lastOK      bool      // the last reload (or the start) succeeded
	lastOKAt    time.Time // when this generation committed
	started     time.Time // the start of the upgrade under way
	startedMono int64     // the same, CLOCK_MONOTONIC in ns, for the next generation
}

// generation is what Metrics reads of a *handoff.Generation.
type generation interface {
	Number() int
	HasParent() bool
	Carried() []byte
	Adopted() <-chan struct{}
	AdoptedResult() handoff.HandOverResult
}

// New returns the metrics of this process, with the Go runtime's and the
// process's collectors registered.
func New(opts Options) *Metrics {
	if opts.Namespace == "" {
		opts.Namespace = "echod"
	}
	m := &Metrics{reg: prometheus.NewRegistry(), version: opts.Version, d: newDescs(opts.Namespace), c: newCarried()}
	m.reg.MustRegister(
		collector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics (GET /metrics, whatever the path).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is where the metrics are registered; a program may add its
// own collectors to it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Hooks returns the hooks that count reloads, for handoff.Options.Hooks
// (a program with hooks of its own calls these from them). Starting and
// Failed run in the generation that starts an upgrade; Ready and
// PreviousExited in the one it starts, which counts the success.
func (m *Metrics) Hooks() handoff.Hooks {
	return handoff.Hooks{Starting: m.starting, Failed: m.failed, Ready: m.ready, PreviousExited: m.previousExited}
}

// Attach binds m to this process's generation and to its server's
// counters, read at each scrape (nil: no connection series), and takes
// the series the previous generation carried. Call it once, before the
// generation is ready: in handoff.Config.NewServer. An error says what
// was carried could not be read: those series start at zero; the rest
// works.
func (m *Metrics) Attach(g *handoff.Generation, stats func() daemon.Stats) error {
	return m.attach(g, stats)
}

func (m *Metrics) attach(g generation, stats func() daemon.Stats) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.g, m.stats = g, stats
	b := g.Carried()
	if len(b) == 0 {
		return nil
	}
	c, err := decodeCarried(b)
	m.c = c // what could be read
	if err != nil {
		return fmt.Errorf("metrics: from generation %d: %w", g.Number()-1, err)
	}
	return nil
}

// Carry returns the series the next generation goes on from (see the
// package documentation): give it as handoff.Options.Carry.
func (m *Metrics) Carry() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.countAdoptedLocked()
	c := m.c
	c.Version = carryVersion
	c.UpgradeStart = m.startedMono
	b, err := json.Marshal(c)
	if err != nil {
		// Finite numbers only: cannot happen. The next generation then
		// starts from zero, as from a release without it.
		return nil
	}
	return b
}

func (m *Metrics) starting() {
	now, mono := time.Now(), monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started, m.startedMono = now, mono
}

func (m *Metrics) failed(error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.c.ReloadsFailed++
	m.lastOK = false
	if !m.started.IsZero() {
		m.c.ReloadDuration.observe(time.Since(m.started).Seconds())
	}
	m.started, m.startedMono = time.Time{}, 0
}

// ready counts the reload that started this generation (if one did): it
// succeeded, since this generation serves.
func (m *Metrics) ready() {
	now, mono := time.Now(), monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastOK, m.lastOKAt = true, now
	if m.g == nil || !m.g.HasParent() {
		return
	}
	m.c.ReloadsOK++
	if start := m.c.UpgradeStart; start > 0 && mono >= start {
		m.c.ReloadDuration.observe(float64(mono-start) / 1e9)
	}
	m.c.UpgradeStart = 0
}

func (m *Metrics) previousExited(took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.c.DrainDuration.observe(took.Seconds())
}

// countAdoptedLocked counts the previous generation's hand-over once it
// ended.
func (m *Metrics) countAdoptedLocked() {
	if m.adoptedIn || m.g == nil {
		return
	}
	select {
	case <-m.g.Adopted():
	default:
		return
	}
	m.adoptedIn = true
	res := m.g.AdoptedResult()
	m.c.HandedOver += uint64(res.Moved)
	if res.Took > 0 {
		m.c.HandOverDuration.observe(res.Took.Seconds())
	}
}

// monotonic reads CLOCK_MONOTONIC, which every process of the machine
// shares (0 if it cannot be read).
func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// carryVersion is the version of carried's encoding.
const carryVersion = 1

// carried are the series a generation passes to the next.
type carried struct {
	Version          int       `json:"v"`
	ReloadsOK        uint64    `json:"reloads_ok"`
	ReloadsFailed    uint64    `json:"reloads_failed"`
	HandedOver       uint64    `json:"handed_over"`
	ReloadDuration   histogram `json:"reload_duration"`
	HandOverDuration histogram `json:"handover_duration"`
	DrainDuration    histogram `json:"drain_duration"`
	// UpgradeStart is when the upgrade that carries this started
	// (CLOCK_MONOTONIC, ns; 0: unknown).
	UpgradeStart int64 `json:"upgrade_start,omitempty"`
}

// The histograms' buckets, in seconds.
var (
	reloadBuckets   = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	handOverBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	drainBuckets    = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900}
)

func newCarried() carried {
	return carried{
		ReloadDuration:   newHistogram(reloadBuckets),
		HandOverDuration: newHistogram(handOverBuckets),
		DrainDuration:    newHistogram(drainBuckets),
	}
}

// decodeCarried decodes what a previous generation carried. A histogram
// whose buckets differ from this build's starts at zero (and is
// reported); on any other error, everything does.
func decodeCarried(b []byte) (carried, error) {
	var in carried
	if err := json.Unmarshal(b, &in); err != nil {
		return newCarried(), fmt.Errorf("carried series: %w", err)
	}
	if in.Version != carryVersion {
		return newCarried(), fmt.Errorf("carried series of version %d (want %d): not read", in.Version, carryVersion)
	}
	out := newCarried()
	out.ReloadsOK, out.ReloadsFailed, out.HandedOver, out.UpgradeStart = in.ReloadsOK, in.ReloadsFailed, in.HandedOver, in.UpgradeStart
	var errs []error
	for _, h := range []struct {
		name     string
		from, to *histogram
	}{
		{"reload_duration", &in.ReloadDuration, &out.ReloadDuration},
		{"handover_duration", &in.HandOverDuration, &out.HandOverDuration},
		{"drain_duration", &in.DrainDuration, &out.DrainDuration},
	} {
		if err := h.to.restore(*h.from); err != nil {
			errs = append(errs, fmt.Errorf("carried histogram %s: %w", h.name, err))
		}
	}
	return out, errors.Join(errs...)
}

// collector collects Metrics' own series.
type collector struct{ m *Metrics }

func (c collector) Describe(ch chan<- *prometheus.Desc) { c.m.d.describe(ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m, d := c.m, &c.m.d
	m.mu.Lock()
	m.countAdoptedLocked()
	g, stats, cr, lastOK, lastOKAt := m.g, m.stats, m.c, m.lastOK, m.lastOKAt
	m.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(d.buildInfo, prometheus.GaugeValue, 1, m.version, runtime.Version())
	if g != nil {
		ch <- prometheus.MustNewConstMetric(d.generation, prometheus.GaugeValue, float64(g.Number()))
	}
	if stats != nil {
		st := stats()
		ch <- prometheus.MustNewConstMetric(d.open, prometheus.GaugeValue, float64(st.Active))
		ch <- prometheus.MustNewConstMetric(d.accepted, prometheus.CounterValue, float64(st.Accepted))
		ch <- prometheus.MustNewConstMetric(d.closed, prometheus.CounterValue, float64(st.Closed))
		ch <- prometheus.MustNewConstMetric(d.adopted, prometheus.CounterValue, float64(st.Adopted))
		ch <- prometheus.MustNewConstMetric(d.forceClosed, prometheus.CounterValue, float64(st.ForceClosed))
		ch <- prometheus.MustNewConstMetric(d.bytes, prometheus.CounterValue, float64(st.Bytes))
	}
	ch <- prometheus.MustNewConstMetric(d.handedOver, prometheus.CounterValue, float64(cr.HandedOver))
	ch <- prometheus.MustNewConstMetric(d.reloads, prometheus.CounterValue, float64(cr.ReloadsOK), "success")
	ch <- prometheus.MustNewConstMetric(d.reloads, prometheus.CounterValue, float64(cr.ReloadsFailed), "failure")
	ok, at := 0.0, 0.0
	if lastOK {
		ok = 1
	}
	if !lastOKAt.IsZero() {
		at = float64(lastOKAt.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(d.lastOK, prometheus.GaugeValue, ok)
	ch <- prometheus.MustNewConstMetric(d.lastOKAt, prometheus.GaugeValue, at)
	ch <- cr.ReloadDuration.metric(d.reloadDuration)
	ch <- cr.HandOverDuration.metric(d.handOverDuration)
	ch <- cr.DrainDuration.metric(d.drainDuration)
}

// descs describe the series of collector.
type descs struct {
	buildInfo, generation                               *prometheus.Desc
	open, accepted, closed, adopted, forceClosed, bytes *prometheus.Desc
	handedOver, reloads, lastOK, lastOKAt               *prometheus.Desc
	reloadDuration, handOverDuration, drainDuration     *prometheus.Desc
}

func newDescs(ns string) descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
	}
	return descs{
		buildInfo:        d("build_info", "Always 1; the labels name the build.", "version", "goversion"),
		generation:       d("generation", "This process's generation: 1 for the process that started the chain, one more for each reload."),
		open:             d("connections_open", "Connections being served now."),
		accepted:         d("connections_accepted_total", "Connections this process accepted (per process)."),
		closed:           d("connections_closed_total", "Connections this process finished serving, closed by either end (per process)."),
		adopted:          d("connections_adopted_total", "Live connections this process took over from the previous generation or from systemd's fd store (per process)."),
		forceClosed:      d("connections_force_closed_total", "Connections cut by a forced stop or the drain timeout (per process)."),
		bytes:            d("bytes_echoed_total", "Bytes echoed by this process (per process)."),
		handedOver:       d("connections_handed_over_total", "Live connections moved from a generation to the next, by every reload since the first generation (carried)."),
		reloads:          d("reloads_total", "Reloads by outcome, since the first generation (carried).", "result"),
		lastOK:           d("last_reload_successful", "1 if the last reload (or the start) of this generation succeeded, 0 if it failed."),
		lastOKAt:         d("last_reload_success_timestamp_seconds", "When the serving generation committed: the last successful reload, or the start."),
		reloadDuration:   d("reload_duration_seconds", "From a reload's start to the new generation's commit, or to its failure (carried)."),
		handOverDuration: d("handover_duration_seconds", "Live-connection hand-overs: from the new generation's ready message to its last connection resumed (carried)."),
		drainDuration:    d("drain_duration_seconds", "From a new generation's commit until the old one exited, having moved and drained its connections (carried)."),
	}
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{
		d.buildInfo, d.generation, d.open, d.accepted, d.closed, d.adopted, d.forceClosed, d.bytes,
		d.handedOver, d.reloads, d.lastOK, d.lastOKAt, d.reloadDuration, d.handOverDuration, d.drainDuration,
	} {
		ch <- x
	}
}
