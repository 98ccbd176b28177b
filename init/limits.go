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
	h   *cgroup.Hierarchy
	log *slog.Logger
	// procs are the processes started in a cgroup, by pid, until their
	// exit is explained.
	procs map[int]*procOOM
	// reported totals the OOM kills logged per slot id, for OOMKills.
	reported map[int]uint64
	// last is the cgroup the latest process of each slot id started in,
	// and all every cgroup a process of it has run in.
	last map[int]*cgroup.Slot
	all  map[int][]*cgroup.Slot
}

func newLimiter(h *cgroup.Hierarchy, log *slog.Logger) *limiter {
	return &limiter{h: h, log: log, procs: map[int]*procOOM{}, reported: map[int]uint64{},
		last: map[int]*cgroup.Slot{}, all: map[int][]*cgroup.Slot{}}
}

// oomCounter is what the limiter reads of a slot: *cgroup.Slot.
type oomCounter interface {
	OOMKills() (uint64, error)
	LimitOOMs() (n uint64, ok bool, err error)
}

// oomCounts are a cgroup's OOM counters at one moment.
type oomCounts struct {
	// kills counts processes the OOM killer killed in the cgroup.
	kills uint64
	// limit counts the times the cgroup's own memory limit ran out
	// (cgroup v2 only, limitKnown), to tell its limit from the
	// container's.
	limit      uint64
	limitKnown bool
}

// procOOM is one worker (or agent) process: its cgroup, and the OOM
// accounting of what runs there while it does.
//
// The kernel counts an OOM kill when it sends SIGKILL, before the worker
// dies and is reaped, so the periodic check can see the kill that is
// about to end the worker. It therefore reports only kills it already saw
// on the check before, oomCheckInterval ago: a worker killed then has been
// reaped and explained since, which ended its accounting.
type procOOM struct {
	id int        // its slot (agentID for the agent)
	c  oomCounter // its cgroup's counters
	// cg is the same cgroup, for its usage and limits; nil in tests.
	cg *cgroup.Slot
	// base is what new kills are counted from: the counts when the worker
	// started, moved up to everything check has reported.
	base oomCounts
	// seen is what the last check read, reported by the next one if the
	// worker still runs.
	seen oomCounts
}

// maxSiblings bounds the cgroups of one slot: its own and its siblings
// (cgroup.Slot.Sibling), one for each process of the slot that runs at the
// same time: the current one, a replacement starting, and old ones still
// draining from handovers before (--stop-timeout is long, recycles and
// reloads can follow each other).
const maxSiblings = 8

// placement is the cgroup one start of a slot runs in, as the spawner
// sees it: Started tells the limiter the pid it got.
type placement struct {
	*cgroup.Slot
	l  *limiter
	id int
}

// Started begins the OOM accounting of process pid.
func (p placement) Started(pid int) { p.l.started(p.id, pid, p.Slot, p.Slot) }

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
	l := newLimiter(h, log)
	log.Info(fmt.Sprintf("per-worker limits: %s (cgroup v%d)", limits, h.Version()))
	if cfg.agent != nil && !cfg.agentLimits.IsZero() {
		log.Info(fmt.Sprintf("agent limits: %s", cfg.agentLimits))
	}
	env.agentCgroup = func(int) (slotCgroup, error) { return l.slot(agentID) }
	env.agentExplain = func(_, pid int, st reaper.Status) string { return l.explain(agentID, pid, st) }
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

// slot returns the cgroup for a start of slot id (agentID: the agent's).
// A restart, with no other process of the slot running, goes where the
// slot's last process ran, with whatever that one left behind, as it
// always did. A replacement that runs beside the slot's current process
// (a reload's, a recycle's) goes into the first of the slot's cgroups that
// is empty, a sibling of its own (worker-N.1, ...), so that each has the
// slot's full limits instead of sharing them.
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
	if !l.running(id) {
		if last, ok := l.last[id]; ok {
			s = last
		}
		return placement{Slot: s, l: l, id: id}, nil
	}
	for n := range maxSiblings {
		c := s
		if n > 0 {
			if c, err = s.Sibling(n); err != nil {
				l.log.Warn(fmt.Sprintf("cannot make a cgroup for a replacement beside %s: %v; it shares the slot's limits with the process it replaces", s, err))
				break
			}
		}
		if empty, err := c.Empty(); err == nil && empty {
			return placement{Slot: c, l: l, id: id}, nil
		}
	}
	l.log.Warn(fmt.Sprintf("%s and its %d siblings all hold processes; the replacement shares %s and its limits", s, maxSiblings-1, s))
	return placement{Slot: s, l: l, id: id}, nil
}

