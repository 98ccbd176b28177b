package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/listen"
	"github.com/goinit/goinit/portshare"
	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/signals"
)

// phase is where the supervisor is in its life.
type phase int

const (
	// running: workers up, restarts allowed.
	running phase = iota
	// delaying: a stop signal is held for --pre-stop-delay.
	delaying
	// stopping: workers were sent the stop signal; SIGKILL at the deadline.
	stopping
	// draining: every worker is gone; leftover processes are being
	// terminated or waited for, per --orphans, until the deadline.
	draining
	// killing: SIGKILL sent to everything; waiting for the last exit.
	killing
	// finished: nothing left to wait for.
	finished
)

// killRetry is how often SIGKILL is repeated while processes remain: a
// process walk outside PID 1 can miss a child forked during the walk.
const killRetry = time.Second

// supervisor runs goinit's single loop: wait for a signal, a child's exit
// or a timer, act, repeat.
type supervisor struct {
	cfg    *config
	log    *slog.Logger
	reaper *reaper.Reaper
	pool   *cluster.Pool
	sigc   <-chan os.Signal

	phase    phase
	deadline time.Time   // of the current phase; zero when none
	held     unix.Signal // stop signal held during the pre-stop delay

	// oomCheck reports OOM kills inside running workers every
	// oomCheckInterval; nil without cgroup limits.
	oomCheck  func(name func(int) string)
	nextCheck time.Time
	// memoryOver lists the worker pids over a memory size, for
	// --memory-recycle.
	memoryOver func(limit int64) []int
	name       func(int) string

	// tty is the terminal lent to a single command; nil otherwise.
	tty *terminal
	// shareEvents reports the ports workers bind and listen on; nil
	// without --share-ports.
	shareEvents <-chan portshare.Event
	// io holds the workers' channels and notify sockets; nil without.
	io *procIO

	// agent is the pool of one agent process (--agent), nil without. The
	// workers start once it is ready, and stop before it.
	agent          *cluster.Pool
	agentReady     bool
	workersStarted bool
	agentStopAt    time.Time // when the agent gets its stop signal; zero once sent

	// op publishes snapshots and takes control requests; nil with
	// --control=off and no --health-addr.
	op *operator

	// sets are the --listen sockets, one set per starting slot with
	// --balance=reuseport; nil without --listen. Scaling closes and
	// re-opens the sets of the slots it removes and adds.
	sets *listen.Sets
}

// run starts the workers and supervises until every process is gone. It
// returns goinit's exit code.
func (s *supervisor) run(ctx context.Context) int {
	startErr := s.startPools(time.Now())
	if startErr != nil {
		// Workers that did start are stopped as in any shutdown.
		s.log.Error(startErr.Error())
		s.stopAll(s.cfg.stopSignal, time.Now())
	}
	s.publish(time.Now())
	for s.advance(); s.phase != finished; s.advance() {
		quiet := false
		var timer <-chan time.Time
		var t *time.Timer
		if next, ok := s.nextDeadline(); ok {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return exitInternal
		case sig := <-s.sigc:
			s.onSignal(sig.(unix.Signal))
		case e := <-s.reaper.Exits():
			s.onExit(e)
			// A reaped orphan changes only a counter: an orphan storm
			// must not cost a snapshot per zombie (the periodic publish
			// carries the count).
			quiet = !e.Supervised
		case e := <-s.shareEvents:
			s.onShareEvent(e)
		case e := <-s.io.chanEvents():
			s.onChannel(e)
		case e := <-s.io.notifyEvents():
			s.onNotify(e)
		case r := <-s.op.requests():
			s.onControl(r)
		case now := <-timer:
			s.onTimer(now)
		}
		if t != nil {
			t.Stop()
		}
		if err := s.startWorkersOnceAgentReady(time.Now()); err != nil && startErr == nil {
			s.log.Error(err.Error())
			startErr = err
			s.stopAll(s.cfg.stopSignal, time.Now())
		}
		if !quiet {
			s.publish(time.Now())
		}
	}
	if startErr != nil {
		return exitCode(startErr)
	}
	return s.result()
}

