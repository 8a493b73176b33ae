//go:build linux

package metrics

import (
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
)

// fakeGen stands for a *handoff.Generation: the state machine of the
// counters is tested here; that they cross real generations, in
// cmd/echod (TestMetricsAcrossReloads).
type fakeGen struct {
	n       int
	carried []byte
	adopted chan struct{}
	res     handoff.HandOverResult
}

func newFakeGen(n int, carried []byte) *fakeGen {
	return &fakeGen{n: n, carried: carried, adopted: make(chan struct{})}
}

func (g *fakeGen) Number() int                           { return g.n }
func (g *fakeGen) HasParent() bool                       { return g.n > 1 }
func (g *fakeGen) Carried() []byte                       { return g.carried }
func (g *fakeGen) Adopted() <-chan struct{}              { return g.adopted }
func (g *fakeGen) AdoptedResult() handoff.HandOverResult { return g.res }

// values gathers m's series: name{label="value",...} → value, and
// name_count / name_sum for histograms.
func values(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			name := mf.GetName() + labels(mt.GetLabel())
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[name] = mt.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name] = mt.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()+"_count"] = float64(mt.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"] = mt.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func labels(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	var parts []string
	for _, l := range ls {
		parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func check(t *testing.T, when string, have map[string]float64, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		if h, ok := have[k]; !ok || h != w {
			t.Errorf("%s: %s = %v (present: %v), want %v", when, k, h, ok, w)
		}
	}
}

// TestCarriedAcrossGenerations: generation 1 fails a reload and starts
// another; generation 2, started by it, counts the success, goes on from
// what generation 1 carried, counts the connections it adopted, its
// reload's duration (from the start generation 1 carried), the
// hand-over's and the previous generation's drain; generation 3 goes on
// from that.
func TestCarriedAcrossGenerations(t *testing.T) {
	stats := daemon.Stats{Active: 2, Accepted: 7, Closed: 5, Adopted: 1, Bytes: 1234, ForceClosed: 1}
	m1 := New(Options{Version: "v1"})
	g1 := newFakeGen(1, nil)
	if err := m1.attach(g1, func() daemon.Stats { return stats }); err != nil {
		t.Fatal(err)
	}
	h1 := m1.Hooks()
	h1.Ready()
	check(t, "generation 1", values(t, m1), map[string]float64{
		"echod_generation":                                                     1,
		"echod_connections_open":                                               2,
		"echod_connections_accepted_total":                                     7,
		"echod_connections_closed_total":                                       5,
		"echod_connections_adopted_total":                                      1,
		"echod_connections_force_closed_total":                                 1,
		"echod_bytes_echoed_total":                                             1234,
		`echod_reloads_total{result="success"}`:                                0,
		`echod_reloads_total{result="failure"}`:                                0,
		"echod_last_reload_successful":                                         1,
		"echod_reload_duration_seconds_count":                                  0,
		`echod_build_info{goversion="` + runtime.Version() + `",version="v1"}`: 1,
	})
	if at := values(t, m1)["echod_last_reload_success_timestamp_seconds"]; at < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("generation 1: last success at %v, want its start", at)
	}

	h1.Starting()
	h1.Failed(errors.New("bad config"))
	check(t, "generation 1 after a failed reload", values(t, m1), map[string]float64{
		`echod_reloads_total{result="failure"}`: 1,
		"echod_last_reload_successful":          0,
		"echod_reload_duration_seconds_count":   1,
	})
	h1.Starting()
	time.Sleep(2 * time.Millisecond) // the new generation's start-up
	carry := m1.Carry()
	if len(carry) > handoff.MaxCarry/4 {
		t.Errorf("carry of %d bytes: %s", len(carry), carry)
	}
	t.Logf("carry: %d bytes", len(carry))

	m2 := New(Options{Version: "v2"})
	g2 := newFakeGen(2, carry)
	if err := m2.attach(g2, nil); err != nil {
		t.Fatal(err)
	}
	h2 := m2.Hooks()
	h2.Ready()
	have := values(t, m2)
	check(t, "generation 2, before the hand-over ended", have, map[string]float64{
		"echod_generation":                      2,
		`echod_reloads_total{result="success"}`: 1,
		`echod_reloads_total{result="failure"}`: 1,
		"echod_last_reload_successful":          1,
		"echod_reload_duration_seconds_count":   2,
		"echod_connections_handed_over_total":   0,
		"echod_handover_duration_seconds_count": 0,
	})
	if _, ok := have["echod_connections_open"]; ok {
		t.Errorf("generation 2 without stats: has connection series")
	}
	if d := have["echod_reload_duration_seconds_sum"]; d < 0.002 || d > 60 {
		t.Errorf("generation 2: reload durations sum to %vs, want the 2 ms slept and then some", d)
	}
	g2.res = handoff.HandOverResult{Moved: 40, Took: 30 * time.Millisecond}
	close(g2.adopted)
	h2.PreviousExited(250 * time.Millisecond)
	check(t, "generation 2", values(t, m2), map[string]float64{
		"echod_connections_handed_over_total":   40,
		"echod_handover_duration_seconds_count": 1,
		"echod_handover_duration_seconds_sum":   0.03,
		"echod_drain_duration_seconds_count":    1,
		"echod_drain_duration_seconds_sum":      0.25,
	})

	h2.Starting()
	m3 := New(Options{})
	g3 := newFakeGen(3, m2.Carry())
	if err := m3.attach(g3, nil); err != nil {
		t.Fatal(err)
	}
	m3.Hooks().Ready()
	check(t, "generation 3", values(t, m3), map[string]float64{
		"echod_generation":                      3,
		`echod_reloads_total{result="success"}`: 2,
		`echod_reloads_total{result="failure"}`: 1,
		"echod_reload_duration_seconds_count":   3,
		"echod_connections_handed_over_total":   40,
		"echod_handover_duration_seconds_count": 1,
		"echod_drain_duration_seconds_count":    1,
	})
}