// running reports whether a process of slot id is running.
func (l *limiter) running(id int) bool {
	for _, po := range l.procs {
		if po.id == id {
			return true
		}
	}
	return false
}

// usage reads the cgroups of slot id, whose current process is pid: the
// memory of pid's cgroup, and the CPU time of all the slot's cgroups (a
// process and its replacement alternate between them, and each cgroup's
// count only grows, so their sum is the slot's, never going back).
func (l *limiter) usage(id, pid int) (cgroup.Usage, bool) {
	// Between two processes (backing off): what is left in the last
	// one's cgroup.
	cur := l.last[id]
	if po, ok := l.procs[pid]; ok && po.cg != nil {
		cur = po.cg
	}
	var u cgroup.Usage
	var cpu time.Duration
	found := false
	for _, c := range l.all[id] {
		cu, err := c.Usage()
		if err != nil {
			continue
		}
		cpu += cu.CPUTime
		if c == cur {
			u, found = cu, true
		}
	}
	u.CPUTime = cpu
	return u, found
}

// memoryOver lists the worker processes whose working set (the cgroup's
// memory without its inactive file cache, as the kubelet counts it) is over
// limit bytes (--memory-recycle): the whole worker, children included,
// but not the page cache of files it merely read.
func (l *limiter) memoryOver(limit int64) []int {
	var out []int
	for _, pid := range slices.Sorted(maps.Keys(l.procs)) {
		po := l.procs[pid]
		if po.cg == nil || po.id == agentID {
			continue
		}
		if u, err := po.cg.Usage(); err == nil && u.WorkingSetBytes > limit {
			out = append(out, pid)
		}
	}
	return out
}

// started begins the OOM accounting of process pid of slot id, started in
// the cgroup c (cg): kills counted there before now were not its.
func (l *limiter) started(id, pid int, c oomCounter, cg *cgroup.Slot) {
	po := &procOOM{id: id, c: c, cg: cg}
	if n, err := readOOM(c); err == nil {
		po.base, po.seen = n, n
	}
	l.procs[pid] = po
	if cg != nil {
		l.last[id] = cg
		if !slices.Contains(l.all[id], cg) {
			l.all[id] = append(l.all[id], cg)
		}
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

// report counts the kills from po.base up to n as reported and returns
// how many there were and whether the cgroup's own memory limit caused
// them. Only cgroup v2 tells; on v1 the slot's limit is assumed.
func (l *limiter) report(po *procOOM, n oomCounts) (kills uint64, own bool) {
	if n.kills <= po.base.kills {
		// Nothing new, or counters that went back, as in a slot made
		// afresh: count from here.
		po.base = n
		return 0, false
	}
	kills = n.kills - po.base.kills
	own = !n.limitKnown || n.limit > po.base.limit
	po.base = n
	l.reported[po.id] += kills
	return kills, own
}

// explain names the OOM killer as the cause of the death of process pid,
// instead of a bare "signal 9", when its cgroup's OOM-kill count went up
// since it started, beyond the kills check already reported as a
// surviving child's. It ends the process's accounting.
func (l *limiter) explain(id, pid int, st reaper.Status) string {
	po, ok := l.procs[pid]
	if !ok {
		return ""
	}
	delete(l.procs, pid)
	n, err := readOOM(po.c)
	if err != nil {
		return ""
	}
	kills, own := l.report(po, n)
	if kills == 0 {
		return ""
	}
	limit := l.limitText(po, own)
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
	for _, pid := range slices.Sorted(maps.Keys(l.procs)) {
		po := l.procs[pid]
		n, err := readOOM(po.c)
		if err != nil {
			continue
		}
		prev := po.seen
		po.seen = n
		if prev.kills <= po.base.kills {
			continue
		}
		kills, own := l.report(po, prev)
		what := "a process inside it was"
		if kills > 1 {
			what = fmt.Sprintf("%d processes inside it were", kills)
		}
		l.log.Warn(fmt.Sprintf("%s: %s killed by the OOM killer (%s); the worker itself is still running",
			name(po.id), what, l.limitText(po, own)), "worker", po.id, "pid", pid, "oom_kills", l.reported[po.id])
	}
}

// limitText names the memory limit the OOM killer enforced: the worker's
// own, or (own false) one above it, which in a container is the
// container's, so that nobody raises --memory-limit in vain.
func (l *limiter) limitText(po *procOOM, own bool) string {
	memory := l.h.Limits().Memory
	if po.cg != nil {
		memory = po.cg.Limits().Memory
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

// OOMKills is the number of OOM kills goinit has reported per slot id
// (agentID for the agent), of workers and of processes inside them, for
// status and metrics.
func (l *limiter) OOMKills() map[int]uint64 {
	return maps.Clone(l.reported)
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
