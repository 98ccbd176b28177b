package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/control"
	"github.com/goinit/goinit/health"
	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/worklog"
)

// newSupervisor builds the spawners, the worker pool and (with --agent)
// the agent's pool of one, and the supervisor that runs them.
func newSupervisor(cfg *config, log *slog.Logger, r *reaper.Reaper, sigc chan os.Signal, env *workerEnv, self, dir string, logs *worklog.Logs) *supervisor {
	base := spawner{cfg: cfg, reaper: r, log: log, self: self, dir: dir, oomScore: -1001, env: childEnv(os.Environ()), logs: logs}
	sp := base
	sp.command, sp.path = cfg.command, cfg.path
	sp.files, sp.listenEnv, sp.cgroup, sp.sharer = env.files, env.listenEnv, env.cgroup, env.sharer
	sp.foreground = !cfg.clusterMode && ownsTerminal()
	name := func(id int) string { return "child " + cfg.command[0] }
	ready := cluster.Readiness{Mode: cluster.ReadyExec}
	var io *procIO
	if cfg.clusterMode {
		sp.role, sp.oomScore = "worker", workerOOMScore()
		name = func(id int) string {
			if id == agentID {
				return "agent" // the limiter's name for the agent's slot
			}
			return fmt.Sprintf("worker %d", id)
		}
		ready = cfg.ready
		io = newProcIO(cfg, log)
		sp.io, sp.env = io, withoutChannelEnv(sp.env, io)
		sp.notify = cfg.ready.Mode == cluster.ReadyNotify
	}
	sup := &supervisor{cfg: cfg, log: log, reaper: r, sigc: sigc, oomCheck: env.oomCheck, memoryOver: env.memoryOver, name: name, io: io, sets: env.sets}
	sup.pool = cluster.New(cluster.Config{
		Workers: cfg.workers, Policy: cfg.policy, Start: sp.start, Log: log, Name: name,
		Explain: env.explain,
		Quiet:   !cfg.clusterMode && cfg.policy.Restart == cluster.RestartNever,
		Ready:   ready, StopSignal: cfg.stopSignal, Group: cfg.groupScope, StopTimeout: cfg.stopTimeout,
		Surge: cfg.reloadSurge, Release: sp.newRelease, Watchdog: cfg.watchdog, MaxLifetime: cfg.maxLifetime,
		OnEvent: func(e cluster.Event) { sup.onPoolEvent("worker", e); forgetReleases(&sp, sup.pool, e) },
	})
	sp.workers = sup.pool.Workers
	if cfg.agent != nil {
		// The agent: its own command and channel, no sockets, no shared
		// binds (it is one process), the workers' restart policy.
		ag := base
		ag.command, ag.path, ag.role = cfg.agent, cfg.agentPath, "agent"
		ag.oomScore, ag.io, ag.env = workerOOMScore(), io, sp.env
		ag.notify = cfg.agentReady.Mode == cluster.ReadyNotify
		ag.cgroup = env.agentCgroup
		ag.workers = sup.pool.Workers
		sup.agent = cluster.New(cluster.Config{
			Workers: 1, Policy: cfg.policy, Start: ag.start, Log: log, Name: func(int) string { return "agent" }, Role: "agent",
			Explain: env.agentExplain,
			Ready:   cfg.agentReady, StopSignal: cfg.stopSignal, Group: cfg.groupScope, StopTimeout: cfg.stopTimeout,
			Release: ag.newRelease, Watchdog: cfg.watchdog,
			OnEvent: func(e cluster.Event) { sup.onPoolEvent("agent", e); forgetReleases(&ag, sup.agent, e) },
		})
	}
	if env.sharer != nil {
		sup.shareEvents = env.sharer.Events()
	}
	if sp.foreground {
		sup.tty = &terminal{sigc: sigc}
	}
	return sup
}

// operate starts the control socket and the health server, per --control
// and --health-addr, and gives sup the operator they read. Both are served
// until ctx ends, which is when goinit exits, so that `goinit status` and
// /readyz (503) answer during a shutdown. An address that cannot be used
// is a start-up error (exit 2); the default control path that cannot be
// made is only a debug line, so a read-only root keeps working.
func operate(ctx context.Context, cfg *config, log *slog.Logger, sup *supervisor, env *workerEnv, logs *worklog.Logs) error {
	// The default socket is made in the background, off the path to the
	// child's exec: it is there a moment later, or off with a debug line.
	// An explicit --control=PATH is checked now, since it can be wrong.
	var cl *net.UnixListener
	var err error
	background := cfg.control == ""
	if !background {
		if cl, err = control.Listen(cfg.control, log); err != nil {
			return usagef("--control=%s: %v", cfg.control, err)
		}
	}
	var hl net.Listener
	if cfg.healthAddr != "" {
		if hl, err = health.Listen(cfg.healthAddr); err != nil {
			if cl != nil {
				cl.Close()
			}
			return usagef("--health-addr=%s: %v", cfg.healthAddr, err)
		}
	}
	if cl == nil && hl == nil && !background {
		return nil
	}
	op := newOperator()
	op.logs, op.usage, op.oomKills = logs, env.usage, env.oomKills
	for i, a := range cfg.listen {
		if env.files == nil {
			break
		}
		if f := env.files(0); i < len(f) {
			if ino, err := state.SocketInode(f[i]); err == nil {
				op.sockets = append(op.sockets, state.Socket{Address: a, Worker: -1, Inode: ino})
			}
		}
	}
	if sh := env.sharer; sh != nil {
		op.held = func() []state.Socket {
			var out []state.Socket
			for _, h := range sh.Held() {
				// A --listen socket is held too: listed once.
				if !slices.ContainsFunc(op.sockets, func(s state.Socket) bool { return s.Inode == h.Inode }) {
					out = append(out, state.Socket{Address: h.Addr, Worker: -1, Inode: h.Inode})
				}
			}
			return out
		}
	}
	sup.op = op
	srv := control.NewServer(control.Options{Requests: op.reqs, Snapshot: op.pub.Load, Logger: log})
	switch {
	case background:
		go func() {
			if cl, _ := control.Listen("", log); cl != nil {
				log.Debug("control socket listening", "path", cl.Addr().String())
				srv.Serve(ctx, cl)
			}
		}()
	case cl != nil:
		log.Debug("control socket listening", "path", cl.Addr().String())
		go srv.Serve(ctx, cl)
	}
	if hl != nil {
		srv := health.New(health.Options{Snapshot: op.pub.Load, MaxSnapshotAge: 3 * publishInterval, Logger: log})
		go srv.Serve(ctx, hl)
		log.Info(fmt.Sprintf("serving /healthz, /readyz and /metrics on http://%s", hl.Addr()))
	}
	return nil
}

// forgetReleases lets go of the releases a pool no longer needs once a
// reload has ended, whether it succeeded or rolled back.
func forgetReleases(sp *spawner, pool *cluster.Pool, e cluster.Event) {
	if e.Kind == cluster.ReloadDone || e.Kind == cluster.ReloadFailed {
		sp.forget(pool.NeedsRelease)
	}
}
