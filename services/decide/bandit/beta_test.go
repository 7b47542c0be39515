package bandit

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestBetaSampleMoments compares the sample mean and variance with the
// distribution's, for shapes below, at and above 1.
func TestBetaSampleMoments(t *testing.T) {
	tests := []struct{ a, b float64 }{
		{1, 1}, {0.5, 1}, {0.25, 3}, {2, 5}, {31, 971}, {1.5, 0.7},
	}
	const n = 200_000
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		var sum, sumSq float64
		for range n {
			x := betaSample(rng, tt.a, tt.b)
			if !(x >= 0 && x <= 1) {
				t.Fatalf("Beta(%v, %v) sample %v outside [0, 1]", tt.a, tt.b, x)
			}
			sum += x
			sumSq += x * x
		}
		mean := sum / n
		variance := sumSq/n - mean*mean
		wantMean := tt.a / (tt.a + tt.b)
		wantVar := tt.a * tt.b / ((tt.a + tt.b) * (tt.a + tt.b) * (tt.a + tt.b + 1))
		// Five standard errors of the mean; 3% relative on the variance.
		if se := math.Sqrt(wantVar / n); math.Abs(mean-wantMean) > 5*se {
			t.Errorf("Beta(%v, %v): mean %.5f, want %.5f ± %.5f", tt.a, tt.b, mean, wantMean, 5*se)
		}
		if math.Abs(variance-wantVar) > 0.03*wantVar {
			t.Errorf("Beta(%v, %v): variance %.6f, want %.6f", tt.a, tt.b, variance, wantVar)
		}
	}
}