func (s *supervisor) nextDeadline() (time.Time, bool) {
	next, ok := s.deadline, !s.deadline.IsZero()
	if t, due := s.pool.NextDeadline(); due && (!ok || t.Before(next)) {
		next, ok = t, true
	}
	if s.op != nil && (!ok || s.op.next.Before(next)) {
		next, ok = s.op.next, true
	}
	if s.agent != nil {
		if t, due := s.agent.NextDeadline(); due && (!ok || t.Before(next)) {
			next, ok = t, true
		}
		if t := s.agentStopAt; !t.IsZero() && (!ok || t.Before(next)) {
			next, ok = t, true
		}
	}
	if s.oomCheck != nil && s.phase < draining {
		if s.nextCheck.IsZero() {
			s.nextCheck = time.Now().Add(oomCheckInterval)
		}
		if !ok || s.nextCheck.Before(next) {
			next, ok = s.nextCheck, true
		}
	}
	return next, ok
}

func (s *supervisor) onSignal(sig unix.Signal) {
	switch {
	case signals.IsStop(sig):
		s.onStopSignal(sig)
	case s.cfg.clusterMode && sig == s.cfg.reloadSignal:
		if s.phase != running {
			s.log.Info(fmt.Sprintf("received SIG%s while stopping; not reloading", signals.Name(sig)))
			return
		}
		s.log.Info(fmt.Sprintf("received SIG%s: reloading the workers (--reload-signal)", signals.Name(sig)))
		s.pool.Reload(time.Now())
	case s.cfg.clusterMode && (sig == unix.SIGTTIN || sig == unix.SIGTTOU):
		s.scaleBy(sig)
	case signals.IsJobControl(sig):
		s.onJobControl(sig)
	case sig == unix.SIGCONT && s.tty != nil:
		// Resumed by the shell: with the terminal (fg) hand it back to
		// the child before waking it; without it (bg) the child runs in
		// the background, as it would under the shell itself.
		if s.tty.foreground() {
			for _, sl := range s.pool.Slots() {
				if sl.Pid > 0 {
					s.tty.give(sl.Pid)
				}
			}
		}
		s.forward(sig)
	default:
		s.forward(sig)
	}
}

// scaleBy adds (SIGTTIN) or removes (SIGTTOU) one worker, gunicorn's
// signals; never fewer than one.
func (s *supervisor) scaleBy(sig unix.Signal) {
	if s.phase != running {
		return
	}
	n := s.pool.Workers() + 1
	if sig == unix.SIGTTOU {
		n -= 2
	}
	if err := s.scaleTo(n); err != nil {
		s.log.Warn(err.Error())
	}
}

// scaleTo changes the number of workers to n, gracefully.
func (s *supervisor) scaleTo(n int) error {
	if n < 1 {
		return fmt.Errorf("not scaling to %d workers: at least 1", n)
	}
	if err := s.checkScaleDown(n); err != nil {
		return err
	}
	n, reopenErr := s.reopenSets(n)
	err := s.pool.Scale(n, time.Now())
	// A removed slot with no process left gives up its sockets now; one
	// still draining does when it exits (onExit). A failed scale-up does
	// not keep the sets it re-opened.
	s.closeUnusedSets()
	return errors.Join(reopenErr, err)
}

