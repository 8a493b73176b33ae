//go:build linux

package metrics

import (
	"errors"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// histogram is a Prometheus histogram whose state can be carried to the
// next generation (prometheus.Histogram's cannot be set). Not safe for
// concurrent use: Metrics guards it.
type histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds, increasing; +Inf implied
	Counts []uint64  `json:"counts"` // observations in (Bounds[i-1], Bounds[i]]
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"` // every observation, those over the last bound too
}

func newHistogram(bounds []float64) histogram {
	return histogram{Bounds: bounds, Counts: make([]uint64, len(bounds))}
}

func (h *histogram) observe(v float64) {
	if i := sort.SearchFloat64s(h.Bounds, v); i < len(h.Counts) {
		h.Counts[i]++
	}
	h.Sum += v
	h.Count++
}

// restore takes the counts of c, carried by a previous generation, if its
// buckets are h's and its counts add up.
func (h *histogram) restore(c histogram) error {
	if !slices.Equal(c.Bounds, h.Bounds) || len(c.Counts) != len(h.Bounds) {
		return errors.New("other buckets: starts at zero")
	}
	var n uint64
	for _, x := range c.Counts {
		n += x
	}
	if n > c.Count || c.Sum < 0 {
		return errors.New("inconsistent counts: starts at zero")
	}
	h.Counts = slices.Clone(c.Counts)
	h.Sum, h.Count = c.Sum, c.Count
	return nil
}

// metric is h as a constant Prometheus histogram (cumulative buckets).
func (h *histogram) metric(d *prometheus.Desc) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
}
