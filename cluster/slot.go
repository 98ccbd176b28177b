package cluster

import (
	"fmt"
	"time"

	"github.com/goinit/goinit/reaper"
)

// State is where a worker slot is in its life cycle.
type State int

// The states of a slot. docs/ARCHITECTURE.md has the transition table.
const (
	// Idle: never started.
	Idle State = iota
	// Starting: forked, not yet ready (see Readiness).
	Starting
	// Running: ready, up and serving.
	Running
	// Stopping: sent the stop signal, waiting for it to exit.
	Stopping
	// BackingOff: exited, waiting for its restart delay.
	BackingOff
	// Failed: crash loop or permanent exit code; never restarted.
	Failed
	// Done: exited and not to be restarted (clean exit, restart never,
	// or stopped).
	Done
)

func (s State) String() string {
	switch s {
	case Idle:
		return "idle"
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Stopping:
		return "stopping"
	case BackingOff:
		return "backing-off"
	case Failed:
		return "failed"
	case Done:
		return "done"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Live reports whether a process occupies the slot.
func (s State) Live() bool { return s == Starting || s == Running || s == Stopping }

// Slot is one worker position; its ID stays the same across restarts.
type Slot struct {
	// ID is the worker id (GOINIT_WORKER_ID), 0..N-1.
	ID int
	// State is the current state.
	State State
	// Pid is the live worker's pid, 0 when none.
	Pid int
	// Started is when the current or last process started.
	Started time.Time
	// Last is how the last process ended.
	Last reaper.Status
	// Restarts counts every restart of the slot.
	Restarts int
	// NextStart is when a BackingOff slot starts again.
	NextStart time.Time
	// Release is the release the slot runs (0 before any reload); a
	// restart after a crash starts the same one.
	Release int
	// Successor is the pid of the process started to replace the
	// current one (reload, recycle), 0 when none.
	Successor int

	delay  time.Duration
	recent []time.Time // restarts within the policy window
	cur    *proc       // the slot's process, nil when none
	next   *proc       // its successor, nil when none
}

// Outcome is what an exit led to.
type Outcome int

const (
	// Restarting: the slot backs off, then starts again.
	Restarting Outcome = iota
	// Finished: the slot is Done.
	Finished
	// CrashLoop: too many restarts within the window; the slot Failed.
	CrashLoop
	// Permanent: a permanent exit code; the slot Failed.
	Permanent
)

// Decision is the result of Slot.exited.
type Decision struct {
	Outcome Outcome
	// Delay before the restart, for Restarting.
	Delay time.Duration
	// Uptime of the process that exited.
	Uptime time.Duration
	// InWindow counts the restarts of the slot within the window,
	// including this one, for Restarting and CrashLoop.
	InWindow int
}

// started moves the slot to Starting with a new process.
func (s *Slot) started(pid int, now time.Time) {
	s.State, s.Pid, s.Started = Starting, pid, now
}

// exited is the slot's transition function for a process exit: it returns
// the decision and leaves the slot in its next state. r is a uniform random
// number in [0, 1) for the jitter, a parameter so tests are exact. forced
// is true when goinit killed the process as a failure (hung, not ready in
// time): it is then restarted whatever its status, unless stopping.
func (s *Slot) exited(st reaper.Status, now time.Time, p Policy, r float64, forced bool) Decision {
	stopped := s.State == Stopping
	uptime := now.Sub(s.Started)
	s.Pid, s.Last = 0, st
	d := Decision{Uptime: uptime}
	switch {
	case !stopped && p.permanent(st):
		s.State, d.Outcome = Failed, Permanent
		return d
	case !(forced && !stopped) && !p.wantsRestart(st, stopped):
		s.State, d.Outcome = Done, Finished
		return d
	}
	if uptime >= p.MinUptime || s.delay == 0 {
		s.delay = p.Delay
	} else {
		s.delay = min(2*s.delay, p.MaxDelay)
	}
	keep := s.recent[:0]
	for _, t := range s.recent {
		if now.Sub(t) < p.Window {
			keep = append(keep, t)
		}
	}
	s.recent = append(keep, now)
	d.InWindow = len(s.recent)
	if p.MaxRestarts > 0 && d.InWindow > p.MaxRestarts {
		s.State, d.Outcome = Failed, CrashLoop
		return d
	}
	d.Outcome, d.Delay = Restarting, p.jittered(s.delay, r)
	s.State, s.NextStart = BackingOff, now.Add(d.Delay)
	s.Restarts++
	return d
}