// checkScaleDown refuses to scale below the starting count with
// --balance=reuseport unless the kernel migrates connections: each starting
// slot has its own SO_REUSEPORT socket, which goinit closes once the slot's
// last process is gone (kept open, it would hold the connections the
// kernel hashes to it with nobody to accept them), and closing it resets
// the connections queued on it unless net.ipv4.tcp_migrate_req moves them
// to the other workers' sockets.
func (s *supervisor) checkScaleDown(n int) error {
	if s.sets == nil || !s.sets.PerSlotTCP() || n >= s.sets.Len() || n >= s.pool.Workers() {
		return nil
	}
	migrate, err := listen.TCPMigrateReq()
	if migrate {
		return nil
	}
	msg := fmt.Sprintf("not scaling below %d workers with --balance=reuseport: the removed worker's socket would drop the connections queued on it; "+
		"set net.ipv4.tcp_migrate_req=1 in the container (docker run --sysctl net.ipv4.tcp_migrate_req=1, or a pod's securityContext.sysctls) "+
		"so goinit can close it and the kernel moves them to the other workers, or use --balance=shared", s.sets.Len())
	if err != nil {
		msg += " (" + err.Error() + ")"
	}
	return errors.New(msg)
}

// reopenSets binds again the socket sets, closed by an earlier scale-down,
// of the slots a scale-up to n adds, before their workers start: a worker
// must get its slot's own socket. It returns how many workers can run: n,
// or the id of the first worker whose set could not be bound, with why.
func (s *supervisor) reopenSets(n int) (int, error) {
	if s.sets == nil {
		return n, nil
	}
	for id := s.pool.Workers(); id < n && id < s.sets.Len(); id++ {
		ctx, cancel := context.WithTimeout(context.Background(), reopenTimeout)
		err := s.sets.Reopen(ctx, id)
		cancel()
		if err != nil {
			return id, fmt.Errorf("worker %d not started (--balance=reuseport): %w", id, err)
		}
	}
	return n, nil
}

// reopenTimeout bounds the host name lookup of a re-opened --listen
// address: the supervisor's loop waits for it.
const reopenTimeout = 5 * time.Second

// closeUnusedSets closes the sockets of the slots scaled away once none of
// their processes is left, so that the kernel hashes new connections to
// the other workers' sockets only, and moves the queued ones there
// (checkScaleDown made sure it does). Set 0 is never closed.
func (s *supervisor) closeUnusedSets() {
	if s.sets == nil || s.pool.Workers() >= s.sets.Len() {
		return // every set has a slot
	}
	inUse := make([]int, 0, s.pool.Workers())
	for id := range s.pool.Workers() {
		inUse = append(inUse, id)
	}
	for _, pid := range s.pool.Draining() {
		if id, ok := s.pool.WorkerOf(pid); ok {
			inUse = append(inUse, id)
		}
	}
	why := ""
	if s.sets.PerSlotTCP() {
		why = ": the kernel moves the connections queued on them to the other workers (net.ipv4.tcp_migrate_req=1)"
	}
	for _, set := range s.sets.CloseUnused(inUse) {
		s.log.Info(fmt.Sprintf("closed the --balance=reuseport socket(s) of worker %d, scaled away%s", set, why), "worker", set)
	}
}

// onJobControl handles SIGTSTP, SIGTTIN and SIGTTOU as dumb-init does, so
// that a shell user's Ctrl-Z works: the children get the signal as
// signals.ApplyJobControl rewrites it (SIGSTOP for a group by default),
// then goinit stops itself so the shell sees the job stop; SIGCONT later
// resumes goinit and is forwarded to them. A rule to NONE drops the signal
// and goinit keeps running, since nothing of the job was stopped.
func (s *supervisor) onJobControl(sig unix.Signal) {
	to := s.cfg.rewrite.ApplyJobControl(sig, s.cfg.groupScope)
	if to == signals.None {
		s.log.Debug("dropped signal (--rewrite)", "signal", signals.Name(sig))
		return
	}
	s.log.Debug("job control: signalling children, then stopping", "received", signals.Name(sig), "sent", signals.Name(to))
	s.signalAll(to)
	if os.Getpid() != 1 {
		// PID 1 cannot be stopped by a signal from inside its namespace.
		_ = unix.Kill(os.Getpid(), unix.SIGSTOP)
	}
}

