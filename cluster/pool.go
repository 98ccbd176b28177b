// Package cluster runs a fixed number of worker processes and keeps them
// running: it restarts crashed workers with jittered exponential backoff and
// gives up, loudly, on a crash loop.
//
// The pool owns the life cycle of each worker slot (a small state machine,
// see Slot) and nothing else: it does not fork, wait or bind. The caller
// supplies a StartFunc that starts a process, feeds the pool every exit it
// reaps, and calls Due when the pool's timer fires. All methods are meant to
// be called from one goroutine, the supervisor's loop, so the pool holds no
// locks.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/signals"
)

// StartFunc starts the process of worker id and returns its pid. The pid
// must already be known to the reaper when StartFunc returns.
type StartFunc func(id int) (pid int, err error)

// StartError is a start failure with the exit code it stands for (127: not
// found, 126: not executable, as shells report them).
type StartError struct {
	Code int
	Err  error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Config configures a Pool.
type Config struct {
	// Workers is the number of slots, at least 1.
	Workers int
	// Policy decides restarts.
	Policy Policy
	// Start starts one worker process.
	Start StartFunc
	// Log receives one line per start, exit and decision.
	Log *slog.Logger
	// Name names a slot in log lines; default "worker N".
	Name func(id int) string
	// Explain may describe an exit better than its status, e.g. "killed by
	// the OOM killer (memory limit 256MiB)"; "" keeps the status.
	Explain func(id int, st reaper.Status) string
	// Rand returns uniform numbers in [0, 1) for the jitter; default
	// math/rand/v2.
	Rand func() float64
	// Quiet logs starts and final exits at debug level: a single command
	// under an init should be as silent as it is under tini.
	Quiet bool
}

// Failure is why a pool gave up.
type Failure struct {
	// Slot is the worker that caused it.
	Slot int
	// Status is that worker's last exit.
	Status reaper.Status
	// Reason is the log line that explained it.
	Reason string
}

// Pool keeps Config.Workers worker processes running.
type Pool struct {
	cfg      Config
	slots    []*Slot
	byPid    map[int]*Slot
	stopping bool
	stopSig  unix.Signal
	failure  *Failure
	firstBad *reaper.Status
}

// New returns a pool with every slot Idle.
func New(cfg Config) *Pool {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == nil {
		cfg.Name = func(id int) string { return fmt.Sprintf("worker %d", id) }
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	p := &Pool{cfg: cfg, byPid: map[int]*Slot{}}
	for i := range cfg.Workers {
		p.slots = append(p.slots, &Slot{ID: i})
	}
	return p
}

// Start starts every Idle slot. A start failure here is returned at once:
// a command that cannot run at boot will not run on retry either.
func (p *Pool) Start(now time.Time) error {
	for _, s := range p.slots {
		if s.State != Idle {
			continue
		}
		if err := p.startSlot(s, now); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pool) startSlot(s *Slot, now time.Time) error {
	pid, err := p.cfg.Start(s.ID)
	if err != nil {
		return err
	}
	s.started(pid, now)
	// Without a readiness check, a started worker counts as running.
	s.State = Running
	p.byPid[pid] = s
	p.cfg.Log.Log(context.Background(), p.infoLevel(), p.cfg.Name(s.ID)+" started", "worker", s.ID, "pid", pid, "restarts", s.Restarts)
	return nil
}

// HandleExit feeds the pool one reaped exit. It returns false when pid is
// not one of its workers.
func (p *Pool) HandleExit(pid int, st reaper.Status, now time.Time) bool {
	s, ok := p.byPid[pid]
	if !ok {
		return false
	}
	delete(p.byPid, pid)
	wasStopping := s.State == Stopping
	d := s.exited(st, now, p.cfg.Policy, p.cfg.Rand())
	p.note(s, st, wasStopping)
	p.logExit(s, pid, st, d)
	return true
}

// note remembers the first exit that was not clean, for Result.
func (p *Pool) note(s *Slot, st reaper.Status, stopped bool) {
	if p.firstBad != nil || st.Success() {
		return
	}
	if stopped && st.Signaled() && st.Signal() == p.stopSig {
		return
	}
	if s.State == BackingOff {
		return // a crash that is retried is not the pool's result
	}
	p.firstBad = &st
}

func (p *Pool) logExit(s *Slot, pid int, st reaper.Status, d Decision) {
	name := p.cfg.Name(s.ID)
	how := st.String()
	if p.cfg.Explain != nil {
		if e := p.cfg.Explain(s.ID, st); e != "" {
			how = e
		}
	}
	head := fmt.Sprintf("%s (pid %d) %s after %s", name, pid, how, d.Uptime.Round(time.Millisecond))
	attrs := []any{"worker", s.ID, "pid", pid, "status", st.Code(), "uptime", d.Uptime.Round(time.Millisecond)}
	pol := p.cfg.Policy
	switch d.Outcome {
	case Restarting:
		limit := "no limit"
		if pol.MaxRestarts > 0 {
			limit = fmt.Sprintf("restart %d of %d in %s", d.InWindow, pol.MaxRestarts, pol.Window)
		}
		p.cfg.Log.Warn(fmt.Sprintf("%s; restarting in %s (%s)", head, d.Delay.Round(time.Millisecond), limit), attrs...)
	case Finished:
		why := "restart=" + pol.Restart.String()
		if p.stopping {
			why = "stopping"
		}
		p.cfg.Log.Log(context.Background(), p.infoLevel(), fmt.Sprintf("%s; not restarting (%s)", head, why), attrs...)
	case CrashLoop:
		msg := fmt.Sprintf("%s is crash-looping: %d restarts within %s (limit %d), last %s; stopping and exiting with status %d",
			name, d.InWindow-1, pol.Window, pol.MaxRestarts, how, st.Code())
		p.fail(s, st, msg, attrs)
	case Permanent:
		msg := fmt.Sprintf("%s; exit code %d is permanent (--permanent-exit-codes): stopping and exiting with %d", head, st.Code(), st.Code())
		p.fail(s, st, msg, attrs)
	}
}

func (p *Pool) infoLevel() slog.Level {
	if p.cfg.Quiet {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func (p *Pool) fail(s *Slot, st reaper.Status, msg string, attrs []any) {
	p.cfg.Log.Error(msg, attrs...)
	if p.failure == nil {
		p.failure = &Failure{Slot: s.ID, Status: st, Reason: msg}
	}
}

// Due starts every slot whose backoff has expired. A slot whose command no
// longer starts (binary gone) counts as a crash with the StartError's code.
func (p *Pool) Due(now time.Time) {
	if p.stopping {
		return
	}
	for _, s := range p.slots {
		if s.State != BackingOff || now.Before(s.NextStart) {
			continue
		}
		if err := p.startSlot(s, now); err != nil {
			code := 1
			var se *StartError
			if errors.As(err, &se) {
				code = se.Code
			}
			p.cfg.Log.Error(fmt.Sprintf("%s could not be restarted: %v", p.cfg.Name(s.ID), err), "worker", s.ID)
			s.Started = now
			st := reaper.ExitStatus(code)
			d := s.exited(st, now, p.cfg.Policy, p.cfg.Rand())
			p.note(s, st, false)
			p.logExit(s, 0, st, d)
		}
	}
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

// Signal sends sig to every live worker: to its whole process group when
// group is true (each worker leads its own group), else to the worker alone.
func (p *Pool) Signal(sig unix.Signal, group bool) {
	for _, s := range p.slots {
		if s.State.Live() && s.Pid > 0 {
			p.kill(s, sig, group)
		}
	}
}

func (p *Pool) kill(s *Slot, sig unix.Signal, group bool) {
	target := s.Pid
	if group {
		target = -s.Pid
	}
	if err := unix.Kill(target, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		p.cfg.Log.Warn(fmt.Sprintf("cannot send %s to %s: %v", signals.Name(sig), p.cfg.Name(s.ID), err))
	}
}

// Stop ends restarts for good and sends sig (unless it is signals.None) to
// every live worker, which moves to Stopping. Backed-off slots are Done.
func (p *Pool) Stop(sig unix.Signal, group bool) {
	p.stopping = true
	p.stopSig = sig
	for _, s := range p.slots {
		switch {
		case s.State == BackingOff || s.State == Idle:
			s.State = Done
		case s.State.Live():
			s.State = Stopping
			if sig != signals.None {
				p.kill(s, sig, group)
			}
		}
	}
}

// Live counts slots with a running process.
func (p *Pool) Live() int {
	n := 0
	for _, s := range p.slots {
		if s.State.Live() {
			n++
		}
	}
	return n
}

// Active counts slots that are running or will run again.
func (p *Pool) Active() int {
	n := 0
	for _, s := range p.slots {
		if s.State.Live() || s.State == BackingOff || s.State == Idle {
			n++
		}
	}
	return n
}

// Failure is why the pool gave up (crash loop or permanent exit code), or
// nil. The supervisor stops the other workers when it is set.
func (p *Pool) Failure() *Failure { return p.failure }

// Result is the status the supervisor should exit with once every worker is
// gone: the failure's, else the first exit that was neither a success nor a
// death by the stop signal, else success.
func (p *Pool) Result() reaper.Status {
	if p.failure != nil {
		return p.failure.Status
	}
	if p.firstBad != nil {
		return *p.firstBad
	}
	return reaper.ExitStatus(0)
}

// Slots returns a snapshot of every slot.
func (p *Pool) Slots() []Slot {
	out := make([]Slot, len(p.slots))
	for i, s := range p.slots {
		out[i] = *s
		out[i].recent = nil
	}
	return out
}
