package state

import (
	"strconv"
	"sync/atomic"
	"time"
)

// Phase is where goinit itself is in its life.
type Phase string

// goinit's phases, in order. They match supervisor.phase in init/.
const (
	// PhaseStarting: goinit is preparing (cgroups, sockets, the agent)
	// and no worker has been started yet.
	PhaseStarting Phase = "starting"
	// PhaseRunning: the normal state.
	PhaseRunning Phase = "running"
	// PhaseDelaying: a stop signal arrived and is being held for
	// --pre-stop-delay; /readyz already answers 503.
	PhaseDelaying Phase = "delaying"
	// PhaseStopping: the stop signal went to the workers.
	PhaseStopping Phase = "stopping"
	// PhaseDraining: the workers are gone; leftovers get --stop-signal.
	PhaseDraining Phase = "draining"
	// PhaseKilling: the deadline passed; everything left gets SIGKILL.
	PhaseKilling Phase = "killing"
)

// Phases lists every Phase, in order, for exporters that emit one series
// per value.
var Phases = []Phase{PhaseStarting, PhaseRunning, PhaseDelaying, PhaseStopping, PhaseDraining, PhaseKilling}

// Running reports whether goinit is serving normally: neither starting nor
// on its way out.
func (p Phase) Running() bool { return p == PhaseRunning }

// Role says what a supervised process is for.
type Role string

// The roles of supervised processes.
const (
	// RoleCommand is the single command of tini mode (no --workers).
	RoleCommand Role = "command"
	// RoleWorker is one of the --workers.
	RoleWorker Role = "worker"
	// RoleAgent is the --agent process.
	RoleAgent Role = "agent"
)

// ProcState is where one process slot is in its life cycle. The values are
// the slot states of docs/ARCHITECTURE.md, as users see them.
type ProcState string

// The states of a process slot.
const (
	StateIdle       ProcState = "idle"
	StateStarting   ProcState = "starting"
	StateReady      ProcState = "ready"
	StateRunning    ProcState = "running" // up, readiness not tracked (a single command)
	StateDraining   ProcState = "draining"
	StateStopping   ProcState = "stopping"
	StateBackingOff ProcState = "backing-off"
	StateFailed     ProcState = "failed"
	StateDone       ProcState = "done"
)

// ProcStates lists every ProcState, so exporters can emit a zero for the
// states no process is in (a series that disappears is hard to alert on).
var ProcStates = []ProcState{StateIdle, StateStarting, StateReady, StateRunning, StateDraining,
	StateStopping, StateBackingOff, StateFailed, StateDone}

// Restarts counts a slot's restarts by why its previous process ended.
type Restarts struct {
	Exit    uint64 `json:"exit"`    // exited by itself (any code)
	Signal  uint64 `json:"signal"`  // killed by a signal goinit did not send
	OOM     uint64 `json:"oom"`     // killed by the OOM killer
	Hung    uint64 `json:"hung"`    // silent past --watchdog, killed by goinit
	Recycle uint64 `json:"recycle"` // replaced on purpose: --max-lifetime, --memory-recycle
}

// Total is the sum over every reason.
func (r Restarts) Total() uint64 { return r.Exit + r.Signal + r.OOM + r.Hung + r.Recycle }

// Count is one labelled counter value.
type Count struct {
	Label string
	Value uint64
}

// ByReason lists the counts with their reason label, in a fixed order.
func (r Restarts) ByReason() []Count {
	return []Count{{"exit", r.Exit}, {"signal", r.Signal}, {"oom", r.OOM}, {"hung", r.Hung}, {"recycle", r.Recycle}}
}