// childStopped follows a child that holds the terminal and was stopped
// (Ctrl-Z): goinit takes the terminal back and stops itself, so the shell
// that started goinit sees its job stop and can resume it with fg or bg.
// As PID 1 there is no such shell, and PID 1 cannot stop itself.
func (s *supervisor) childStopped(pid int) {
	if os.Getpid() == 1 {
		return
	}
	s.log.Debug("child stopped; taking the terminal back and stopping", "pid", pid)
	s.tty.give(unix.Getpgrp())
	_ = unix.Kill(os.Getpid(), unix.SIGSTOP)
}

// forward passes sig on, rewritten, to every live worker.
func (s *supervisor) forward(sig unix.Signal) {
	to := s.cfg.rewrite.Apply(sig)
	if to == signals.None {
		s.log.Debug("dropped signal (--rewrite)", "signal", signals.Name(sig))
		return
	}
	s.log.Debug("forwarding signal", "received", signals.Name(sig), "sent", signals.Name(to))
	s.signalAll(to)
}

func (s *supervisor) onStopSignal(sig unix.Signal) {
	switch s.phase {
	case running:
		if s.cfg.preStopDelay > 0 {
			s.phase, s.held = delaying, sig
			s.deadline = time.Now().Add(s.cfg.preStopDelay)
			s.log.Info(fmt.Sprintf("received SIG%s; holding it for %s (--pre-stop-delay); send it again to stop now",
				signals.Name(sig), s.cfg.preStopDelay))
			return
		}
		s.beginStop(sig)
	case delaying:
		s.log.Info(fmt.Sprintf("received SIG%s again; skipping the rest of the pre-stop delay", signals.Name(sig)))
		s.beginStop(s.held)
	default:
		// Already stopping: a second Ctrl-C or TERM is passed on too,
		// but to the agent only once its turn to stop has come, so that
		// the workers can still talk to it while they drain.
		to := s.cfg.rewrite.Apply(sig)
		if to == signals.None {
			return
		}
		s.log.Info(fmt.Sprintf("received SIG%s again while stopping; passed it on", signals.Name(sig)))
		s.pool.Signal(to, s.cfg.groupScope)
		if s.agent != nil && s.agentStopAt.IsZero() {
			s.agent.Signal(to, s.cfg.groupScope)
		}
	}
}

// beginStop ends restarts and sends every worker the stop signal: the
// received one, rewritten, for a single command (what tini and dumb-init
// do); --stop-signal for a pool of workers.
func (s *supervisor) beginStop(received unix.Signal) {
	to := s.cfg.stopSignal
	if !s.cfg.clusterMode {
		to = s.cfg.rewrite.Apply(received)
	}
	what := "the child"
	if s.cfg.groupScope {
		what = "the child's process group"
	}
	if s.cfg.clusterMode {
		what = fmt.Sprintf("%d worker(s)", s.pool.Live())
	}
	// Signal first, log after: the log line is not worth any latency.
	s.stopAll(to, time.Now())
	s.log.Info(fmt.Sprintf("received SIG%s; sent SIG%s to %s; SIGKILL in %s", signals.Name(received),
		signals.Name(to), what, s.cfg.stopTimeout))
}

func (s *supervisor) onExit(e reaper.Exit) {
	if !e.Status.Ended() {
		// Only a stop from the terminal (Ctrl-Z, a background read or
		// write) is followed; goinit's own SIGSTOP for job control is not.
		if e.Supervised && e.Status.Stopped() && e.Status.StopSignal() != unix.SIGSTOP && s.tty != nil {
			s.childStopped(e.Pid)
		}
		return
	}
	if e.Supervised {
		if !s.pool.HandleExit(e.Pid, e.Status, e.Time) && s.agent != nil {
			s.agent.HandleExit(e.Pid, e.Status, e.Time)
		}
		if s.io != nil {
			s.io.exited(e.Pid)
		}
		s.closeUnusedSets()
	}
	if s.failure() != nil && s.phase < stopping {
		s.stopAll(s.cfg.stopSignal, time.Now())
	}
}

