package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. The
// kernel fixes it at 100 for user space on every architecture Linux exports
// it on, whatever the kernel's own HZ.
const clockTicks = 100

// procStat holds the fields of /proc/PID/stat the harness reads.
type procStat struct {
	// State is the one-letter process state; 'Z' is a zombie.
	State byte
	// PPid is the parent's pid.
	PPid int
	// CPU is user plus system time used so far.
	CPU time.Duration
	// Start is when the process started, in clock ticks since boot; it
	// orders processes by age even when pids wrap around.
	Start uint64
}

// readStat parses /proc/PID/stat. The command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat of pid %d: no ')' in %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime, stime and starttime are fields 14,
	// 15 and 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("stat of pid %d: %d fields after the name, want at least 20", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: ppid: %w", pid, err)
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: utime: %w", pid, err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: stime: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: starttime: %w", pid, err)
	}
	cpu := time.Duration(ut+st) * time.Second / clockTicks
	return procStat{State: f[0][0], PPid: ppid, CPU: cpu, Start: start}, nil
}

// cpuTime returns the CPU time pid has used so far, or 0 if it is gone.
func cpuTime(pid int) time.Duration {
	st, err := readStat(pid)
	if err != nil {
		return 0
	}
	return st.CPU
}

// children returns the pids of every child of pid. A child belongs to the
// thread that forked it, and a Go or Node supervisor forks from any of its
// threads, so every thread's list is read.
func children(pid int) ([]int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "children"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		for _, s := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// rss returns the resident set size of pid, from VmRSS in /proc/PID/status.
func rss(pid int) (int64, error) {
	v, err := statusField(pid, "VmRSS:")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("VmRSS of pid %d: unexpected %q", pid, v)
	}
	kb, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("VmRSS of pid %d: %w", pid, err)
	}
	return kb * 1024, nil
}

// innerPid returns pid as its own innermost PID namespace sees it, which is
// what a worker reports in /stats when it runs in a contender's namespace.
func innerPid(pid int) (int, error) {
	v, err := statusField(pid, "NSpid:")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, fmt.Errorf("NSpid of pid %d is empty", pid)
	}
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		return 0, fmt.Errorf("NSpid of pid %d: %w", pid, err)
	}
	return n, nil
}

// statusField returns the value of the line starting with key in
// /proc/PID/status.
func statusField(pid int, key string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("status of pid %d has no %s line", pid, key)
}

// monotonic reads CLOCK_MONOTONIC, the clock the signal-latency child prints,
// so both ends of a measurement use the same clock across processes.
func monotonic() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
