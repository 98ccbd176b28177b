package main

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/reaper"
)

// oomCheckInterval is how often running workers' cgroups are read for OOM
// kills of processes inside them that did not end the worker itself. It is
// only for reporting: restarts never wait for it.
const oomCheckInterval = 2 * time.Second

// limiter owns the workers' cgroups and what goinit learns from them.
type limiter struct {
	h      *cgroup.Hierarchy
	limits cgroup.Limits
	log    *slog.Logger
	slots  map[int]*cgroup.Slot
	// oomKills is the OOM-kill count of each slot already reported.
	oomKills map[int]uint64
	// limitOOMs is each slot's count of its own limit running out
	// (cgroup v2 only), to tell its limit from the container's.
	limitOOMs map[int]uint64
}

// openCgroups creates the per-worker cgroups when limits are requested and
// wires them into env. It returns the cleanup that removes every cgroup it
// made.
func openCgroups(cfg *config, env *workerEnv, log *slog.Logger) (func(), error) {
	limits := cfg.limits
	if limits.IsZero() {
		return nil, nil
	}
	h, err := cgroup.Open(cgroup.Options{Limits: limits, Logger: log})
	var ue *cgroup.UnavailableError
	switch {
	case errors.As(err, &ue) && cfg.cgroupMode == "optional":
		what, cause, fix, _ := unavailable(ue)
		log.Warn(fmt.Sprintf("running without per-worker limits (--cgroup=optional): cannot apply %s: %s; to apply them, %s", what, cause, fix))
		return nil, nil
	case errors.As(err, &ue):
		what, cause, fix, drop := unavailable(ue)
		return nil, usagef("cannot apply %s: %s; %s, %s, or set --cgroup=optional to run without limits", what, cause, fix, drop)
	case err != nil:
		return nil, fmt.Errorf("cannot apply per-worker limits: %w", err)
	}
	l := &limiter{h: h, limits: limits, log: log, slots: map[int]*cgroup.Slot{}, oomKills: map[int]uint64{}, limitOOMs: map[int]uint64{}}
	log.Info(fmt.Sprintf("per-worker limits: %s (cgroup v%d)", limits, h.Version()))
	env.cgroup = l.slot
	env.explain = l.explain
	env.oomCheck = l.check
	return func() {
		if err := h.Close(); err != nil {
			log.Warn("cannot remove worker cgroups", "err", err)
		}
	}, nil
}

// limitFlags names the flag of each limit as cgroup.UnavailableError.Limit
// spells it.
var limitFlags = map[string]string{
	"memory":      "--memory-limit",
	"memory-high": "--memory-high",
	"cpu":         "--cpu-limit",
	"pids":        "--pids-limit",
}

// unavailable splits the cgroup package's explanation of a limit goinit
// cannot apply into what to say: which flag, the cause, the fix in the
// environment, and how to do without, naming goinit's flags rather than
// the package's "run without the memory limit".
func unavailable(ue *cgroup.UnavailableError) (what, cause, fix, drop string) {
	what, drop = "per-worker limits", "drop the limit flags"
	if f, ok := limitFlags[ue.Limit]; ok {
		what, drop = f, "drop "+f
	}
	fix = ue.Fix
	if i := strings.LastIndex(fix, " or run without "); i > 0 {
		fix = strings.TrimSuffix(fix[:i], ",")
	}
	return what, ue.Cause, fix, drop
}

func (l *limiter) slot(id int) (slotCgroup, error) {
	s, err := l.h.Slot(id)
	if err != nil {
		return nil, err
	}
	if _, ok := l.slots[id]; !ok {
		l.slots[id] = s
		l.oomKills[id], _ = s.OOMKills()
		l.limitOOMs[id], _, _ = s.LimitOOMs()
	}
	return s, nil
}

// newOOMKills returns how many OOM kills slot id had since last asked, and
// whether the slot's own memory limit caused them. Only cgroup v2 tells;
// on v1 the slot's limit is assumed.
func (l *limiter) newOOMKills(id int) (kills uint64, own bool) {
	s, ok := l.slots[id]
	if !ok {
		return 0, false
	}
	n, err := s.OOMKills()
	if err != nil || n <= l.oomKills[id] {
		return 0, false
	}
	kills = n - l.oomKills[id]
	l.oomKills[id] = n
	own = true
	if hits, known, err := s.LimitOOMs(); err == nil && known {
		own = hits > l.limitOOMs[id]
		l.limitOOMs[id] = hits
	}
	return kills, own
}

// explain names the OOM killer as the cause of a worker's death, instead of
// a bare "signal 9", when its cgroup's OOM-kill count went up.
func (l *limiter) explain(id int, st reaper.Status) string {
	kills, own := l.newOOMKills(id)
	if kills == 0 {
		return ""
	}
	limit := l.limitText(own)
	if st.Signaled() && st.Signal() == unix.SIGKILL {
		return fmt.Sprintf("killed by the OOM killer (%s)", limit)
	}
	// The kernel chose a child and the worker ended on its own, e.g.
	// exiting 1 when its child died.
	return fmt.Sprintf("%s (a process inside it was killed by the OOM killer, %s)", st, limit)
}

// check reports OOM kills inside workers that kept running: the kernel
// chose a child of the worker, and the worker may not notice.
func (l *limiter) check(name func(int) string) {
	for _, id := range slices.Sorted(maps.Keys(l.slots)) {
		n, own := l.newOOMKills(id)
		if n == 0 {
			continue
		}
		what := "a process inside it was"
		if n > 1 {
			what = fmt.Sprintf("%d processes inside it were", n)
		}
		l.log.Warn(fmt.Sprintf("%s: %s killed by the OOM killer (%s); the worker itself is still running",
			name(id), what, l.limitText(own)), "worker", id, "oom_kills", l.oomKills[id])
	}
}

// limitText names the memory limit the OOM killer enforced: the worker's
// own, or (own false) one above it, which in a container is the
// container's, so that nobody raises --memory-limit in vain.
func (l *limiter) limitText(own bool) string {
	switch {
	case !own && l.limits.Memory > 0:
		return "a memory limit above the worker's, such as the container's; the worker's is " + cgroup.FormatBytes(l.limits.Memory)
	case !own:
		return "a memory limit above the worker's, such as the container's"
	case l.limits.Memory == 0:
		return "cgroup memory limit"
	}
	return "memory limit " + cgroup.FormatBytes(l.limits.Memory)
}

// OOMKills is the total OOM kills seen per worker slot, for metrics. Like
// every limiter method, call it from the supervisor's goroutine.
func (l *limiter) OOMKills() map[int]uint64 { return maps.Clone(l.oomKills) }

// availableCPUs derives --workers=auto from the cgroup CPU quota, the
// cpuset and the online CPUs.
func availableCPUs() (int, string, error) {
	c, err := cgroup.AvailableCPUs()
	if err != nil {
		return 0, "", err
	}
	return c.N, c.How, nil
}
