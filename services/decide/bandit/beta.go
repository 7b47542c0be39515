package bandit

import (
	"math"
	"math/rand/v2"
)

// betaSample draws from Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~
// Gamma(b). math/rand/v2 has no Beta or Gamma distribution.
func betaSample(rng *rand.Rand, a, b float64) float64 {
	x := gammaSample(rng, a)
	y := gammaSample(rng, b)
	if x+y == 0 {
		// Both underflowed (shapes far below 1): the mean is the best answer.
		return a / (a + b)
	}
	return x / (x + y)
}

// gammaSample draws from Gamma(a, 1) by Marsaglia and Tsang's method
// ("A simple method for generating gamma variables", 2000), boosted by
// U^(1/a) for a < 1.
func gammaSample(rng *rand.Rand, a float64) float64 {
	if a < 1 {
		// 1 - Float64() is in (0, 1], so the power is never 0^(1/a) by accident.
		return gammaSample(rng, a+1) * math.Pow(1-rng.Float64(), 1/a)
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x {
			return d * v
		}
		if math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
