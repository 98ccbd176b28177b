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

// limiter owns the workers' cgroups and what goinit learns from them. Like
// the supervisor that calls them, its methods run on one goroutine.
type limiter struct {
	h     *cgroup.Hierarchy
	log   *slog.Logger
	slots map[int]*slotOOM
	cg    map[int]*cgroup.Slot // each slot's cgroup, for its memory usage
}

// oomCounter is what the limiter reads of a slot: *cgroup.Slot.
type oomCounter interface {
	OOMKills() (uint64, error)
	LimitOOMs() (n uint64, ok bool, err error)
}

// oomCounts are a slot's OOM counters at one moment.
type oomCounts struct {
	// kills counts processes the OOM killer killed in the slot.
	kills uint64
	// limit counts the times the slot's own memory limit ran out (cgroup
	// v2 only, limitKnown), to tell its limit from the container's.
	limit      uint64
	limitKnown bool
}

// slotOOM is the OOM accounting of one worker slot.
//
// The kernel counts an OOM kill when it sends SIGKILL, before the worker
// dies and is reaped, so the periodic check can see the kill that is
// about to end the worker. It therefore reports only kills it already saw
// on the check before, oomCheckInterval ago: a worker killed then has been
// reaped and explained since, which moves base past its kill.
type slotOOM struct {
	c oomCounter
	// running is true from the worker's start until its exit is
	// explained; check skips a slot whose worker is backing off or done.
	running bool
	// base is what new kills are counted from: the counts when the worker
	// started, moved up to everything check or explain has reported.
	base oomCounts
	// seen is what the last check read, reported by the next one if the
	// worker still runs.
	seen oomCounts
	// reported is the total of OOM kills logged, for OOMKills.
	reported uint64
}