func (s *supervisor) onTimer(now time.Time) {
	s.pool.Due(now)
	if s.agent != nil {
		s.agent.Due(now)
		s.stopAgentWhenDue(now)
	}
	if s.oomCheck != nil && !now.Before(s.nextCheck) {
		s.oomCheck(s.name)
		if s.cfg.memoryRecycle > 0 && s.phase == running {
			for _, pid := range s.memoryOver(s.cfg.memoryRecycle) {
				// Only a slot's current process: a draining one is
				// on its way out already.
				if id, ok := s.pool.CurrentOf(pid); ok {
					s.pool.Recycle(id, fmt.Sprintf("its memory passed %s (--memory-recycle)", cgroup.FormatBytes(s.cfg.memoryRecycle)), now)
				}
			}
		}
		s.nextCheck = now.Add(oomCheckInterval)
	}
	if s.deadline.IsZero() || now.Before(s.deadline) {
		return
	}
	switch s.phase {
	case delaying:
		s.beginStop(s.held)
	case stopping:
		s.log.Warn(fmt.Sprintf("%d process(es) still running %s after the stop signal (--stop-timeout); sending SIGKILL to every process",
			s.pool.Live(), s.cfg.stopTimeout))
		s.killAll(now)
	case draining:
		s.log.Warn(fmt.Sprintf("leftover processes still running after %s (--stop-timeout); sending SIGKILL", s.cfg.stopTimeout))
		s.killAll(now)
	case killing:
		s.killAll(now)
	}
}

func (s *supervisor) killAll(now time.Time) {
	s.phase, s.deadline = killing, now.Add(killRetry)
	if _, err := reaper.SignalAll(unix.SIGKILL); err != nil {
		s.log.Error("cannot kill leftover processes", "err", err)
	}
}

// advance moves to the next phase once the current one has nothing left
// to wait for.
func (s *supervisor) advance() {
	switch s.phase {
	case running, delaying:
		if s.agent != nil && !s.workersStarted {
			if s.agent.Active() > 0 {
				return // the workers wait for the agent
			}
			// The agent ended for good before it was ever ready: the
			// workers will never start.
			s.stopAll(s.cfg.stopSignal, time.Now())
			s.advance()
			return
		}
		if s.pool.Active() > 0 {
			return
		}
		// Every worker ended and none will restart: the child exited on
		// its own. The same cleanup as a shutdown follows, for whatever
		// it left behind (and the agent is stopped, its work done).
		if s.agent != nil {
			s.stopAll(s.cfg.stopSignal, time.Now())
		} else {
			s.phase, s.deadline = stopping, time.Now().Add(s.cfg.stopTimeout)
		}
		s.advance()
	case stopping:
		s.stopAgentWhenDue(time.Now())
		if s.live() > 0 {
			return
		}
		s.beginDrain()
	case draining, killing:
		// The reaper may have collected a worker whose exit is still
		// queued for us: HasChildren alone would end the loop before the
		// worker's status is known.
		if s.live() == 0 && !reaper.HasChildren() {
			s.phase = finished
		}
	}
}

// beginDrain deals with the processes left once every worker is gone, per
// --orphans, within what is left of the stop timeout.
func (s *supervisor) beginDrain() {
	s.phase = draining
	if s.cfg.orphans == "ignore" || !reaper.HasChildren() {
		s.phase = finished
		return
	}
	if s.cfg.orphans == "terminate" {
		n, err := reaper.SignalAll(s.cfg.stopSignal)
		if err != nil {
			s.log.Error("cannot signal leftover processes", "err", err)
		}
		var attrs []any
		if n >= 0 {
			attrs = []any{"count", n} // as PID 1 kill(-1) reaches all without counting
		}
		s.log.Info(fmt.Sprintf("sent SIG%s to the processes left behind (--orphans=terminate); SIGKILL at the stop deadline",
			signals.Name(s.cfg.stopSignal)), attrs...)
	} else {
		s.log.Info("waiting for the processes left behind (--orphans=wait)")
	}
}

