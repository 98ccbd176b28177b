package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPUCount is the number of CPUs goinit may use, for --workers=auto.
type CPUCount struct {
	// N is at least 1.
	N int
	// How explains the derivation for the log, e.g.
	// "cgroup cpu quota 150000/100000 = 1.5 -> 2; affinity 2 CPUs; 2 online".
	How string
}

// AvailableCPUs returns min(ceil(cgroup CPU quota), CPUs in the affinity
// mask, online CPUs), at least 1. The quota is the smallest quota/period
// ratio of goinit's own cgroup and its ancestors up to the root of the
// mount (v2 cpu.max, v1 cpu.cfs_quota_us and cpu.cfs_period_us): a parent's
// quota limits its children too. The affinity mask reflects the cpuset.
func AvailableCPUs() (CPUCount, error) {
	pi, err := readProcInfo()
	if err != nil {
		return CPUCount{}, err
	}
	var set unix.CPUSet
	affinity := 0
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		affinity = set.Count()
	}
	online := 0
	if data, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		online, _ = parseCPUList(strings.TrimSpace(string(data)))
	}
	if online <= 0 {
		online = runtime.NumCPU()
	}
	return availableCPUs(pi, affinity, online)
}

// availableCPUs is AvailableCPUs over given process information, so tests
// can point the mounts at a fake tree. affinity <= 0 means unknown.
func availableCPUs(pi procInfo, affinity, online int) (CPUCount, error) {
	n := max(online, 1)
	var how []string

	q, err := cgroupQuota(pi)
	switch {
	case err != nil:
		return CPUCount{}, err
	case q.found:
		ratio := float64(q.quota) / float64(q.period)
		qn := max(int(math.Ceil(ratio)), 1)
		n = min(n, qn)
		how = append(how, fmt.Sprintf("cgroup cpu quota %d/%d = %s -> %d (%s)",
			q.quota, q.period, strconv.FormatFloat(ratio, 'f', -1, 64), qn, q.dir))
	default:
		how = append(how, "no cgroup cpu quota")
	}
	if affinity > 0 {
		n = min(n, affinity)
		how = append(how, fmt.Sprintf("affinity %d CPUs", affinity))
	}
	how = append(how, fmt.Sprintf("%d online", online))
	return CPUCount{N: max(n, 1), How: strings.Join(how, "; ")}, nil
}

// quota is one CFS bandwidth limit found in the cgroup tree.
type quota struct {
	found         bool
	quota, period int64
	dir           string
}

// cgroupQuota walks from our own cgroup up to the mount root and returns
// the tightest quota. The cpu controller's v1 mount is used when there is
// one (cgroup v1 or hybrid), else the cgroup2 mount.
func cgroupQuota(pi procInfo) (quota, error) {
	var best quota
	m, v1 := pi.v1MountAny(ctrlCPU)
	key := ctrlCPU
	if !v1 {
		var ok bool
		if m, ok = pi.v2MountAny(); !ok {
			return best, nil // no cgroupfs: nothing limits us that we can see
		}
		key = ""
	}
	dir, err := pi.ownDir(m, key)
	if err != nil {
		// E.g. a v2 mount of a different namespace: not knowing a quota
		// is better than failing --workers=auto.
		return best, nil
	}
	for {
		q, ok, err := readQuota(dir, v1)
		if err != nil {
			return best, err
		}
		if ok && (!best.found || float64(q.quota)/float64(q.period) < float64(best.quota)/float64(best.period)) {
			best = q
		}
		if dir == m.Dir || !under(dir, m.Dir) {
			return best, nil
		}
		dir = filepath.Dir(dir)
	}
}

// readQuota reads the quota of one cgroup directory; ok is false for "no
// limit" or a missing file (the v2 root has no cpu.max).
func readQuota(dir string, v1 bool) (q quota, ok bool, err error) {
	q.dir = dir
	if v1 {
		qs, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		ps, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
		if errors.Is(err1, os.ErrNotExist) || errors.Is(err2, os.ErrNotExist) {
			return q, false, nil
		}
		if err := errors.Join(err1, err2); err != nil {
			return q, false, fmt.Errorf("read cpu quota: %w", err)
		}
		q.quota, err1 = strconv.ParseInt(strings.TrimSpace(string(qs)), 10, 64)
		q.period, err2 = strconv.ParseInt(strings.TrimSpace(string(ps)), 10, 64)
		if err1 != nil || err2 != nil {
			return q, false, fmt.Errorf("parse cpu quota in %s: %q / %q", dir, qs, ps)
		}
	} else {
		data, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
		if errors.Is(err, os.ErrNotExist) {
			return q, false, nil
		}
		if err != nil {
			return q, false, fmt.Errorf("read cpu quota: %w", err)
		}
		// "max 100000" or "150000 100000"
		f := strings.Fields(string(data))
		if len(f) != 2 {
			return q, false, fmt.Errorf("parse %s/cpu.max: %q", dir, data)
		}
		if f[0] == "max" {
			return q, false, nil
		}
		var err1, err2 error
		q.quota, err1 = strconv.ParseInt(f[0], 10, 64)
		q.period, err2 = strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return q, false, fmt.Errorf("parse %s/cpu.max: %q", dir, data)
		}
	}
	if q.quota <= 0 || q.period <= 0 { // v1 "-1" is no limit
		return q, false, nil
	}
	q.found = true
	return q, true, nil
}

// v1MountAny returns the v1 mount of controller wherever it is mounted.
func (pi procInfo) v1MountAny(controller string) (cgroupMount, bool) {
	return pi.v1Mount("/", controller)
}

// v2MountAny returns the first cgroup2 mount.
func (pi procInfo) v2MountAny() (cgroupMount, bool) {
	for _, m := range pi.mounts {
		if m.V2 {
			return m, true
		}
	}
	return cgroupMount{}, false
}

// parseCPUList counts the CPUs in a kernel CPU list such as "0-3,5,7-8".
func parseCPUList(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("parse CPU list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("parse CPU list %q: %w", s, err)
			}
		}
		if b < a {
			return 0, fmt.Errorf("parse CPU list %q: bad range %q", s, part)
		}
		n += b - a + 1
	}
	return n, nil
}
