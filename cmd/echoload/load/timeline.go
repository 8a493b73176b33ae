package load

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxBuckets bounds the memory used by the timeline: when a run outlasts
// maxBuckets buckets, the bucket width doubles and neighbours are merged.
const maxBuckets = 600

// timeline holds RTT histograms per time bucket, for the latency-over-time
// plot. It is not safe for concurrent use (the Recorder serialises access).
type timeline struct {
	width   time.Duration
	buckets []*tlBucket
}

type tlBucket struct {
	hist     *hdrhistogram.Histogram // nil until the first sample
	failures int64
}

func newTimeline(width time.Duration) *timeline { return &timeline{width: width} }

// add records a sample observed at t: an RTT d, or a failure.
func (tl *timeline) add(t, d time.Duration, failure bool) {
	i := int(t / tl.width)
	for i >= maxBuckets {
		tl.coarsen()
		i = int(t / tl.width)
	}
	for len(tl.buckets) <= i {
		tl.buckets = append(tl.buckets, &tlBucket{})
	}
	b := tl.buckets[i]
	if failure {
		b.failures++
		return
	}
	if b.hist == nil {
		// Two significant digits: about 20 KB per bucket.
		b.hist = hdrhistogram.New(1, histMaxMicros, 2)
	}
	record(b.hist, d)
}

// coarsen doubles the bucket width, merging pairs of buckets.
func (tl *timeline) coarsen() {
	merged := make([]*tlBucket, 0, (len(tl.buckets)+1)/2)
	for i := 0; i < len(tl.buckets); i += 2 {
		b := tl.buckets[i]
		if i+1 < len(tl.buckets) {
			o := tl.buckets[i+1]
			b.failures += o.failures
			switch {
			case b.hist == nil:
				b.hist = o.hist
			case o.hist != nil:
				b.hist.Merge(o.hist)
			}
		}
		merged = append(merged, b)
	}
	tl.buckets = merged
	tl.width *= 2
}

// TimelinePoint summarises one timeline bucket.
type TimelinePoint struct {
	StartMS  float64 `json:"t_ms"`
	Count    int64   `json:"count"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	Failures int64   `json:"failures"`
}

func (tl *timeline) points() []TimelinePoint {
	pts := make([]TimelinePoint, 0, len(tl.buckets))
	for i, b := range tl.buckets {
		p := TimelinePoint{StartMS: ms(time.Duration(i) * tl.width), Failures: b.failures}
		if b.hist != nil {
			p.Count = b.hist.TotalCount()
			p.P50MS = usToMS(b.hist.ValueAtQuantile(50))
			p.P99MS = usToMS(b.hist.ValueAtQuantile(99))
			p.MaxMS = usToMS(b.hist.Max())
		}
		pts = append(pts, p)
	}
	return pts
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func usToMS(us int64) float64 { return float64(us) / 1000 }
