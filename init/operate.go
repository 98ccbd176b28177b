package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/control"
	"github.com/goinit/goinit/relay"
	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/worklog"
)

// publishInterval is how often the snapshot is published when nothing
// happens, with the workers' memory and CPU read from their cgroups: the
// health server calls goinit dead when its snapshot is much older.
const publishInterval = 5 * time.Second

// operator is goinit's operating surface: the snapshot it publishes after
// every turn of the supervisor's loop, which the control socket and the
// health server read from other goroutines, and the control requests they
// pass in. Its methods run on the supervisor's goroutine.
type operator struct {
	pub     state.Publisher
	reqs    chan control.Request
	started time.Time

	reloads  state.Reloads
	restarts map[procKey]*state.Restarts
	// waiters are reload --wait requests for the reload in progress;
	// queued ones asked during it, for the reload that follows it.
	waiters, queued []control.Request
	sockets         []state.Socket
	// held lists the sockets goinit holds for the workers' own binds;
	// nil without --share-ports.
	held func() []state.Socket
	logs *worklog.Logs // nil with --worker-logs=inherit

	// usage reads a slot's cgroups, given its id (agentID for the agent)
	// and current pid; nil without limits. oomKills are the OOM kills
	// reported per slot. cached is the last usage read, by slot id.
	usage    func(id, pid int) (cgroup.Usage, bool)
	oomKills func() map[int]uint64
	cached   map[int]cgroup.Usage
	next     time.Time // next periodic publish
}

// procKey names a worker slot or the agent across its restarts.
type procKey struct {
	role string
	id   int
}

func newOperator() *operator {
	return &operator{reqs: make(chan control.Request, 4), started: time.Now(), restarts: map[procKey]*state.Restarts{}, cached: map[int]cgroup.Usage{}}
}

// requests is nil (never ready) without an operator.
func (o *operator) requests() <-chan control.Request {
	if o == nil {
		return nil
	}
	return o.reqs
}

// onPoolEvent counts restarts and reloads, and answers a waiting
// `goinit reload --wait`.
func (o *operator) onPoolEvent(role string, e cluster.Event) {
	switch e.Kind {
	case cluster.WorkerExited:
		if e.Restart == "" {
			return
		}
		k := procKey{role, e.ID}
		r := o.restarts[k]
		if r == nil {
			r = &state.Restarts{}
			o.restarts[k] = r
		}
		switch reason := e.Restart; {
		case reason == "signal" && strings.Contains(e.Reason, "OOM killer"):
			r.OOM++
		case reason == "signal":
			r.Signal++
		case reason == "hung", reason == "not-ready":
			r.Hung++
		case reason == "recycle":
			r.Recycle++
		default:
			r.Exit++
		}
	case cluster.ReloadDone, cluster.ReloadFailed:
		resp := control.Response{Message: e.Reason, Result: control.ReloadSucceeded}
		if e.Kind == cluster.ReloadFailed {
			o.reloads.RolledBack++
			resp.Err, resp.Result = errors.New(e.Reason), control.ReloadRolledBack
		} else {
			o.reloads.Succeeded++
		}
		for _, w := range o.waiters {
			w.Respond(resp)
		}
		o.waiters = nil
		if e.Kind == cluster.ReloadDone {
			// The queued reload starts right after this event, within
			// the same call into the pool, and its end answers these.
			o.waiters, o.queued = o.queued, nil
			break
		}
		// A rolled-back or stopped reload drops the one queued behind it.
		dropped := control.Response{Result: control.ReloadRolledBack,
			Err: fmt.Errorf("not reloaded: the reload this one waited behind ended first (%s); reload again", e.Reason)}
		for _, w := range o.queued {
			w.Respond(dropped)
		}
		o.queued = nil
	}
}

