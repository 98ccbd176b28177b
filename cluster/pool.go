// Package cluster runs a number of worker processes and keeps them running:
// it waits for each to be ready, restarts crashed workers with jittered
// exponential backoff, gives up loudly on a crash loop, replaces workers one
// at a time for a reload (rolling back a release that does not come up),
// recycles old or hung ones, and scales.
//
// The pool owns the life cycle of each worker slot (a small state machine,
// see Slot) and nothing else: it does not fork, wait or bind. The caller
// supplies a StartFunc that starts a process, feeds the pool every exit it
// reaps and every readiness event its workers send, and calls Due when the
// pool's next deadline comes. All methods are meant to be called from one
// goroutine, the supervisor's loop, so the pool holds no locks.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/signals"
)

// StartFunc starts the process of worker id running release (0 is the
// release goinit started with; Config.Release makes the others) and
// returns its pid. The pid must already be known to the reaper when
// StartFunc returns.
type StartFunc func(id, release int) (pid int, err error)

// StartError is a start failure with the exit code it stands for (127: not
// found, 126: not executable, as shells report them).
type StartError struct {
	Code int
	Err  error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Defaults of Config.
const (
	// DefaultWatchdogGrace is the time between the SIGABRT that lets a
	// hung worker dump its stack and the SIGKILL.
	DefaultWatchdogGrace = 5 * time.Second
	// LifetimeJitter spreads --max-lifetime by ±10%, so workers started
	// together are not all recycled at once.
	LifetimeJitter = 0.1
)

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
	// Explain may describe the exit of process pid of slot id better than
	// its status, e.g. "killed by
	// the OOM killer (memory limit 256MiB)"; "" keeps the status.
	// It is asked once per exit.
	Explain func(id, pid int, st reaper.Status) string
	// Rand returns uniform numbers in [0, 1) for the jitter; default
	// math/rand/v2.
	Rand func() float64
	// Quiet logs starts and final exits at debug level: a single command
	// under an init should be as silent as it is under tini.
	Quiet bool

	// Ready says when a started worker is ready. The zero value is
	// ReadyAuto without a timeout.
	Ready Readiness
	// StopSignal stops a replaced or scaled-down worker, sent to its
	// process group when Group is true; StopTimeout later it is killed.
	StopSignal  unix.Signal
	Group       bool
	StopTimeout time.Duration
	// Surge is how many replacements a reload runs at once; default 1.
	Surge int
	// Release prepares a new release of the command for a reload (the
	// command looked up again, so new code on disk is picked up) and
	// returns its number for StartFunc. nil: reloads start release 0.
	Release func() (int, error)
	// Watchdog: a ready worker that sends no heartbeat for this long is
	// hung: SIGABRT, then SIGKILL after WatchdogGrace, and restarted.
	// 0 turns it off.
	Watchdog      time.Duration
	WatchdogGrace time.Duration
	// MaxLifetime replaces a worker gracefully, as a reload does, once it
	// has run this long (±LifetimeJitter); 0 never.
	MaxLifetime time.Duration
	// OnEvent is told of every start, readiness, exit and reload result,
	// from within the pool's methods; nil ignores them.
	OnEvent func(Event)
	// Role names the pool's processes in log attributes: "" logs
	// worker=ID; another role (the agent) logs role=ROLE instead.
	Role string
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
	byPid    map[int]*proc
	stopping bool
	stopSig  unix.Signal
	failure  *Failure
	firstBad *reaper.Status
	// signalled is true once any worker has listened on a shared port or
	// said it is ready: from then on ReadyAuto waits for that.
	signalled bool

	reload  *reload // the reload in progress, nil when none
	queued  bool    // a reload was asked for during one
	latest  int     // the release of the last complete reload, for new slots
	recycle []recycleReq
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
	if cfg.Surge < 1 {
		cfg.Surge = 1
	}
	if cfg.WatchdogGrace <= 0 {
		cfg.WatchdogGrace = DefaultWatchdogGrace
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = unix.SIGTERM
	}
	p := &Pool{cfg: cfg, byPid: map[int]*proc{}}
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

// startSlot starts the slot's current process, running the slot's release.
func (p *Pool) startSlot(s *Slot, now time.Time) error {
	pr, err := p.spawn(s, s.Release, current, now)
	if err != nil {
		return err
	}
	s.cur = pr
	s.started(pr.pid, now)
	p.cfg.Log.Log(context.Background(), p.infoLevel(), p.cfg.Name(s.ID)+" started", p.attr(s.ID), "pid", pr.pid, "restarts", s.Restarts)
	if pr.ready {
		p.becameReady(s, pr, now, "")
	}
	return nil
}

// spawn starts a process for slot s and sets up its readiness.
func (p *Pool) spawn(s *Slot, release int, r role, now time.Time) (*proc, error) {
	pid, err := p.cfg.Start(s.ID, release)
	if err != nil {
		return nil, err
	}
	pr := &proc{pid: pid, id: s.ID, release: release, role: r, started: now}
	rd := p.cfg.Ready
	switch {
	case rd.Mode == ReadyExec, rd.Mode == ReadyAuto && !p.signalled:
		pr.ready = true
	case rd.Mode == ReadyDelay:
		pr.readyAt = now.Add(rd.Delay)
	}
	if !pr.ready && rd.Timeout > 0 {
		pr.readyBy = now.Add(rd.Timeout)
	}
	if p.cfg.MaxLifetime > 0 {
		j := 1 + LifetimeJitter*(2*p.cfg.Rand()-1)
		pr.retireAt = now.Add(time.Duration(float64(p.cfg.MaxLifetime) * j))
	}
	p.byPid[pid] = pr
	p.emit(Event{Kind: WorkerStarted, ID: s.ID, Pid: pid})
	return pr, nil
}

// Ready feeds the pool a readiness event from worker process pid. It
// returns false when pid is not one of its workers.
func (p *Pool) Ready(pid int, sig Signal, now time.Time) bool {
	pr, ok := p.byPid[pid]
	if !ok {
		return false
	}
	if sig == Listened || sig == Messaged {
		p.signalled = true
	}
	if pr.ready || !p.cfg.Ready.accepts(sig) || pr.role == draining || pr.role == discarded {
		return true
	}
	p.becameReady(p.slot(pr.id), pr, now, sig.String())
	return true
}

// Heartbeat records a watchdog heartbeat from worker process pid.
func (p *Pool) Heartbeat(pid int, now time.Time) {
	if pr, ok := p.byPid[pid]; ok && pr.ready {
		pr.lastBeat = now
	}
}

// becameReady marks pr ready: a current process makes its slot Running; a
// successor takes its slot over and the process it replaces is drained.
func (p *Pool) becameReady(s *Slot, pr *proc, now time.Time, how string) {
	pr.ready, pr.readyBy, pr.readyAt, pr.lastBeat = true, time.Time{}, time.Time{}, now
	p.emit(Event{Kind: WorkerReady, ID: pr.id, Pid: pr.pid})
	if s == nil {
		return
	}
	if how != "" {
		p.cfg.Log.Log(context.Background(), p.infoLevel(), fmt.Sprintf("%s (pid %d) is ready (%s) after %s",
			p.cfg.Name(s.ID), pr.pid, how, pr.uptime(now).Round(time.Millisecond)), p.attr(s.ID), "pid", pr.pid)
	}
	switch pr.role {
	case current:
		if s.State == Starting {
			s.State = Running
		}
	case successor:
		p.promote(s, pr, now)
	}
}

// HandleExit feeds the pool one reaped exit. It returns false when pid is
// not one of its workers.
func (p *Pool) HandleExit(pid int, st reaper.Status, now time.Time) bool {
	pr, ok := p.byPid[pid]
	if !ok {
		return false
	}
	delete(p.byPid, pid)
	s := p.slot(pr.id)
	how := p.explain(pr.id, pid, st)
	switch pr.role {
	case draining:
		p.cfg.Log.Log(context.Background(), p.infoLevel(), fmt.Sprintf("%s (pid %d, %s) %s after %s",
			p.cfg.Name(pr.id), pid, pr.replaced, how, pr.uptime(now).Round(time.Millisecond)),
			p.attr(pr.id), "pid", pid, "status", st.Code())
		ev := Event{Kind: WorkerExited, ID: pr.id, Pid: pid, Status: st}
		if pr.cause != "" && pr.cause != "reload" && pr.cause != "scaled down" {
			ev.Restart = "recycle"
		}
		p.emit(ev)
		return true
	case discarded:
		p.cfg.Log.Debug(fmt.Sprintf("%s: the failed replacement (pid %d) %s", p.cfg.Name(pr.id), pid, st), p.attr(pr.id), "pid", pid)
		p.emit(Event{Kind: WorkerExited, ID: pr.id, Pid: pid, Status: st})
		return true
	case successor:
		s.next, s.Successor = nil, 0
		p.emit(Event{Kind: WorkerExited, ID: pr.id, Pid: pid, Status: st})
		p.replacementFailed(s, pr, fmt.Sprintf("%s before it was ready", how), now)
		return true
	}
	s.cur = nil
	if s.next != nil && s.State != Stopping {
		// Its successor is already starting: it takes the slot over
		// when ready, or the slot restarts if it fails.
		s.Pid, s.Last, s.State = 0, st, Starting
		p.cfg.Log.Warn(fmt.Sprintf("%s (pid %d) %s after %s while its replacement (pid %d) starts", p.cfg.Name(s.ID), pid,
			how, pr.uptime(now).Round(time.Millisecond), s.next.pid), p.attr(s.ID), "pid", pid, "status", st.Code())
		p.emit(Event{Kind: WorkerExited, ID: s.ID, Pid: pid, Status: st})
		return true
	}
	wasStopping := s.State == Stopping
	d := s.exited(st, now, p.cfg.Policy, p.cfg.Rand(), pr.forced != "")
	// A crash that is retried is not the pool's result, nor a death by
	// the stop signal goinit sent.
	if !(wasStopping && st.Signaled() && st.Signal() == p.stopSig) && s.State != BackingOff {
		p.note(st)
	}
	ev := Event{Kind: WorkerExited, ID: s.ID, Pid: pid, Status: st}
	if d.Outcome == Restarting {
		ev.Restart = restartReason(pr, st)
	}
	p.logExit(s, pid, st, how, d, pr.forced)
	ev.Reason = how
	p.emit(ev)
	if p.reload != nil {
		p.advance(now)
	}
	return true
}

// restartReason classifies a restart for the metrics.
func restartReason(pr *proc, st reaper.Status) string {
	switch {
	case pr.forced != "":
		return pr.forced
	case st.Signaled():
		return "signal"
	}
	return "exit"
}

// note remembers the first exit that was not clean, for Result.
func (p *Pool) note(st reaper.Status) {
	if p.firstBad == nil && !st.Success() {
		p.firstBad = &st
	}
}

func (p *Pool) explain(id, pid int, st reaper.Status) string {
	if p.cfg.Explain != nil {
		if e := p.cfg.Explain(id, pid, st); e != "" {
			return e
		}
	}
	return st.String()
}

// logExit logs the exit of process pid (0: the slot's last exit, already
// explained as how) and what follows it.
func (p *Pool) logExit(s *Slot, pid int, st reaper.Status, how string, d Decision, forced string) {
	name := p.cfg.Name(s.ID)
	if forced != "" {
		how = fmt.Sprintf("%s (killed: %s)", how, forced)
	}
	who := fmt.Sprintf("%s (pid %d)", name, pid)
	if pid == 0 {
		who = name
	}
	head := fmt.Sprintf("%s %s after %s", who, how, d.Uptime.Round(time.Millisecond))
	attrs := []any{p.attr(s.ID), "pid", pid, "status", st.Code(), "uptime", d.Uptime.Round(time.Millisecond)}
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

// attr is the log attribute naming slot id.
func (p *Pool) attr(id int) slog.Attr {
	if p.cfg.Role != "" {
		return slog.String("role", p.cfg.Role)
	}
	return slog.Int("worker", id)
}

func (p *Pool) emit(e Event) {
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(e)
	}
}

// slot returns the slot with worker id, or nil once it was scaled away.
func (p *Pool) slot(id int) *Slot {
	if id < len(p.slots) {
		return p.slots[id]
	}
	return nil
}

// Signal sends sig to every live worker process, replacements and draining
// ones included: to its whole process group when group is true (each
// worker leads its own group), else to the worker alone.
func (p *Pool) Signal(sig unix.Signal, group bool) {
	for _, pid := range p.pids() {
		p.kill(pid, sig, group)
	}
}

// pids lists every live worker process in a stable order.
func (p *Pool) pids() []int {
	out := make([]int, 0, len(p.byPid))
	for pid := range p.byPid {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

func (p *Pool) kill(pid int, sig unix.Signal, group bool) {
	target := pid
	if group {
		target = -pid
	}
	if err := unix.Kill(target, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		name := "worker"
		if pr, ok := p.byPid[pid]; ok {
			name = p.cfg.Name(pr.id)
		}
		p.cfg.Log.Warn(fmt.Sprintf("cannot send %s to %s (pid %d): %v", signals.Name(sig), name, pid, err))
	}
}

// Stop ends restarts, reloads and recycling for good and sends sig (unless
// it is signals.None) to every live worker process, which moves its slot to
// Stopping. Backed-off slots are Done.
func (p *Pool) Stop(sig unix.Signal, group bool) {
	p.stopping = true
	p.stopSig = sig
	if p.reload != nil {
		p.emit(Event{Kind: ReloadFailed, Reason: "reload stopped: goinit is stopping"})
	}
	p.reload, p.queued, p.recycle = nil, false, nil
	for _, s := range p.slots {
		switch {
		case s.State == BackingOff || s.State == Idle:
			s.State = Done
		case s.State.Live():
			s.State = Stopping
		}
	}
	for _, pid := range p.pids() {
		pr := p.byPid[pid]
		if pr.role == successor {
			// A replacement still starting will not take over now.
			if s := p.slot(pr.id); s != nil {
				s.next, s.Successor = nil, 0
				if s.cur == nil {
					s.State = Done
				}
			}
			pr.role, pr.replaced = draining, "replacement stopped before it was ready"
		}
		pr.killAt, pr.readyBy, pr.readyAt, pr.retireAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if sig != signals.None {
			p.kill(pid, sig, group)
		}
	}
}

// Live counts worker processes that are running: current, replacements and
// draining ones.
func (p *Pool) Live() int { return len(p.byPid) }

// Active counts slots that are running or will run again, and processes
// still draining.
func (p *Pool) Active() int {
	n := 0
	for _, s := range p.slots {
		if s.State.Live() || s.State == BackingOff || s.State == Idle {
			n++
		}
	}
	for _, pr := range p.byPid {
		if pr.role == draining || pr.role == discarded {
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
		out[i].recent, out[i].cur, out[i].next = nil, nil, nil
	}
	return out
}

// Draining lists the pids of replaced or scaled-down workers still running.
func (p *Pool) Draining() []int {
	var out []int
	for _, pid := range p.pids() {
		if r := p.byPid[pid].role; r == draining || r == discarded {
			out = append(out, pid)
		}
	}
	return out
}

// CurrentOf returns the slot whose current process is pid: not a
// successor still starting, nor one draining.
func (p *Pool) CurrentOf(pid int) (int, bool) {
	pr, ok := p.byPid[pid]
	if !ok || pr.role != current {
		return 0, false
	}
	return pr.id, true
}

// WorkerOf returns the worker id of live process pid.
func (p *Pool) WorkerOf(pid int) (int, bool) {
	pr, ok := p.byPid[pid]
	if !ok {
		return 0, false
	}
	return pr.id, true
}
