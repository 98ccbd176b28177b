package bench

import (
	"math"
	"slices"
)

// Summary describes repeated measurements of one figure.
type Summary struct {
	// N is the number of measurements.
	N int
	// Median, Min, Max and P99 are order statistics of the measurements;
	// P99 uses the nearest-rank method.
	Median, Min, Max, P99 float64
}

// Summarize returns the order statistics of xs; the zero Summary if xs is
// empty.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.99*float64(n))) - 1
	return Summary{N: n, Median: med, Min: s[0], Max: s[n-1], P99: s[max(rank, 0)]}
}