// onControl carries out a request from the control socket. status and top
// are answered by the control server from the snapshot.
func (s *supervisor) onControl(r control.Request) {
	if s.phase != running {
		r.Respond(control.Response{Err: errors.New("goinit is stopping")})
		return
	}
	now := time.Now()
	if !s.cfg.clusterMode && r.Cmd != control.CmdSignal {
		r.Respond(control.Response{Err: fmt.Errorf("%s needs workers: goinit runs a single command (start it with --workers)", r.Cmd)})
		return
	}
	switch r.Cmd {
	case control.CmdReload:
		// A waiter is registered first: a reload of workers that are
		// ready at exec can end within Reload itself, and answer it then.
		// One asked during a reload waits for the reload that follows.
		if r.Args.Wait {
			if s.pool.Reloading() {
				s.op.queued = append(s.op.queued, r)
			} else {
				s.op.waiters = append(s.op.waiters, r)
			}
		}
		switch s.pool.Reload(now) {
		case cluster.ReloadRefused:
			r.Respond(control.Response{Err: errors.New("reload refused; see goinit's log for why")})
		case cluster.ReloadQueued:
			if !r.Args.Wait {
				r.Respond(control.Response{Message: "a reload is in progress; this one follows it"})
			}
		case cluster.ReloadStarted:
			if !r.Args.Wait {
				r.Respond(control.Response{Message: fmt.Sprintf("reloading %d worker(s), one at a time", s.pool.Workers())})
			}
		}
	case control.CmdScale:
		if err := s.scaleTo(r.Args.Workers); err != nil {
			r.Respond(control.Response{Err: err})
			return
		}
		r.Respond(control.Response{Message: fmt.Sprintf("scaling to %d worker(s)", r.Args.Workers)})
	case control.CmdRestart:
		pools, ids, err := s.targets(r.Args.Target)
		if err != nil {
			r.Respond(control.Response{Err: err})
			return
		}
		for i, p := range pools {
			p.Recycle(ids[i], "goinit restart", now)
		}
		r.Respond(control.Response{Message: fmt.Sprintf("replacing %d process(es) gracefully, one at a time", len(ids))})
	case control.CmdSignal:
		n := 0
		if !s.cfg.clusterMode {
			s.signalAll(r.Args.Signal)
			n = s.pool.Live()
		} else {
			pools, ids, err := s.targets(r.Args.Target)
			if err != nil {
				r.Respond(control.Response{Err: err})
				return
			}
			for i, p := range pools {
				if pid := p.Slots()[ids[i]].Pid; pid > 0 {
					target := pid
					if s.cfg.groupScope {
						target = -pid
					}
					if unix.Kill(target, r.Args.Signal) == nil {
						n++
					}
				}
			}
		}
		r.Respond(control.Response{Message: fmt.Sprintf("sent SIG%s to %d process(es)", signals.Name(r.Args.Signal), n)})
	default:
		r.Respond(control.Response{Err: fmt.Errorf("unknown command %q", r.Cmd)})
	}
}

// targets resolves "all", "agent" or a worker id to slots.
func (s *supervisor) targets(t control.Target) ([]*cluster.Pool, []int, error) {
	var pools []*cluster.Pool
	var ids []int
	switch {
	case t == control.TargetAll || t == "":
		for _, sl := range s.pool.Slots() {
			pools, ids = append(pools, s.pool), append(ids, sl.ID)
		}
		if s.agent != nil {
			pools, ids = append(pools, s.agent), append(ids, 0)
		}
	case t == control.TargetAgent:
		if s.agent == nil {
			return nil, nil, errors.New("there is no agent (start goinit with --agent)")
		}
		pools, ids = append(pools, s.agent), append(ids, 0)
	default:
		id, ok := t.Worker()
		if !ok || id >= s.pool.Workers() {
			return nil, nil, fmt.Errorf("no worker %s (workers are 0 to %d)", t, s.pool.Workers()-1)
		}
		pools, ids = append(pools, s.pool), append(ids, id)
	}
	return pools, ids, nil
}

