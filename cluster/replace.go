package cluster

import (
	"fmt"
	"strings"
	"time"
)

// reload is a rolling replacement of every worker, one slot at a time
// (Config.Surge at most at once): each successor starts next to the
// process it replaces, and that process is stopped only once the successor
// is ready, so a shared socket always has a worker accepting.
type reload struct {
	release  int
	pending  []int // slot ids still to replace, in order
	active   int   // replacements in flight
	replaced []int
	started  time.Time
}

// recycleReq asks for one slot's graceful replacement outside a reload.
type recycleReq struct {
	id     int
	reason string // "max-lifetime", "memory"
}

// ReloadState is what Reload did with the request.
type ReloadState int

const (
	// ReloadStarted: the replacement of every worker began.
	ReloadStarted ReloadState = iota
	// ReloadQueued: a reload is running; this one follows it, never
	// overlapping it.
	ReloadQueued
	// ReloadRefused: nothing was done (stopping, or the command cannot
	// be prepared); the reason was logged and sent as ReloadFailed.
	ReloadRefused
)

// Reload replaces every worker, one at a time, with a new release of the
// command (Config.Release). A successor that exits or is not ready within
// Ready.Timeout stops the reload: workers not replaced yet keep running, the
// failed slot keeps (or restarts with) its previous release, and goinit
// goes on. A reload asked for during a reload is queued.
func (p *Pool) Reload(now time.Time) ReloadState {
	if p.stopping {
		return ReloadRefused
	}
	if p.reload != nil {
		p.queued = true
		p.cfg.Log.Info("reload requested while one is in progress; it will follow")
		return ReloadQueued
	}
	release := 0
	if p.cfg.Release != nil {
		r, err := p.cfg.Release()
		if err != nil {
			msg := fmt.Sprintf("reload failed before any worker was replaced: %v; every worker keeps running", err)
			p.cfg.Log.Error(msg)
			p.emit(Event{Kind: ReloadFailed, Reason: msg})
			return ReloadRefused
		}
		release = r
	}
	rl := &reload{release: release, started: now}
	for _, s := range p.slots {
		if s.State != Done && s.State != Failed && s.State != Stopping {
			rl.pending = append(rl.pending, s.ID)
		}
	}
	p.reload = rl
	p.cfg.Log.Info(fmt.Sprintf("reloading: replacing %d worker(s) one at a time with release %d; each old worker stops once its replacement is ready",
		len(rl.pending), release))
	p.advance(now)
	return ReloadStarted
}

// NeedsRelease reports whether a start may still run release n: it is a
// slot's own (a restart after a crash, or a recycle, runs it again) or
// that of its successor still starting, the release of the reload in
// progress, or that of the last complete reload, which a new slot runs.
// Any other release can be let go.
func (p *Pool) NeedsRelease(n int) bool {
	if n == p.latest || (p.reload != nil && n == p.reload.release) {
		return true
	}
	for _, s := range p.slots {
		// A successor still starting (left by a reload rolled back
		// beside it, with --reload-surge) takes its slot over later.
		if s.Release == n || (s.next != nil && s.next.release == n) {
			return true
		}
	}
	return false
}

// Reloading reports whether a reload is in progress.
func (p *Pool) Reloading() bool { return p.reload != nil }

// advance starts the next replacements of a reload, then the recycles, up
// to Config.Surge at once, and ends a reload that has nothing left.
func (p *Pool) advance(now time.Time) {
	if p.stopping {
		return
	}
	if rl := p.reload; rl != nil {
		// A replacement ready at once promotes, and advances, from inside
		// this loop: stop as soon as that ended or aborted this reload.
		for p.reload == rl && rl.active < p.cfg.Surge && len(rl.pending) > 0 {
			id := rl.pending[0]
			rl.pending = rl.pending[1:]
			s := p.slot(id)
			if s == nil || s.next != nil || s.State == Done || s.State == Failed || s.State == Stopping {
				continue
			}
			if err := p.startSuccessor(s, rl.release, "reload", now); err != nil {
				p.abortReload(s, fmt.Sprintf("its replacement could not be started: %v", err), 0)
				return
			}
			rl.active++
		}
		if p.reload == rl && rl.active == 0 && len(rl.pending) == 0 {
			p.reload = nil
			p.latest = rl.release
			msg := fmt.Sprintf("reload complete: %d worker(s) replaced with release %d in %s",
				len(rl.replaced), rl.release, now.Sub(rl.started).Round(time.Millisecond))
			p.cfg.Log.Info(msg)
			p.emit(Event{Kind: ReloadDone, Reason: msg})
			if p.queued {
				p.queued = false
				p.Reload(now)
			}
		}
		return
	}
	for len(p.recycle) > 0 && p.inFlight() < p.cfg.Surge {
		rq := p.recycle[0]
		p.recycle = p.recycle[1:]
		s := p.slot(rq.id)
		if s == nil || s.next != nil || s.State != Running {
			continue
		}
		if err := p.startSuccessor(s, s.Release, rq.reason, now); err != nil {
			p.cfg.Log.Warn(fmt.Sprintf("%s: cannot start its replacement (%s): %v; it keeps running", p.cfg.Name(s.ID), rq.reason, err))
		}
	}
}