// TestCarriedUnreadable: what cannot be read starts at zero, and says so;
// the generation still counts its own reload.
func TestCarriedUnreadable(t *testing.T) {
	for _, tc := range []struct {
		name, carried, err string
	}{
		{"not JSON", "{", "carried series"},
		{"other version", `{"v":99,"reloads_ok":5}`, "version 99"},
		{"other buckets", `{"v":1,"reloads_ok":5,"reload_duration":{"bounds":[1,2],"counts":[1,1],"sum":2,"count":2}}`, "reload_duration: other buckets"},
		{"counts over count", `{"v":1,"drain_duration":{"bounds":` + jsonFloats(drainBuckets) + `,"counts":[9,0,0,0,0,0,0,0,0,0,0],"sum":1,"count":1}}`, "drain_duration: inconsistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			err := m.attach(newFakeGen(2, []byte(tc.carried)), nil)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("attach: %v, want an error with %q", err, tc.err)
			}
			m.Hooks().Ready()
			want := map[string]float64{`echod_reloads_total{result="success"}`: 1, "echod_reload_duration_seconds_count": 0}
			if tc.name == "other buckets" {
				want[`echod_reloads_total{result="success"}`] = 6 // the counters were readable
			}
			check(t, tc.name, values(t, m), want)
		})
	}
}

func jsonFloats(fs []float64) string {
	b, _ := json.Marshal(fs)
	return string(b)
}

// TestNamesLint: every series follows Prometheus's naming rules
// (promlint: base units, _total on counters, help text).
func TestNamesLint(t *testing.T) {
	m := New(Options{Version: "v"})
	if err := m.attach(newFakeGen(1, nil), func() daemon.Stats { return daemon.Stats{} }); err != nil {
		t.Fatal(err)
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "echod_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// TestHistogramBuckets: an observation goes to the first bucket whose
// bound is at least it; past the last, only into +Inf.
func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 2, 5})
	for _, v := range []float64{0.5, 1, 1.5, 5, 7} {
		h.observe(v)
	}
	if want := []uint64{2, 1, 1}; !slices.Equal(h.Counts, want) || h.Count != 5 || h.Sum != 15 {
		t.Fatalf("have counts %v count %d sum %v, want %v 5 15", h.Counts, h.Count, h.Sum, want)
	}
}
