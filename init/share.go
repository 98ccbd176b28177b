package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/portshare"
)

// openSharer starts sharing the ports workers bind themselves, per
// --share-ports, and makes every TCP --listen socket the one a worker's own
// bind of that address gets. It returns nil when nothing is shared. An
// explicit list that cannot be honoured is a start-up error; auto falls
// back to unshared binds with one warning.
func openSharer(cfg *config, listeners []*os.File, log *slog.Logger) (*portshare.Sharer, error) {
	pol := cfg.sharePorts
	if pol.Mode == portshare.Off {
		return nil, nil
	}
	err := portshare.Available()
	if err == nil {
		err = ownProc()
	}
	if err != nil {
		if pol.Mode == portshare.List {
			return nil, usagef("--share-ports=%s: %v; %s", pol, err, portshare.Fix)
		}
		log.Warn(fmt.Sprintf("ports the workers bind themselves are not shared: %v; a second worker binding the same port will fail (%s)", err, portshare.Fix))
		return nil, nil
	}
	sh, err := portshare.New(portshare.Config{Policy: pol, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("share ports: %w", err)
	}
	for _, f := range listeners {
		if err := sh.Hold(f); err != nil {
			sh.Close()
			return nil, fmt.Errorf("share --listen sockets: %w", err)
		}
	}
	return sh, nil
}

// ownProc checks that /proc is the procfs of goinit's own PID namespace, as
// in every container: sharing reads the workers' memory and sockets through
// /proc by the pids the kernel reports in goinit's namespace. A goinit
// started by `unshare --pid` without --mount-proc sees the host's /proc.
func ownProc() error {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return fmt.Errorf("cannot read /proc/self: %w", err)
	}
	if self != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("/proc is not mounted for goinit's PID namespace (goinit is pid %d, /proc/self says %s); mount a procfs of that namespace on /proc, as container runtimes do", os.Getpid(), self)
	}
	return nil
}

// onShareEvent logs what the sharer reports and passes a worker's listen()
// on a shared port to the pool as a readiness event.
func (s *supervisor) onShareEvent(e portshare.Event) {
	switch e.Kind {
	case portshare.Shared:
		s.log.Info(e.String())
	case portshare.Listening:
		s.log.Debug(e.String(), "worker", e.Worker, "pid", e.Pid)
		// The worker is ready when it or a process it started (npm start,
		// a shell wrapper, a pre-fork master) listens.
		s.pool.Ready(e.WorkerPid, cluster.Listened, time.Now())
	case portshare.Detached:
		if e.Err != nil {
			s.log.Warn(e.String(), "worker", e.Worker, "pid", e.Pid)
		}
	default:
		s.log.Debug(e.String(), "worker", e.Worker, "pid", e.Pid)
	}
}