// inFlight counts successors that are starting.
func (p *Pool) inFlight() int {
	n := 0
	for _, s := range p.slots {
		if s.next != nil {
			n++
		}
	}
	return n
}

// startSuccessor starts a process next to slot s's current one.
func (p *Pool) startSuccessor(s *Slot, release int, why string, now time.Time) error {
	pr, err := p.spawn(s, release, successor, now)
	if err != nil {
		return err
	}
	if s.cur == nil && (s.State == BackingOff || s.State == Idle) {
		// Nothing to replace: the slot runs the new release at once,
		// still as a successor, so that a failure rolls it back.
		s.State = Starting
	}
	pr.replaced = why
	s.next, s.Successor = pr, pr.pid
	p.cfg.Log.Info(fmt.Sprintf("%s: started its replacement (pid %d, %s); the current process keeps serving until it is ready",
		p.cfg.Name(s.ID), pr.pid, why), p.attr(s.ID), "pid", pr.pid)
	if pr.ready {
		p.becameReady(s, pr, now, "")
	}
	return nil
}

// promote makes ready successor pr slot s's process and drains the one it
// replaced.
func (p *Pool) promote(s *Slot, pr *proc, now time.Time) {
	old := s.cur
	pr.role = current
	s.cur, s.next, s.Successor = pr, nil, 0
	s.Pid, s.Started, s.Release, s.State = pr.pid, pr.started, pr.release, Running
	if old != nil {
		old.cause = pr.replaced
		p.drain(old, "replaced by pid "+fmt.Sprint(pr.pid), now)
		p.cfg.Log.Info(fmt.Sprintf("%s: replacement (pid %d) is ready; sent %s to the old process (pid %d), SIGKILL in %s",
			p.cfg.Name(s.ID), pr.pid, sigName(p.cfg.StopSignal), old.pid, p.cfg.StopTimeout), p.attr(s.ID), "pid", pr.pid)
	}
	if rl := p.reload; rl != nil && pr.replaced == "reload" {
		rl.active--
		rl.replaced = append(rl.replaced, s.ID)
	}
	p.advance(now)
}

// drain sends old the stop signal and kills it at the stop deadline; its
// exit is never restarted.
func (p *Pool) drain(old *proc, why string, now time.Time) {
	old.role, old.replaced = draining, why
	old.readyBy, old.readyAt, old.retireAt = time.Time{}, time.Time{}, time.Time{}
	if p.cfg.StopTimeout > 0 {
		old.killAt = now.Add(p.cfg.StopTimeout)
	}
	p.kill(old.pid, p.cfg.StopSignal, p.cfg.Group)
}

// replacementFailed handles a successor that exited or was not ready in
// time: the slot keeps its current process, or restarts its previous
// release if that is gone too; a reload stops there.
func (p *Pool) replacementFailed(s *Slot, pr *proc, why string, now time.Time) {
	if pr.replaced == "reload" && p.reload != nil {
		p.abortReload(s, fmt.Sprintf("its replacement (pid %d, release %d) %s", pr.pid, pr.release, why), pr.pid)
	} else {
		p.cfg.Log.Warn(fmt.Sprintf("%s: its replacement (pid %d, %s) %s; the current process keeps running", p.cfg.Name(s.ID), pr.pid, pr.replaced, why),
			p.attr(s.ID))
		if pr.replaced != "reload" && p.cfg.MaxLifetime > 0 && s.cur != nil {
			s.cur.retireAt = now.Add(p.cfg.MaxLifetime)
		}
	}
	if s.cur == nil && !p.stopping {
		// The process it was to replace is gone as well: restart the
		// slot's previous release, through the restart policy.
		s.State = Running
		d := s.exited(s.Last, now, p.cfg.Policy, p.cfg.Rand(), true)
		p.logExit(s, 0, s.Last, s.Last.String(), d, "")
	}
	p.advance(now)
}

