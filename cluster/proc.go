package cluster

import (
	"time"

	"github.com/goinit/goinit/reaper"
)

// role is what a worker process is to its slot.
type role int

const (
	// current: the slot's process.
	current role = iota
	// successor: started next to the current one by a reload or a
	// recycle; it takes the slot over once it is ready.
	successor
	// draining: replaced (or scaled down); sent the stop signal, killed
	// at its deadline, never restarted.
	draining
	// discarded: a successor that failed; killed, its exit only logged.
	discarded
)

// proc is one worker process. A slot has at most one current process and
// one successor at a time; draining and discarded processes belong to no
// slot any more, only to the pool's table by pid.
type proc struct {
	pid     int
	id      int // the slot's worker id
	release int
	role    role
	started time.Time

	ready   bool
	readyAt time.Time // ReadyDelay: when it becomes ready
	readyBy time.Time // not ready by then: a failed start; zero = no limit

	lastBeat time.Time // last watchdog heartbeat (or readiness)
	killAt   time.Time // SIGKILL due (hung, drain deadline); zero = none
	retireAt time.Time // --max-lifetime: replace it then; zero = never

	// forced is why goinit killed it (hung, not ready in time); its exit
	// is then a failure whatever its status, restarted per the policy's
	// backoff and crash-loop limit.
	forced string
	// replaced names why it is being replaced, for its exit line.
	replaced string
	// cause is, for a draining process, why it was replaced: "reload",
	// "scaled down", or a recycling reason.
	cause string
}

// uptime is how long p has run at now.
func (p *proc) uptime(now time.Time) time.Duration { return now.Sub(p.started) }

// EventKind names what happened to a worker or a reload.
type EventKind int

const (
	// WorkerStarted: a process was started for a slot.
	WorkerStarted EventKind = iota
	// WorkerReady: a process became ready.
	WorkerReady
	// WorkerExited: a process ended.
	WorkerExited
	// ReloadDone: a reload replaced every worker.
	ReloadDone
	// ReloadFailed: a reload stopped and rolled back.
	ReloadFailed
)

func (k EventKind) String() string {
	switch k {
	case WorkerStarted:
		return "worker-start"
	case WorkerReady:
		return "worker-ready"
	case WorkerExited:
		return "worker-exit"
	case ReloadDone:
		return "reload-done"
	case ReloadFailed:
		return "reload-failed"
	}
	return "event"
}

// Event is one thing that happened in the pool, for the supervisor to pass
// on (to the agent, to metrics, to a waiting `goinit reload`).
type Event struct {
	Kind EventKind
	// ID and Pid name the worker process (not for reload events).
	ID, Pid int
	// Status is how it ended (WorkerExited).
	Status reaper.Status
	// Reason is the log line's explanation, for reloads and exits.
	Reason string
	// Restart is why the worker is restarted, for metrics: "exit",
	// "signal", "hung", "not-ready", or "recycle" (the exit of a process
	// replaced by --max-lifetime, --memory-recycle or a restart request),
	// "" when it is not restarted.
	Restart string
}
