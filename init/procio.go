package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/goinit/goinit/channel"
	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/relay"
	"github.com/goinit/goinit/sdnotify"
	"github.com/goinit/goinit/signals"
)

// procIO is what goinit keeps for each running worker besides the pool: its
// channel to goinit (channel) and, with --ready=notify, its NOTIFY_SOCKET
// (sdnotify). Both are made before the process exists, so they are keyed by
// a start number, and found by pid once it runs. Its methods run on the
// supervisor's goroutine.
type procIO struct {
	log    *slog.Logger
	chans  *channel.Hub[uint64]  // nil with --ipc=off
	notify *sdnotify.Hub[uint64] // nil unless --ready=notify
	router *relay.Router
	seq    uint64
	byKey  map[uint64]*procLink
	byPid  map[int]*procLink
}

// procLink is one worker process's channel and notify socket.
type procLink struct {
	key  uint64
	role string // "worker" or "agent"
	id   int
	pid  int
	conn *channel.Conn[uint64]
	sock *sdnotify.Socket[uint64]
	// files are the child's ends, closed in goinit once it started.
	files []*os.File
}

// newProcIO returns nil when workers and agent get neither a channel nor
// a socket.
func newProcIO(cfg *config, log *slog.Logger) *procIO {
	notify := cfg.ready.Mode == cluster.ReadyNotify || cfg.agent != nil && cfg.agentReady.Mode == cluster.ReadyNotify
	if !cfg.ipc && !notify {
		return nil
	}
	io := &procIO{log: log, router: relay.NewRouter(nil), byKey: map[uint64]*procLink{}, byPid: map[int]*procLink{}}
	if cfg.ipc {
		io.chans = channel.NewHub[uint64](channel.Options{Logger: log})
	}
	if notify {
		io.notify = sdnotify.NewHub[uint64](sdnotify.Options{Logger: log})
	}
	return io
}

// open makes the channel, and with notify the socket, of the next start of
// worker id (role "worker") or of the agent. The channel's child end
// becomes fd (the first after the worker's sockets); env is what the
// process's environment gains.
func (io *procIO) open(role string, id, fd int, notify bool) (l *procLink, files []*os.File, env []string, err error) {
	io.seq++
	l = &procLink{key: io.seq, role: role, id: id}
	if io.chans != nil {
		conn, child, err := io.chans.Open(l.key)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s %d: channel to goinit: %w", role, id, err)
		}
		l.conn, l.files = conn, append(l.files, child)
		env = append(env, channel.Env(fd)...)
	}
	if notify && io.notify != nil {
		sock, err := io.notify.Open(l.key)
		if err != nil {
			io.abort(l)
			return nil, nil, nil, fmt.Errorf("%s %d: notify socket: %w", role, id, err)
		}
		l.sock = sock
		env = append(env, sock.Env())
	}
	io.byKey[l.key] = l
	return l, l.files, env, nil
}

// started records the pid of l's process, after its start.
func (io *procIO) started(l *procLink, pid int) {
	l.pid = pid
	io.byPid[pid] = l
	for _, f := range l.files {
		// goinit's copy of the child end: with it closed, the worker's
		// exit is the channel's end of file.
		f.Close()
	}
	l.files = nil
	if l.sock != nil {
		l.sock.SetPID(pid)
	}
}

// abort undoes open after a failed start.
func (io *procIO) abort(l *procLink) {
	for _, f := range l.files {
		f.Close()
	}
	io.close(l)
}

// exited closes what pid had.
func (io *procIO) exited(pid int) {
	if l, ok := io.byPid[pid]; ok {
		io.close(l)
	}
}

func (io *procIO) close(l *procLink) {
	if l.conn != nil {
		l.conn.Close()
	}
	if l.sock != nil {
		l.sock.Close()
	}
	delete(io.byKey, l.key)
	if l.pid > 0 {
		delete(io.byPid, l.pid)
	}
}

// chanEvents and notifyEvents are nil (never ready) when not in use.
func (io *procIO) chanEvents() <-chan channel.Event[uint64] {
	if io == nil || io.chans == nil {
		return nil
	}
	return io.chans.Events()
}

func (io *procIO) notifyEvents() <-chan sdnotify.Event[uint64] {
	if io == nil || io.notify == nil {
		return nil
	}
	return io.notify.Events()
}

// onChannel handles one event of a worker's channel.
func (s *supervisor) onChannel(ev channel.Event[uint64]) {
	l, ok := s.io.byKey[ev.Key]
	if !ok || l.pid == 0 {
		return // its process is gone
	}
	now := time.Now()
	switch ev.Kind {
	case channel.Ready:
		s.poolOf(l).Ready(l.pid, cluster.Messaged, now)
	case channel.Ping:
		s.poolOf(l).Heartbeat(l.pid, now)
	case channel.Message:
		s.route(l, ev.To, ev.Data)
	case channel.Closed:
		s.log.Debug(fmt.Sprintf("worker %d (pid %d) closed its channel to goinit", l.id, l.pid), "worker", l.id, "pid", l.pid)
	}
}