// result is goinit's exit code: the child's status for a single command,
// the pool's for workers, mapped by --exit-code-map.
func (s *supervisor) result() int {
	st := s.pool.Result()
	if f := s.failure(); f != nil {
		st = f.Status
	}
	if s.agent != nil && !s.workersStarted && s.failure() == nil {
		// The agent ended before it was ready: its status is goinit's.
		st = s.agent.Slots()[0].Last
	}
	if !s.cfg.clusterMode {
		st = s.pool.Slots()[0].Last
	}
	code := st.Code()
	if to, ok := s.cfg.exitMap[code]; ok {
		s.log.Debug("exit code mapped (--exit-code-map)", "from", code, "to", to)
		code = to
	}
	return code
}

// startPools starts the agent, or the workers when there is none; with an
// agent the workers start once it is ready (startWorkersOnceAgentReady).
func (s *supervisor) startPools(now time.Time) error {
	if s.agent == nil {
		s.workersStarted = true
		return s.pool.Start(now)
	}
	if err := s.agent.Start(now); err != nil {
		return err
	}
	return s.startWorkersOnceAgentReady(now)
}

// startWorkersOnceAgentReady starts the workers the first time the agent
// is ready, so that they can count on it from their first request.
func (s *supervisor) startWorkersOnceAgentReady(now time.Time) error {
	if s.agent == nil || s.workersStarted || !s.agentReady || s.phase != running {
		return nil
	}
	s.workersStarted = true
	return s.pool.Start(now)
}

// stopAll stops the workers with sig and, after them, the agent: it gets
// its stop signal once every worker is gone (workers may talk to it while
// they drain) or when half the stop timeout has passed, whichever is
// first, so that it has time to stop too within the one deadline.
func (s *supervisor) stopAll(sig unix.Signal, now time.Time) {
	s.phase, s.deadline = stopping, now.Add(s.cfg.stopTimeout)
	s.pool.Stop(sig, s.cfg.groupScope)
	if s.agent != nil {
		s.agentStopAt = now.Add(s.cfg.stopTimeout / 2)
		s.stopAgentWhenDue(now)
	}
}

// stopAgentWhenDue sends the agent its stop signal when stopAll's time for
// it has come.
func (s *supervisor) stopAgentWhenDue(now time.Time) {
	if s.agent == nil || s.agentStopAt.IsZero() || (s.pool.Live() > 0 && now.Before(s.agentStopAt)) {
		return
	}
	s.agentStopAt = time.Time{}
	s.agent.Stop(s.cfg.stopSignal, s.cfg.groupScope)
	if s.agent.Live() > 0 {
		s.log.Info(fmt.Sprintf("sent SIG%s to the agent", signals.Name(s.cfg.stopSignal)))
	}
}

// signalAll forwards sig to every worker and the agent.
func (s *supervisor) signalAll(sig unix.Signal) {
	s.pool.Signal(sig, s.cfg.groupScope)
	if s.agent != nil {
		s.agent.Signal(sig, s.cfg.groupScope)
	}
}

// live counts running processes of both pools.
func (s *supervisor) live() int {
	n := s.pool.Live()
	if s.agent != nil {
		n += s.agent.Live()
	}
	return n
}

// failure is why a pool gave up: the workers' or the agent's.
func (s *supervisor) failure() *cluster.Failure {
	if f := s.pool.Failure(); f != nil {
		return f
	}
	if s.agent != nil {
		return s.agent.Failure()
	}
	return nil
}
