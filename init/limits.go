package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

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
	if err != nil {
		if errors.Is(err, cgroup.ErrUnavailable) && cfg.cgroupMode == "optional" {
			log.Warn(fmt.Sprintf("running without per-worker limits (--cgroup=optional): %v", err))
			return nil, nil
		}
		if errors.Is(err, cgroup.ErrUnavailable) {
			return nil, usagef("cannot apply per-worker limits: %v; or set --cgroup=optional to run without them", err)
		}
		return nil, fmt.Errorf("cannot apply per-worker limits: %w", err)
	}
	l := &limiter{h: h, limits: limits, log: log, slots: map[int]*cgroup.Slot{}, oomKills: map[int]uint64{}}
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

func (l *limiter) slot(id int) (slotCgroup, error) {
	s, err := l.h.Slot(id)
	if err != nil {
		return nil, err
	}
	if _, ok := l.slots[id]; !ok {
		l.slots[id] = s
		l.oomKills[id], _ = s.OOMKills()
	}
	return s, nil
}

// newOOMKills returns how many OOM kills slot id had since last asked.
func (l *limiter) newOOMKills(id int) uint64 {
	s, ok := l.slots[id]
	if !ok {
		return 0
	}
	n, err := s.OOMKills()
	if err != nil || n <= l.oomKills[id] {
		return 0
	}
	d := n - l.oomKills[id]
	l.oomKills[id] = n
	return d
}

// explain names the OOM killer as the cause of a worker's death, instead of
// a bare "signal 9", when its cgroup's OOM-kill count went up.
func (l *limiter) explain(id int, st reaper.Status) string {
	if l.newOOMKills(id) == 0 {
		return ""
	}
	limit := "memory limit " + cgroup.FormatBytes(l.limits.Memory)
	if l.limits.Memory == 0 {
		limit = "cgroup memory limit"
	}
	if st.Signaled() && st.Signal() == 9 {
		return fmt.Sprintf("killed by the OOM killer (%s)", limit)
	}
	return fmt.Sprintf("%s; a process inside it was killed by the OOM killer (%s)", st, limit)
}

// check reports OOM kills inside workers that kept running: the kernel
// chose a child of the worker, and the worker may not notice.
func (l *limiter) check(name func(int) string) {
	for id := range l.slots {
		if n := l.newOOMKills(id); n > 0 {
			l.log.Warn(fmt.Sprintf("%s: %d process(es) inside it killed by the OOM killer (memory limit %s); the worker itself is still running",
				name(id), n, cgroup.FormatBytes(l.limits.Memory)), "worker", id, "oom_kills", l.oomKills[id])
		}
	}
}

// OOMKills is the total OOM kills seen per worker slot, for metrics.
func (l *limiter) OOMKills() map[int]uint64 { return l.oomKills }

// availableCPUs derives --workers=auto from the cgroup CPU quota, the
// cpuset and the online CPUs.
func availableCPUs() (int, string, error) {
	c, err := cgroup.AvailableCPUs()
	if err != nil {
		return 0, "", err
	}
	return c.N, c.How, nil
}