// route delivers a message from a worker or the agent to the processes it
// names. Only ready processes with a channel are recipients: a message to
// a restarting worker is dropped, not kept for its successor.
func (s *supervisor) route(from *procLink, to, data json.RawMessage) {
	live, conns := s.liveProcs()
	d := s.io.router.Route(from.peer(), to, data, live)
	if d.Dropped != 0 {
		s.log.Debug(fmt.Sprintf("%s: message dropped (%v)", from.peer(), d.Dropped), "worker", from.id)
		return
	}
	s.deliver(d, conns)
}

// deliver sends d's envelope, checked once, to each of its recipients.
func (s *supervisor) deliver(d relay.Delivery, conns map[relay.Peer]*channel.Conn[uint64]) {
	line, ok := channel.NewLine(d.Envelope)
	if !ok {
		s.log.Debug("not relaying a message that is not one JSON line")
		return
	}
	for _, p := range d.To {
		if c, ok := conns[p]; ok {
			c.SendLine(line)
		}
	}
}

// peer is l's name in messages.
func (l *procLink) peer() relay.Peer {
	if l.role == "agent" {
		return relay.Agent()
	}
	return relay.Worker(l.id)
}

// liveProcs lists the recipients messages may go to: each worker slot's
// ready process and the ready agent, when they have a channel.
func (s *supervisor) liveProcs() (relay.Live, map[relay.Peer]*channel.Conn[uint64]) {
	var live relay.Live
	conns := map[relay.Peer]*channel.Conn[uint64]{}
	add := func(sl cluster.Slot, p relay.Peer) bool {
		l, ok := s.io.byPid[sl.Pid]
		if sl.Pid == 0 || !ok || l.conn == nil || sl.State != cluster.Running {
			return false
		}
		conns[p] = l.conn
		return true
	}
	for _, sl := range s.pool.Slots() {
		if add(sl, relay.Worker(sl.ID)) {
			live.Workers = append(live.Workers, sl.ID)
		}
	}
	if s.agent != nil {
		live.Agent = add(s.agent.Slots()[0], relay.Agent())
	}
	slices.Sort(live.Workers)
	return live, conns
}

// onPoolEvent tells the agent what happened to a worker, and the workers
// what happened to the agent ({"from": "goinit", "data": {"event":
// "worker-ready", ...}}), and notes when the agent is first ready.
func (s *supervisor) onPoolEvent(role string, e cluster.Event) {
	if role == "agent" && e.Kind == cluster.WorkerReady {
		s.agentReady = true
	}
	if s.op != nil {
		s.op.onPoolEvent(role, e)
	}
	if s.io == nil || s.io.chans == nil {
		return
	}
	pe := relay.PoolEvent{Subject: relay.Worker(e.ID), PID: e.Pid}
	if role == "agent" {
		pe.Subject = relay.Agent()
	}
	switch e.Kind {
	case cluster.WorkerStarted:
		pe.Kind = relay.Started
	case cluster.WorkerReady:
		pe.Kind = relay.BecameReady
	case cluster.WorkerExited:
		pe.Kind = relay.Exited
		if e.Status.Signaled() {
			pe.Signal = "SIG" + signals.Name(e.Status.Signal())
		} else {
			pe.ExitCode = e.Status.Code()
		}
	default:
		return
	}
	live, conns := s.liveProcs()
	// Workers' events go to the agent, the agent's to the workers: a
	// worker's message handler sees only what concerns it (the agent it
	// may talk to), not every sibling's comings and goings.
	if role == "agent" {
		live.Agent = false
	} else {
		live.Workers = nil
	}
	if !live.Agent && len(live.Workers) == 0 {
		return // nobody to tell: not a dropped message
	}
	s.deliver(s.io.router.Event(pe, live), conns)
}

// poolOf is the pool l's process belongs to.
func (s *supervisor) poolOf(l *procLink) *cluster.Pool {
	if l.role == "agent" {
		return s.agent
	}
	return s.pool
}

// onNotify handles one sd_notify datagram of a worker.
func (s *supervisor) onNotify(ev sdnotify.Event[uint64]) {
	l, ok := s.io.byKey[ev.Key]
	if !ok || l.pid == 0 {
		return
	}
	now := time.Now()
	if ev.StatusSet {
		s.log.Debug(fmt.Sprintf("worker %d (pid %d) status: %s", l.id, l.pid, ev.Status), "worker", l.id, "pid", l.pid)
	}
	if ev.Ready {
		s.poolOf(l).Ready(l.pid, cluster.Notified, now)
	}
	if ev.Watchdog {
		s.poolOf(l).Heartbeat(l.pid, now)
	}
	if ev.Stopping {
		s.log.Debug(fmt.Sprintf("worker %d (pid %d) is stopping (STOPPING=1)", l.id, l.pid), "worker", l.id, "pid", l.pid)
	}
}