// publish builds and publishes a new snapshot; every publishInterval it
// first reads the workers' cgroups.
func (s *supervisor) publish(now time.Time) {
	o := s.op
	if o == nil {
		return
	}
	if !now.Before(o.next) {
		o.next = now.Add(publishInterval)
		if o.usage != nil {
			// Afresh each time: a slot scaled away leaves no stale entry.
			o.cached = map[int]cgroup.Usage{}
			for _, sl := range s.pool.Slots() {
				if u, ok := o.usage(sl.ID, sl.Pid); ok {
					o.cached[sl.ID] = u
				}
			}
			if s.agent != nil {
				if u, ok := o.usage(agentID, s.agent.Slots()[0].Pid); ok {
					o.cached[agentID] = u
				}
			}
		}
	}
	snap := &state.Snapshot{
		Version: version, GoVersion: runtime.Version(), PID: os.Getpid(), Started: o.started, Taken: now,
		Phase: s.statePhase(),
		Pool: state.Pool{Workers: s.pool.Workers(), MinReady: s.cfg.minReady, CrashLooping: s.failure() != nil,
			Reloading: s.pool.Reloading()},
		OrphansReaped: s.reaper.OrphansReaped(),
		Reloads:       o.reloads,
		Sockets:       o.sockets,
	}
	if o.held != nil {
		snap.Sockets = append(slices.Clip(o.sockets), o.held()...)
	}
	var ooms map[int]uint64
	if o.oomKills != nil {
		ooms = o.oomKills()
	}
	role := state.RoleWorker
	if !s.cfg.clusterMode {
		role = state.RoleCommand
	}
	// withCgroup adds what the cgroup of p's process, and the OOM kills
	// of its slot id (agentID for the agent), say to p.
	withCgroup := func(p state.Process, id int) state.Process {
		p.OOMKills = ooms[id]
		if u, ok := o.cached[id]; ok {
			p.HasCgroup, p.MemoryBytes, p.CPUSeconds = true, uint64(max(u.MemoryBytes, 0)), u.CPUTime.Seconds()
		}
		return p
	}
	for _, sl := range s.pool.Slots() {
		snap.Processes = append(snap.Processes, withCgroup(s.process(role, sl, o.restarts[procKey{"worker", sl.ID}]), sl.ID))
	}
	for _, pid := range s.pool.Draining() {
		id, _ := s.pool.WorkerOf(pid)
		snap.Processes = append(snap.Processes, state.Process{Role: role, ID: id, PID: pid, State: state.StateDraining})
	}
	if s.agent != nil {
		snap.Processes = append(snap.Processes, withCgroup(s.process(state.RoleAgent, s.agent.Slots()[0], o.restarts[procKey{"agent", 0}]), agentID))
	}
	if s.io != nil {
		snap.Messages = s.io.messages()
	}
	if o.logs != nil {
		snap.LogLinesDropped = o.logs.Dropped()
	}
	o.pub.Publish(snap)
}

// process describes one slot for the snapshot.
func (s *supervisor) process(role state.Role, sl cluster.Slot, r *state.Restarts) state.Process {
	p := state.Process{Role: role, ID: sl.ID, PID: sl.Pid, Started: sl.Started}
	if r != nil {
		p.Restarts = *r
	}
	switch sl.State {
	case cluster.Idle:
		p.State = state.StateIdle
	case cluster.Starting:
		p.State = state.StateStarting
	case cluster.Running:
		p.State, p.Ready = state.StateReady, true
		if role == state.RoleCommand {
			p.State = state.StateRunning
		}
	case cluster.Stopping:
		p.State = state.StateStopping
	case cluster.BackingOff:
		p.State = state.StateBackingOff
	case cluster.Failed:
		p.State = state.StateFailed
	case cluster.Done:
		p.State = state.StateDone
	}
	if sl.Pid == 0 {
		p.Started = time.Time{}
	}
	if sl.Last != 0 || sl.Restarts > 0 {
		p.LastExit = sl.Last.String()
	}
	return p
}

// statePhase names the supervisor's phase for the snapshot.
func (s *supervisor) statePhase() state.Phase {
	switch s.phase {
	case running:
		if s.agent != nil && !s.workersStarted {
			return state.PhaseStarting
		}
		return state.PhaseRunning
	case delaying:
		return state.PhaseDelaying
	case stopping:
		return state.PhaseStopping
	case draining:
		return state.PhaseDraining
	}
	return state.PhaseKilling
}

// messages sums what the channels and the router counted.
func (io *procIO) messages() state.Messages {
	var m state.Messages
	if io.chans != nil {
		st := io.chans.Stats()
		m.TooLarge, m.Invalid, m.QueueFull = st.DroppedOversize, st.DroppedInvalid, st.DroppedQueueFull
	}
	rs := io.router.Stats()
	m.Relayed = rs.Relayed
	m.NoRecipient = rs.Dropped[relay.NoRecipient] + rs.Dropped[relay.BadTarget]
	return m
}