// openCgroups creates the per-worker cgroups when limits are requested and
// wires them into env. It returns the cleanup that removes every cgroup it
// made.
func openCgroups(cfg *config, env *workerEnv, log *slog.Logger) (func(), error) {
	limits := cfg.limits
	if limits.IsZero() && cfg.agentLimits.IsZero() {
		return nil, nil
	}
	opts := cgroup.Options{Limits: limits, Logger: log}
	if cfg.agent != nil {
		// Declared whenever there is an agent, so that on v2 it never
		// runs in goinit's own leaf.
		opts.Named = map[string]cgroup.Limits{agentSlot: cfg.agentLimits}
	}
	h, err := cgroup.Open(opts)
	var ue *cgroup.UnavailableError
	switch {
	case errors.As(err, &ue) && cfg.cgroupMode == "optional":
		what, _ := unavailable(ue)
		log.Warn(fmt.Sprintf("running without per-worker limits (--cgroup=optional): cannot apply %s: %s; to apply them, %s", what, ue.Cause, ue.Fix))
		return nil, nil
	case errors.As(err, &ue):
		what, drop := unavailable(ue)
		return nil, usagef("cannot apply %s: %s; %s, %s, or set --cgroup=optional to run without limits", what, ue.Cause, ue.Fix, drop)
	case err != nil:
		return nil, fmt.Errorf("cannot apply per-worker limits: %w", err)
	}
	l := &limiter{h: h, log: log, slots: map[int]*slotOOM{}, cg: map[int]*cgroup.Slot{}}
	log.Info(fmt.Sprintf("per-worker limits: %s (cgroup v%d)", limits, h.Version()))
	if cfg.agent != nil && !cfg.agentLimits.IsZero() {
		log.Info(fmt.Sprintf("agent limits: %s", cfg.agentLimits))
	}
	env.agentCgroup = func(int) (slotCgroup, error) { return l.slot(agentID) }
	env.agentExplain = func(_ int, st reaper.Status) string { return l.explain(agentID, st) }
	env.cgroup = l.slot
	env.explain = l.explain
	env.oomCheck = l.check
	env.memoryOver = l.memoryOver
	env.usage = l.usage
	env.oomKills = l.OOMKills
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

// agentSlot names the agent's cgroup, and agentID stands for it in the
// limiter's maps, beside the workers' ids 0..N-1.
const (
	agentSlot = "agent"
	agentID   = -1
)

// unavailable names, for the cgroup package's explanation of a limit goinit
// cannot apply, the flag it concerns and how to do without it, in goinit's
// flags rather than the package's "run without the memory limit".
func unavailable(ue *cgroup.UnavailableError) (what, drop string) {
	if f, ok := limitFlags[ue.Limit]; ok {
		if ue.Slot == agentSlot {
			f = strings.Replace(f, "--", "--agent-", 1)
		}
		return f, "drop " + f
	}
	return "per-worker limits", "drop the limit flags"
}

// slot returns worker id's cgroup. The spawner calls it on every start of
// the worker, which is where the worker's OOM accounting begins.
func (l *limiter) slot(id int) (slotCgroup, error) {
	var s *cgroup.Slot
	var err error
	if id == agentID {
		s, err = l.h.NamedSlot(agentSlot)
	} else {
		s, err = l.h.Slot(id)
	}
	if err != nil {
		return nil, err
	}
	l.cg[id] = s
	l.started(id, s)
	return s, nil
}

// usage reads slot id's cgroup, if it has one.
func (l *limiter) usage(id int) (cgroup.Usage, bool) {
	c, ok := l.cg[id]
	if !ok {
		return cgroup.Usage{}, false
	}
	u, err := c.Usage()
	return u, err == nil
}

// memoryOver lists the running slots whose working set (the cgroup's
// memory without its inactive file cache, as the kubelet counts it) is over
// limit bytes (--memory-recycle): the whole worker, children included,
// but not the page cache of files it merely read.
func (l *limiter) memoryOver(limit int64) []int {
	var out []int
	for _, id := range slices.Sorted(maps.Keys(l.slots)) {
		c, ok := l.cg[id]
		if !ok || id == agentID || !l.slots[id].running {
			continue
		}
		if u, err := c.Usage(); err == nil && u.WorkingSetBytes > limit {
			out = append(out, id)
		}
	}
	return out
}

// started begins the OOM accounting of a worker started in slot id: kills
// counted before now were not the new worker's.
func (l *limiter) started(id int, c oomCounter) {
	so := l.slots[id]
	if so == nil {
		so = &slotOOM{}
		l.slots[id] = so
	}
	so.c, so.running = c, true
	if n, err := readOOM(c); err == nil {
		so.base, so.seen = n, n
	}
}

// readOOM reads a slot's OOM counters.
func readOOM(c oomCounter) (oomCounts, error) {
	kills, err := c.OOMKills()
	if err != nil {
		return oomCounts{}, err
	}
	limit, known, err := c.LimitOOMs()
	if err != nil {
		return oomCounts{}, err
	}
	return oomCounts{kills: kills, limit: limit, limitKnown: known}, nil
}

// report counts the kills from so.base up to n as reported and returns
// how many there were and whether the slot's own memory limit caused them.
// Only cgroup v2 tells; on v1 the slot's limit is assumed.
func (so *slotOOM) report(n oomCounts) (kills uint64, own bool) {
	if n.kills <= so.base.kills {
		// Nothing new, or counters that went back, as in a slot made
		// afresh: count from here.
		so.base = n
		return 0, false
	}
	kills = n.kills - so.base.kills
	own = !n.limitKnown || n.limit > so.base.limit
	so.base = n
	so.reported += kills
	return kills, own
}

// explain names the OOM killer as the cause of a worker's death, instead of
// a bare "signal 9", when its cgroup's OOM-kill count went up since the
// worker started, beyond the kills check already reported as a surviving
// child's.
func (l *limiter) explain(id int, st reaper.Status) string {
	so := l.slots[id]
	if so == nil || !so.running {
		return ""
	}
	so.running = false
	n, err := readOOM(so.c)
	if err != nil {
		return ""
	}
	so.seen = n
	kills, own := so.report(n)
	if kills == 0 {
		return ""
	}
	limit := l.limitText(id, own)
	if st.Signaled() && st.Signal() == unix.SIGKILL {
		return fmt.Sprintf("killed by the OOM killer (%s)", limit)
	}
	// The kernel chose a child and the worker ended on its own, e.g.
	// exiting 1 when its child died.
	return fmt.Sprintf("%s (a process inside it was killed by the OOM killer, %s)", st, limit)
}

// check reports OOM kills inside workers that kept running: the kernel
// chose a child of the worker, and the worker may not notice. It reports a
// kill on the second check that sees it, when the worker has outlived it
// by oomCheckInterval; a kill of the worker itself is explained at its
// exit instead.
func (l *limiter) check(name func(int) string) {
	for _, id := range slices.Sorted(maps.Keys(l.slots)) {
		so := l.slots[id]
		if !so.running {
			continue
		}
		n, err := readOOM(so.c)
		if err != nil {
			continue
		}
		prev := so.seen
		so.seen = n
		if prev.kills <= so.base.kills {
			continue
		}
		kills, own := so.report(prev)
		what := "a process inside it was"
		if kills > 1 {
			what = fmt.Sprintf("%d processes inside it were", kills)
		}
		l.log.Warn(fmt.Sprintf("%s: %s killed by the OOM killer (%s); the worker itself is still running",
			name(id), what, l.limitText(id, own)), "worker", id, "oom_kills", so.reported)
	}
}

// limitText names the memory limit the OOM killer enforced: the worker's
// own, or (own false) one above it, which in a container is the
// container's, so that nobody raises --memory-limit in vain.
func (l *limiter) limitText(id int, own bool) string {
	memory := l.h.Limits().Memory
	if c, ok := l.cg[id]; ok {
		memory = c.Limits().Memory
	}
	switch {
	case !own && memory > 0:
		return "a memory limit above the worker's, such as the container's; the worker's is " + cgroup.FormatBytes(memory)
	case !own:
		return "a memory limit above the worker's, such as the container's"
	case memory == 0:
		return "cgroup memory limit"
	}
	return "memory limit " + cgroup.FormatBytes(memory)
}

// OOMKills is the number of OOM kills goinit has reported per worker slot,
// of workers and of processes inside them. Nothing reads it yet: it is for
// the per-worker metrics of issue 4. Like every limiter method, call it
// from the supervisor's goroutine.
func (l *limiter) OOMKills() map[int]uint64 {
	m := make(map[int]uint64, len(l.slots))
	for id, so := range l.slots {
		m[id] = so.reported
	}
	return m
}

// availableCPUs derives --workers=auto from the cgroup CPU quota, the
// cpuset and the online CPUs.
func availableCPUs() (int, string, error) {
	c, err := cgroup.AvailableCPUs()
	if err != nil {
		return 0, "", err
	}
	return c.N, c.How, nil
}
