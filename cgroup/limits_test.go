package cgroup

import (
	"math"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1048576", 1 << 20},
		{"256Mi", 256 << 20},
		{"256MiB", 256 << 20},
		{"1Gi", 1 << 30},
		{"1.5Gi", 3 << 29},
		{"1G", 1e9},
		{"1GB", 1e9},
		{"500M", 500e6},
		{"64k", 64000},
		{"64Ki", 64 << 10},
		{"2Ti", 2 << 40},
		{"100B", 100},
		{" 12Mi ", 12 << 20},
		{"0.5", 1},       // rounded up to a whole byte
		{"0.1Ki", 103},   // 102.4 rounded up
		{"7Ei", 7 << 60}, // fits int64
		{"1.", 1},        // a trailing dot is still a number
		{".5Ki", 512},    // and so is a leading one
		{"0010Mi", 10 << 20},
	}
	for _, tc := range good {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in, wantErr string
	}{
		{"lots", `invalid size "lots": use bytes or a number with a unit like 256Mi or 1G`},
		{"", `invalid size "": use bytes or a number with a unit like 256Mi or 1G`},
		{"-1", `invalid size "-1": use bytes`},
		{"256m", `invalid size "256m": use 256Mi for mebibytes or 256M for megabytes`},
		{"256mb", `use 256Mi for mebibytes`},
		{"1g", `use 1Gi for gibibytes or 1G for gigabytes`},
		{"64K", `use 64Ki for kibibytes or 64k for kilobytes`},
		{"1e9", `invalid size "1e9"`},
		{"1.2.3", `invalid size "1.2.3"`},
		{"Mi", `invalid size "Mi"`},
		{"B", `invalid size "B"`},
		{"12 Mi", `invalid size "12 Mi"`},
		{"8Ei", `larger than`},
		{"0x10", `invalid size "0x10"`},
		{"NaN", `invalid size "NaN"`},
		{"+5", `invalid size "+5"`},
	}
	for _, tc := range bad {
		got, err := ParseSize(tc.in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseSize(%q) error = %q, want one line containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want float64
	}{
		{"0.5", 0.5},
		{"2", 2},
		{"500m", 0.5},
		{"1500m", 1.5},
		{"10m", 0.01},
		{"0.01", 0.01},
		{" 4 ", 4},
	}
	for _, tc := range good {
		got, err := ParseCPUs(tc.in)
		if err != nil || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("ParseCPUs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in, wantErr string
	}{
		{"", `invalid CPU count "": use a number of CPUs like 0.5 or 2, or millicores like 500m`},
		{"lots", `invalid CPU count "lots": use a number of CPUs`},
		{"0", `invalid CPU count "0": must be more than 0`},
		{"0m", `must be more than 0`},
		{"-1", `invalid CPU count "-1": use a number`},
		{"NaN", `invalid CPU count "NaN"`},
		{"Inf", `invalid CPU count "Inf"`},
		{"1e3", `invalid CPU count "1e3"`},
		{"5m", `invalid CPU count "5m": the kernel minimum is 0.01 CPUs (10m)`},
		{"0.001", `the kernel minimum`},
		{"2 cpus", `invalid CPU count "2 cpus"`},
		{"500M", `invalid CPU count "500M"`},
		{"1" + strings.Repeat("0", 400), `invalid CPU count`},
	}
	for _, tc := range bad {
		got, err := ParseCPUs(tc.in)
		if err == nil {
			t.Errorf("ParseCPUs(%q) = %v, want error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseCPUs(%q) error = %q, want one line containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{1000, "1000B"},
		{1024, "1KiB"},
		{268435456, "256MiB"},
		{64 << 20, "64MiB"},
		{1 << 30, "1GiB"},
		{1536 << 20, "1536MiB"},
		{1e9, "1GB"},
		{500e6, "500MB"},
		{123456789, "117.7MiB"},
		{1024 * 1e6, "1024MB"},
		{-(64 << 20), "-64MiB"},
		{math.MaxInt64, "8EiB"},
		{math.MinInt64, "-8EiB"},
	}
	for _, tc := range cases {
		if got := FormatBytes(tc.in); got != tc.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Exact forms parse back.
	for _, n := range []int64{1 << 20, 256 << 20, 1e9, 5e6, 4096, 1536 << 20} {
		s := FormatBytes(n)
		if back, err := ParseSize(s); err != nil || back != n {
			t.Errorf("ParseSize(FormatBytes(%d) = %q) = %d, %v", n, s, back, err)
		}
	}
}

func TestLimitsString(t *testing.T) {
	t.Parallel()
	cases := []struct {
		l    Limits
		want string
	}{
		{Limits{}, "no limits"},
		{Limits{Memory: 256 << 20, CPU: 0.5, Pids: 64}, "memory 256MiB, cpu 0.5, pids 64"},
		{Limits{Memory: 1 << 30, MemoryHigh: 768 << 20}, "memory 1GiB, memory-high 768MiB"},
		{Limits{CPU: 2}, "cpu 2"},
	}
	for _, tc := range cases {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.l, got, tc.want)
		}
		if got := tc.l.IsZero(); got != (tc.want == "no limits") {
			t.Errorf("%#v.IsZero() = %v", tc.l, got)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	ok := []Limits{{}, {Memory: 1}, {CPU: 0.01}, {CPU: 64}, {Memory: 2 << 20, MemoryHigh: 1 << 20}, {MemoryHigh: 1 << 20}, {Pids: 1}}
	for _, l := range ok {
		if err := l.Validate(); err != nil {
			t.Errorf("%v: Validate() = %v", l, err)
		}
	}
	bad := []struct {
		l       Limits
		wantErr string
	}{
		{Limits{Memory: -1}, "invalid memory limit -1"},
		{Limits{MemoryHigh: -1}, "invalid memory-high limit"},
		{Limits{Memory: 1 << 20, MemoryHigh: 2 << 20}, "memory-high 2MiB is above the memory limit 1MiB"},
		{Limits{CPU: math.NaN()}, "invalid cpu limit NaN"},
		{Limits{CPU: -0.5}, "invalid cpu limit"},
		{Limits{CPU: 0.001}, "below the kernel minimum"},
		{Limits{CPU: math.Inf(1)}, "invalid cpu limit"},
		{Limits{CPU: 1e300}, "too large"},
		{Limits{Pids: -2}, "invalid pids limit"},
	}
	for _, tc := range bad {
		err := tc.l.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%#v.Validate() = %v, want %q", tc.l, err, tc.wantErr)
		}
	}
	if q := (Limits{CPU: 0.5}).cpuQuota(); q != 50000 {
		t.Errorf("cpuQuota(0.5) = %d, want 50000", q)
	}
	if q := (Limits{CPU: 1.5}).cpuQuota(); q != 150000 {
		t.Errorf("cpuQuota(1.5) = %d, want 150000", q)
	}
}
