// Package reaper collects the exit status of every child of the process.
//
// A Reaper owns every wait4 call in the process: it reaps supervised children
// and re-parented orphans alike, as soon as SIGCHLD arrives, and hands each
// exit to its owner by pid. Nothing else in a program that uses a Reaper may
// wait for children: exec.Cmd.Wait racing a wait4(-1) loop is the classic Go
// init bug (lost exit codes, "waitid: no child processes"). Start children
// with Reaper.Start instead of exec.Cmd.Start, and never call Wait.
//
// The package never sends a signal to a child it did not reap; killing is
// done by the caller, helped by Descendants and SignalAll.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is one reaped child, or a job-control stop or continue of a child
// (then Status.Ended is false).
type Exit struct {
	// Pid is the child's process id.
	Pid int
	// Status is how it ended.
	Status Status
	// Supervised is true for children started with Start, false for
	// re-parented orphans.
	Supervised bool
	// Time is when it was reaped.
	Time time.Time
}

// Reaper reaps every child of the process. The zero value is not usable;
// call New.
type Reaper struct {
	log *slog.Logger
	// orphanLevel is the level of the line logged per reaped orphan.
	orphanLevel slog.Level

	// mu is held across fork+register in Start and across each wait4 in
	// reap, so that a child that exits at once is never reaped before it is
	// known as supervised, and so that os/exec's own wait4 on a failed exec
	// is not raced.
	mu      sync.Mutex
	watched map[int]bool

	exits chan Exit
	// orphans counts the re-parented orphans reaped, for metrics.
	orphans atomic.Uint64
}

// OrphansReaped is how many re-parented orphans the Reaper has reaped.
func (r *Reaper) OrphansReaped() uint64 { return r.orphans.Load() }

// New returns a Reaper that logs orphan exits at debug level to log.
func New(log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reaper{log: log, orphanLevel: slog.LevelDebug, watched: map[int]bool{}, exits: make(chan Exit, 256)}
}

// LogOrphansAt sets the level of the line logged for each reaped orphan
// (debug by default), for users who want every zombie they leave to goinit
// reported, as tini -w does. Call it before Run.
func (r *Reaper) LogOrphansAt(level slog.Level) { r.orphanLevel = level }

// Exits delivers every reaped child, supervised or not, in the order they
// were reaped, and every stop or continue of a child (Status.Ended is false
// for those; the child is still there). The caller must keep receiving: the
// Reaper waits for room.
func (r *Reaper) Exits() <-chan Exit { return r.exits }

// Start starts cmd and registers its pid as supervised before any wait4 can
// see it. The caller must never call cmd.Wait: the exit arrives on Exits.
//
// The child starts with no signal blocked, whatever the calling process
// inherited: Go's fork gives the child the forking thread's mask, and every
// Go thread starts with the mask the process was started with, so a parent
// that blocked signals (a wrapper script, nohup-style tools) would otherwise
// pass its mask through goinit to the command.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The mask is per thread: the fork must happen on the thread whose
	// mask was cleared, and that thread must get its own mask back.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var empty, old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &empty, &old); err != nil {
		return fmt.Errorf("clear the signal mask for the child: %w", err)
	}
	err := cmd.Start()
	_ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	if err != nil {
		return err
	}
	r.watched[cmd.Process.Pid] = true
	return nil
}

// Run reaps until ctx is done. It reaps once at start, for children that
// exited before Run began, then after every SIGCHLD: no polling.
func (r *Reaper) Run(ctx context.Context) error {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	defer signal.Stop(sigc)
	for {
		if err := r.reap(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sigc:
		}
	}
}

// reap collects every child that has exited. SIGCHLD is not queued, so one
// signal may stand for many exits: loop until wait4 finds no more.
func (r *Reaper) reap(ctx context.Context) error {
	for {
		var ws unix.WaitStatus
		r.mu.Lock()
		// WUNTRACED and WCONTINUED also report job-control stops, which a
		// supervisor that lends its terminal to a child must follow.
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WUNTRACED|unix.WCONTINUED, nil)
		supervised := false
		if pid > 0 {
			supervised = r.watched[pid]
			if ws.Exited() || ws.Signaled() {
				delete(r.watched, pid)
			}
		}
		r.mu.Unlock()
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD), pid == 0:
			return nil
		case err != nil:
			return fmt.Errorf("wait4: %w", err)
		}
		st := Status(ws)
		if !supervised && st.Ended() {
			r.orphans.Add(1)
			r.log.Log(ctx, r.orphanLevel, fmt.Sprintf("reaped zombie process %d (%s), an orphan re-parented to goinit", pid, st), "pid", pid, "status", st.String())
		}
		select {
		case r.exits <- Exit{Pid: pid, Status: st, Supervised: supervised, Time: time.Now()}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// HasChildren reports whether the process has any child left, running or
// not yet reaped. It reaps nothing.
func HasChildren() bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return !errors.Is(err, unix.ECHILD)
	}
}

// BecomeSubreaper makes the calling process a child subreaper, so that
// orphaned descendants are re-parented to it rather than to the real init.
// A PID 1 does not need it.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}
