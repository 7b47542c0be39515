package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a recorded value is off by at most 1/2^subBits (0.8%).
const subBits = 7

const (
	subBuckets = 1 << subBits
	numBuckets = (64-subBits)*subBuckets + subBuckets
)

// Histogram counts durations in log-linear buckets, in the manner of an HDR
// histogram: constant relative precision over the whole range, a fixed
// array, no allocation per value. It is not safe for concurrent use; give
// each worker one and Merge them.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max time.Duration
}

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)*subBuckets + int(v>>shift) - subBuckets
}

// highest is the largest value that lands in bucket i.
func highest(i int) uint64 {
	if i < 2*subBuckets {
		return uint64(i)
	}
	shift := i/subBuckets - 1
	m := uint64(i - shift*subBuckets)
	return (m+1)<<shift - 1
}

// Record counts one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// Count is the number of recorded durations.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded duration, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the duration at or below which a fraction q of the
// recorded ones fall, rounded up to its bucket's upper bound (never past
// the maximum). It is zero when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(time.Duration(highest(i)), h.min), h.max)
		}
	}
	return h.max
}

// Latency is the summary the benchmark reports.
type Latency struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summary returns p50, p99 and max.
func (h *Histogram) Summary() Latency {
	return Latency{Count: h.n, P50: h.Quantile(0.50), P99: h.Quantile(0.99), Max: h.max}
}
