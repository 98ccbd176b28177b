package cluster

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/signals"
)

// Due acts on everything whose time has come: restarts of backed-off
// slots, readiness after a delay, readiness timeouts, hung workers
// (--watchdog), kills of processes that outlived their stop deadline, and
// recycling at --max-lifetime. A slot whose command no longer starts
// (binary gone) counts as a crash with the StartError's code.
func (p *Pool) Due(now time.Time) {
	if !p.stopping {
		for _, s := range p.slots {
			if s.State != BackingOff || now.Before(s.NextStart) {
				continue
			}
			if err := p.startSlot(s, now); err != nil {
				p.cfg.Log.Error(fmt.Sprintf("%s could not be restarted: %v", p.cfg.Name(s.ID), err), p.attr(s.ID))
				s.Started = now
				st := exitStatusOf(err)
				s.State = Running
				d := s.exited(st, now, p.cfg.Policy, p.cfg.Rand(), false)
				if s.State != BackingOff {
					p.note(st)
				}
				p.logExit(s, 0, st, p.explain(s.ID, 0, st), d, "")
			}
		}
	}
	for _, pid := range p.pids() {
		pr, ok := p.byPid[pid]
		if !ok {
			continue
		}
		p.procDue(pr, now)
	}
}

// procDue acts on one process's deadlines.
func (p *Pool) procDue(pr *proc, now time.Time) {
	s := p.slot(pr.id)
	live := pr.role == current || pr.role == successor
	switch {
	case live && !pr.ready && !pr.readyAt.IsZero() && !now.Before(pr.readyAt):
		p.becameReady(s, pr, now, "after --ready=delay")
	case live && !pr.ready && !pr.readyBy.IsZero() && !now.Before(pr.readyBy):
		p.notReady(s, pr, now)
	case pr.role == current && pr.ready && p.cfg.Watchdog > 0 && !p.stopping && pr.killAt.IsZero() && pr.forced == "" &&
		!now.Before(pr.lastBeat.Add(p.cfg.Watchdog)):
		pr.forced = "hung"
		pr.killAt = now.Add(p.cfg.WatchdogGrace)
		p.kill(pr.pid, unix.SIGABRT, p.cfg.Group)
		p.cfg.Log.Error(fmt.Sprintf("%s (pid %d) is hung: no heartbeat for %s (--watchdog); sent SIGABRT so it can dump its stack, SIGKILL in %s",
			p.cfg.Name(pr.id), pr.pid, p.cfg.Watchdog, p.cfg.WatchdogGrace), p.attr(pr.id), "pid", pr.pid)
	case !pr.killAt.IsZero() && !now.Before(pr.killAt):
		pr.killAt = time.Time{}
		p.kill(pr.pid, unix.SIGKILL, p.cfg.Group)
		if pr.role == draining {
			p.cfg.Log.Warn(fmt.Sprintf("%s: the old process (pid %d, %s) still runs %s after %s; sent SIGKILL",
				p.cfg.Name(pr.id), pr.pid, pr.replaced, p.cfg.StopTimeout, signals.Name(p.cfg.StopSignal)), p.attr(pr.id), "pid", pr.pid)
		}
	case pr.role == current && !pr.retireAt.IsZero() && !now.Before(pr.retireAt):
		pr.retireAt = time.Time{}
		p.Recycle(pr.id, fmt.Sprintf("max-lifetime %s reached", p.cfg.MaxLifetime), now)
	}
}

// notReady fails a start that did not become ready within the timeout.
func (p *Pool) notReady(s *Slot, pr *proc, now time.Time) {
	pr.readyBy = time.Time{}
	why := fmt.Sprintf("was not ready within %s (--ready-timeout, --ready=%s)", p.cfg.Ready.Timeout, p.cfg.Ready.Mode)
	p.kill(pr.pid, unix.SIGKILL, p.cfg.Group)
	if pr.role == successor {
		pr.role = discarded
		s.next, s.Successor = nil, 0
		p.replacementFailed(s, pr, why+"; killed it", now)
		return
	}
	pr.forced = "not-ready"
	p.cfg.Log.Error(fmt.Sprintf("%s (pid %d) %s; killed it", p.cfg.Name(pr.id), pr.pid, why), p.attr(pr.id), "pid", pr.pid)
}

// NextDeadline is the earliest time Due has something to do, if any.
func (p *Pool) NextDeadline() (time.Time, bool) {
	next, found := p.NextStart()
	take := func(t time.Time) {
		if !t.IsZero() && (!found || t.Before(next)) {
			next, found = t, true
		}
	}
	for _, pr := range p.byPid {
		if pr.role == current || pr.role == successor {
			take(pr.readyAt)
			take(pr.readyBy)
		}
		take(pr.killAt)
		if pr.role == current {
			take(pr.retireAt)
			if pr.ready && p.cfg.Watchdog > 0 && !p.stopping && pr.killAt.IsZero() && pr.forced == "" {
				take(pr.lastBeat.Add(p.cfg.Watchdog))
			}
		}
	}
	return next, found
}

// NextStart is the earliest time a backed-off slot is due, if any.
func (p *Pool) NextStart() (time.Time, bool) {
	var next time.Time
	found := false
	if p.stopping {
		return next, false
	}
	for _, s := range p.slots {
		if s.State == BackingOff && (!found || s.NextStart.Before(next)) {
			next, found = s.NextStart, true
		}
	}
	return next, found
}

// exitStatusOf is the status a start failure stands for.
func exitStatusOf(err error) reaper.Status {
	code := 1
	var se *StartError
	if errors.As(err, &se) {
		code = se.Code
	}
	return reaper.ExitStatus(code)
}

func sigName(sig unix.Signal) string { return "SIG" + signals.Name(sig) }
