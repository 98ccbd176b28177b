package cgroup

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// CPUPeriod is the CFS bandwidth period, in microseconds, used for CPU
// limits: a limit of 0.5 CPUs is a quota of 50000 per 100000. It is the
// kernel's default period.
const CPUPeriod = 100000

// MinCPU is the smallest CPU limit: the kernel rejects quotas below 1ms per
// period, which is 0.01 CPUs with CPUPeriod.
const MinCPU = 0.01

// Limits are per-worker limits. Zero fields mean "no limit".
type Limits struct {
	// Memory is the hard memory limit in bytes. Swap is not allowed beyond
	// it: v1 memory.limit_in_bytes and (if swap accounting exists)
	// memory.memsw.limit_in_bytes get the same value; v2 memory.max gets
	// it and memory.swap.max is 0. Exceeding it invokes the OOM killer
	// inside the slot.
	Memory int64

	// MemoryHigh is the v2 memory.high soft limit in bytes: above it the
	// kernel throttles the worker and reclaims hard, but does not kill.
	// cgroup v1 has no equivalent, so Open fails with an
	// *UnavailableError on v1 when it is set.
	MemoryHigh int64

	// CPU is the CPU bandwidth limit in CPUs: 0.5 is a quota of 50ms
	// every 100ms. It must be 0 or at least MinCPU.
	CPU float64

	// Pids is the maximum number of tasks (processes and threads) in the
	// slot; fork and clone fail with EAGAIN beyond it.
	Pids int64
}

// IsZero reports whether l sets no limit at all.
func (l Limits) IsZero() bool {
	return l == Limits{}
}

// String formats l for logs, e.g. "memory 256MiB, cpu 0.5, pids 64", or
// "no limits".
func (l Limits) String() string {
	var parts []string
	if l.Memory != 0 {
		parts = append(parts, "memory "+FormatBytes(l.Memory))
	}
	if l.MemoryHigh != 0 {
		parts = append(parts, "memory-high "+FormatBytes(l.MemoryHigh))
	}
	if l.CPU != 0 {
		parts = append(parts, "cpu "+strconv.FormatFloat(l.CPU, 'f', -1, 64))
	}
	if l.Pids != 0 {
		parts = append(parts, "pids "+strconv.FormatInt(l.Pids, 10))
	}
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
}

// Validate reports the first limit the kernel would reject or that makes no
// sense, as a one-line error naming the limit.
func (l Limits) Validate() error {
	switch {
	case l.Memory < 0:
		return fmt.Errorf("invalid memory limit %d: must not be negative", l.Memory)
	case l.MemoryHigh < 0:
		return fmt.Errorf("invalid memory-high limit %d: must not be negative", l.MemoryHigh)
	case l.Memory != 0 && l.MemoryHigh > l.Memory:
		return fmt.Errorf("memory-high %s is above the memory limit %s: the hard limit would always hit first; lower memory-high or raise memory",
			FormatBytes(l.MemoryHigh), FormatBytes(l.Memory))
	case math.IsNaN(l.CPU) || math.IsInf(l.CPU, 0) || l.CPU < 0:
		return fmt.Errorf("invalid cpu limit %v: must be a positive number of CPUs", l.CPU)
	case l.CPU != 0 && l.CPU < MinCPU:
		return fmt.Errorf("cpu limit %v is below the kernel minimum of %v CPUs (10m)", l.CPU, MinCPU)
	case l.CPU > math.MaxInt64/CPUPeriod:
		return fmt.Errorf("cpu limit %v is too large", l.CPU)
	case l.Pids < 0:
		return fmt.Errorf("invalid pids limit %d: must not be negative", l.Pids)
	}
	return nil
}

// cpuQuota is the CFS quota in microseconds per CPUPeriod for l.CPU.
func (l Limits) cpuQuota() int64 {
	return int64(math.Round(l.CPU * CPUPeriod))
}

// sizeUnits are the suffixes ParseSize accepts, Kubernetes style: binary
// with "i", decimal without. A trailing "B" is also accepted so that
// FormatBytes output parses back.
var sizeUnits = map[string]int64{
	"":   1,
	"k":  1e3,
	"M":  1e6,
	"G":  1e9,
	"T":  1e12,
	"P":  1e15,
	"E":  1e18,
	"Ki": 1 << 10,
	"Mi": 1 << 20,
	"Gi": 1 << 30,
	"Ti": 1 << 40,
	"Pi": 1 << 50,
	"Ei": 1 << 60,
}