// Process is one supervised slot: the single command, a worker or the agent.
type Process struct {
	Role Role `json:"role"`
	// ID is the worker id (GOINIT_WORKER_ID); 0 for the command and the agent.
	ID int `json:"id"`
	// PID is the live process, 0 when none (backing off, done).
	PID   int       `json:"pid"`
	State ProcState `json:"state"`
	Ready bool      `json:"ready"`
	// Started is when the current process was started; zero when none.
	Started time.Time `json:"started,omitzero"`
	// Restarts counts every restart of this slot since goinit started.
	Restarts Restarts `json:"restarts"`
	// LastExit is how the previous process ended, as goinit's log says it:
	// "exit 1", "signal KILL"; empty before the first exit.
	LastExit string `json:"last_exit,omitempty"`
	// LastReason is why it ended, in words: "killed by the OOM killer
	// (memory limit 256MiB)", "hung (no watchdog ping for 30s)".
	LastReason string `json:"last_reason,omitempty"`
	// OOMKills counts OOM kills in the cgroups of this slot's processes,
	// including those of a worker's children that the worker survived.
	OOMKills uint64 `json:"oom_kills"`
	// HasCgroup says whether the next two fields were read from the
	// slot's cgroups; without per-worker cgroups they are unknown.
	HasCgroup bool `json:"has_cgroup"`
	// MemoryBytes is the current memory use of the cgroup of the slot's
	// current process (a replacement has a cgroup of its own).
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	// CPUSeconds is the CPU time, user and system, of all the slot's
	// cgroups: a counter that never goes back across reloads.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

// Name is how goinit's log names the process: "worker 2", "agent",
// "command".
func (p Process) Name() string {
	if p.Role == RoleWorker {
		return "worker " + strconv.Itoa(p.ID)
	}
	return string(p.Role)
}

// Pool is the state of the worker pool as a whole.
type Pool struct {
	// Workers is the number of worker slots wanted (--workers, changed by
	// scale); 0 in single-command mode.
	Workers int `json:"workers"`
	// MinReady is --min-ready: /readyz needs this many ready workers.
	MinReady int `json:"min_ready"`
	// CrashLooping is true once a slot has exceeded --max-restarts within
	// --restart-window; goinit is then on its way out.
	CrashLooping bool `json:"crash_looping"`
	// Reloading is true while a rolling reload is in progress.
	Reloading bool `json:"reloading"`
}

// Reloads counts finished rolling reloads by result.
type Reloads struct {
	Succeeded  uint64 `json:"succeeded"`
	RolledBack uint64 `json:"rolled_back"`
}

// Messages counts the messages relayed between processes (issue 11's
// channel) and those dropped, by reason.
type Messages struct {
	Relayed uint64 `json:"relayed"`
	// TooLarge: a message above the size limit.
	TooLarge uint64 `json:"dropped_too_large"`
	// Invalid: a line that was not a JSON object goinit understands.
	Invalid uint64 `json:"dropped_invalid"`
	// QueueFull: the recipient's queue was full (it does not read).
	QueueFull uint64 `json:"dropped_queue_full"`
	// NoRecipient: the recipient does not exist or is restarting.
	NoRecipient uint64 `json:"dropped_no_recipient"`
}

// Dropped lists the drop counters with their reason label.
func (m Messages) Dropped() []Count {
	return []Count{{"too-large", m.TooLarge}, {"invalid", m.Invalid}, {"queue-full", m.QueueFull}, {"no-recipient", m.NoRecipient}}
}

// Socket is one listening socket goinit holds (--listen, a shared port).
type Socket struct {
	// Address is the socket's address as the user wrote it or as bound:
	// "tcp://0.0.0.0:8080", "unix:///run/app.sock".
	Address string `json:"address"`
	// Worker is the slot that owns it with --balance=reuseport; -1 when
	// it is shared by every worker.
	Worker int `json:"worker"`
	// Inode identifies the socket in /proc/net/tcp*: see [SocketInode]
	// and [ListenQueues].
	Inode uint64 `json:"inode"`
}

// Snapshot is goinit's state at one moment. The supervisor fills a new one
// after each change and publishes it; nobody modifies a published Snapshot
// (its slices included), so readers need no lock.
type Snapshot struct {
	// Version is goinit's version (git describe); GoVersion the Go
	// toolchain that built it (runtime.Version()).
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	// PID is goinit's own pid (1 in a container).
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Phase   Phase     `json:"phase"`
	// Taken is when the supervisor built this snapshot.
	Taken time.Time `json:"taken"`

	Processes []Process `json:"processes"`
	Pool      Pool      `json:"pool"`
	// OrphansReaped counts re-parented processes goinit has reaped.
	OrphansReaped uint64   `json:"orphans_reaped"`
	Reloads       Reloads  `json:"reloads"`
	Messages      Messages `json:"messages"`
	// LogLinesDropped counts worker log lines dropped because goinit's
	// stdout or stderr could not keep up (--worker-logs=prefix|json).
	LogLinesDropped uint64   `json:"log_lines_dropped"`
	Sockets         []Socket `json:"sockets,omitempty"`
}

// ReadyWorkers counts processes that serve and are ready: workers, or the
// single command (which is ready while it runs). The agent does not count:
// it serves no requests.
func (s *Snapshot) ReadyWorkers() int {
	n := 0
	for _, p := range s.Processes {
		if p.Ready && p.Role != RoleAgent {
			n++
		}
	}
	return n
}

// Publisher hands the latest Snapshot from the supervisor to any number of
// readers. Its zero value is ready to use; it must not be copied.
type Publisher struct {
	p atomic.Pointer[Snapshot]
}

// Publish makes s the snapshot readers get. The caller must not modify s
// afterwards. It never blocks.
func (p *Publisher) Publish(s *Snapshot) { p.p.Store(s) }

// Load returns the latest published snapshot, or nil before the first
// Publish.
func (p *Publisher) Load() *Snapshot { return p.p.Load() }
