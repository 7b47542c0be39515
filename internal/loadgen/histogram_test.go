package loadgen

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramSummary(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		values []time.Duration
		want   Latency
	}{
		{"empty", nil, Latency{}},
		{"one value", []time.Duration{42 * ms}, Latency{Count: 1, P50: 42 * ms, P99: 42 * ms, Max: 42 * ms}},
		{"small exact values", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Latency{Count: 10, P50: 5, P99: 10, Max: 10}},
		{"tail", append(repeat(99, 10*ms), 900*ms), Latency{Count: 100, P50: 10 * ms, P99: 10 * ms, Max: 900 * ms}},
		{"two tail values", append(repeat(98, 10*ms), 500*ms, 900*ms), Latency{Count: 100, P50: 10 * ms, P99: 500 * ms, Max: 900 * ms}},
		{"negative is zero", []time.Duration{-5}, Latency{Count: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Summary()
			if !near(got.P50, tt.want.P50) || !near(got.P99, tt.want.P99) || got.Max != tt.want.Max || got.Count != tt.want.Count {
				t.Errorf("Summary() = %+v, want %+v (p50, p99 within 1%%)", got, tt.want)
			}
		})
	}
}

// TestHistogramQuantilesMatchSortedSamples checks the buckets against the
// exact answer over a spread of latencies from microseconds to seconds.
func TestHistogramQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h, a, b Histogram
	samples := make([]time.Duration, 100_000)
	for i := range samples {
		v := time.Duration(rng.ExpFloat64() * float64(20*time.Millisecond))
		samples[i] = v
		h.Record(v)
		if i%2 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := samples[int(q*float64(len(samples)))-1]
		if got := h.Quantile(q); !near(got, want) {
			t.Errorf("Quantile(%v) = %v, sorted samples say %v", q, got, want)
		}
		if got, whole := a.Quantile(q), h.Quantile(q); got != whole {
			t.Errorf("merged halves: Quantile(%v) = %v, whole = %v", q, got, whole)
		}
	}
	if h.Max() != samples[len(samples)-1] || a.Max() != h.Max() {
		t.Errorf("Max() = %v (merged %v), want %v", h.Max(), a.Max(), samples[len(samples)-1])
	}
}

func TestBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 123456789, 1<<63 - 1} {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, i)
		}
		if hi := highest(i); hi < v || (i > 0 && highest(i-1) >= v) {
			t.Errorf("value %d in bucket %d, whose range ends at %d (previous at %d)", v, i, hi, highest(i-1))
		}
	}
}

func repeat(n int, d time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// near allows the histogram's 1/128 relative error.
func near(got, want time.Duration) bool {
	diff := got - want
	if diff < 0 {
		diff = -diff
	}
	return float64(diff) <= float64(want)/128+1
}