// ParseSize parses a size in bytes with Kubernetes units: Ki, Mi, Gi, Ti,
// Pi, Ei are powers of 1024 and k, M, G, T, P, E powers of 1000, so "256Mi"
// is 268435456 and "1G" is 1000000000. A plain number is bytes, a trailing
// "B" is allowed ("256MiB"), and fractions are rounded up to a whole byte
// ("1.5Gi"). "0" is zero, which means "no limit" in Limits.
//
// The error is one line that says what is accepted. Docker's lower-case
// "256m" is rejected with a hint, because in Kubernetes "m" means milli.
func ParseSize(s string) (int64, error) {
	num, unit := splitNumber(strings.TrimSpace(s))
	if u, ok := strings.CutSuffix(unit, "B"); ok && num != "" {
		unit = u
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" {
		switch unit {
		case "K", "KB":
			return 0, fmt.Errorf("invalid size %q: use %sKi for kibibytes or %sk for kilobytes", s, num, num)
		case "m", "mi", "mb", "Mb":
			return 0, fmt.Errorf("invalid size %q: use %sMi for mebibytes or %sM for megabytes", s, num, num)
		case "g", "gi", "gb", "Gb":
			return 0, fmt.Errorf("invalid size %q: use %sGi for gibibytes or %sG for gigabytes", s, num, num)
		}
		return 0, fmt.Errorf("invalid size %q: use bytes or a number with a unit like 256Mi or 1G", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: use bytes or a number with a unit like 256Mi or 1G", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	// Round up like Kubernetes' Quantity.Value: a limit is never silently
	// lowered.
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if new(big.Rat).SetInt(n).Cmp(r) < 0 {
		n.Add(n, big.NewInt(1))
	}
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: larger than %s", s, FormatBytes(math.MaxInt64))
	}
	return n.Int64(), nil
}

// ParseCPUs parses a CPU limit: a number of CPUs ("0.5", "2") or
// Kubernetes millicores ("500m" is 0.5). It rejects zero, negative, NaN and
// values below MinCPU with a one-line error.
func ParseCPUs(s string) (float64, error) {
	num, unit := splitNumber(strings.TrimSpace(s))
	bad := fmt.Errorf("invalid CPU count %q: use a number of CPUs like 0.5 or 2, or millicores like 500m", s)
	if num == "" || (unit != "" && unit != "m") {
		return 0, bad
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, bad
	}
	if unit == "m" {
		v /= 1000
	}
	switch {
	case v <= 0:
		return 0, fmt.Errorf("invalid CPU count %q: must be more than 0", s)
	case v < MinCPU:
		return 0, fmt.Errorf("invalid CPU count %q: the kernel minimum is 0.01 CPUs (10m)", s)
	}
	if err := (Limits{CPU: v}).Validate(); err != nil {
		return 0, fmt.Errorf("invalid CPU count %q: %w", s, err)
	}
	return v, nil
}

// splitNumber splits s into a leading decimal number (digits with at most
// one dot, no sign, no exponent) and the rest. It returns num == "" when s
// does not start with such a number.
func splitNumber(s string) (num, rest string) {
	i, dots, digits := 0, 0, 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			dots++
			if dots > 1 {
				return "", s
			}
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		digits++
	}
	if digits == 0 {
		return "", s
	}
	return s[:i], s[i:]
}

// byteUnits are the units FormatBytes may use, largest first.
var byteUnits = []struct {
	name string
	size int64
}{
	{"EiB", 1 << 60}, {"EB", 1e18},
	{"PiB", 1 << 50}, {"PB", 1e15},
	{"TiB", 1 << 40}, {"TB", 1e12},
	{"GiB", 1 << 30}, {"GB", 1e9},
	{"MiB", 1 << 20}, {"MB", 1e6},
	{"KiB", 1 << 10}, {"kB", 1e3},
}

// FormatBytes formats n for logs: exactly when a unit divides it into a
// short number ("256MiB", "1GB" for a limit given as 1G), otherwise to one
// decimal in binary units ("117.7MiB"). ParseSize accepts the exact forms.
func FormatBytes(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			return "-8EiB"
		}
		return "-" + FormatBytes(-n)
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	for _, u := range byteUnits {
		if n%u.size == 0 && n/u.size < 10000 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	for _, u := range byteUnits {
		if strings.Contains(u.name, "i") && n >= u.size {
			v := strconv.FormatFloat(float64(n)/float64(u.size), 'f', 1, 64)
			return strings.TrimSuffix(v, ".0") + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B" // unreachable: n >= 1024 matches KiB
}

// errNoMemoryHighOnV1 explains why MemoryHigh cannot work on cgroup v1.
var errNoMemoryHighOnV1 = errors.New("memory-high needs cgroup v2 (memory.high); cgroup v1 has no throttling soft limit")