// abortReload stops the reload in progress after slot s failed.
func (p *Pool) abortReload(s *Slot, why string, pid int) {
	rl := p.reload
	p.reload = nil
	var kept []string
	for _, sl := range p.slots {
		if sl.ID != s.ID && !contains(rl.replaced, sl.ID) && sl.State.Live() {
			kept = append(kept, fmt.Sprint(sl.ID))
		}
	}
	keep := "its previous release is restarted in its place (with the code on disk now)"
	if s.cur != nil {
		keep = fmt.Sprintf("it keeps running the previous release (pid %d)", s.cur.pid)
	}
	msg := fmt.Sprintf("reload failed: %s: %s; rolled back: %s", p.cfg.Name(s.ID), why, keep)
	if len(kept) > 0 {
		msg += fmt.Sprintf("; worker(s) %s were not replaced and keep running", strings.Join(kept, ", "))
	}
	if len(rl.replaced) > 0 {
		msg += fmt.Sprintf("; worker(s) %s already run release %d", joinInts(rl.replaced), rl.release)
	}
	msg += "; fix the command and reload again (SIGHUP)"
	p.cfg.Log.Error(msg, p.attr(s.ID), "pid", pid)
	p.emit(Event{Kind: ReloadFailed, ID: s.ID, Pid: pid, Reason: msg})
	if p.queued {
		// The queued reload is for the same code: it would fail the same.
		p.queued = false
	}
}

// Recycle replaces worker id gracefully, as a reload does for one slot,
// for reason ("max-lifetime", "memory"). It is a no-op while stopping, for
// a slot that is not running or already being replaced.
func (p *Pool) Recycle(id int, reason string, now time.Time) {
	s := p.slot(id)
	if p.stopping || s == nil || s.State != Running || s.next != nil {
		return
	}
	for _, rq := range p.recycle {
		if rq.id == id {
			return
		}
	}
	p.cfg.Log.Info(fmt.Sprintf("%s (pid %d): recycling (%s)", p.cfg.Name(id), s.Pid, reason), p.attr(id))
	p.recycle = append(p.recycle, recycleReq{id: id, reason: reason})
	p.advance(now)
}

// Scale changes the number of worker slots to n (at least 1): new slots
// start at once; removed ones, the highest ids, are stopped gracefully.
func (p *Pool) Scale(n int, now time.Time) error {
	if n < 1 {
		return fmt.Errorf("cannot scale to %d workers: at least 1", n)
	}
	if p.stopping {
		return fmt.Errorf("cannot scale while stopping")
	}
	old := len(p.slots)
	switch {
	case n > old:
		for id := old; id < n; id++ {
			s := &Slot{ID: id, Release: p.latest}
			p.slots = append(p.slots, s)
			if err := p.startSlot(s, now); err != nil {
				p.cfg.Log.Error(fmt.Sprintf("%s could not be started: %v", p.cfg.Name(id), err), p.attr(id))
				s.State, s.Last = Done, exitStatusOf(err)
			}
		}
	case n < old:
		for _, s := range p.slots[n:] {
			for _, pr := range []*proc{s.cur, s.next} {
				if pr != nil {
					pr.cause = "scaled down"
					p.drain(pr, "scaled down", now)
				}
			}
			s.cur, s.next, s.State = nil, nil, Done
		}
		p.slots = p.slots[:n]
		if rl := p.reload; rl != nil {
			keep := rl.pending[:0]
			for _, id := range rl.pending {
				if id < n {
					keep = append(keep, id)
				}
			}
			rl.pending = keep
			rl.active = 0
			for _, s := range p.slots {
				if s.next != nil && s.next.replaced == "reload" {
					rl.active++
				}
			}
		}
	}
	if n != old {
		p.cfg.Log.Info(fmt.Sprintf("scaled from %d to %d worker(s)", old, n))
	}
	p.advance(now)
	return nil
}

// Workers is the number of worker slots.
func (p *Pool) Workers() int { return len(p.slots) }

func contains(ids []int, id int) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func joinInts(ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return strings.Join(parts, ", ")
}
