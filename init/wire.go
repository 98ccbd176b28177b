package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/reaper"
)

// newSupervisor builds the spawners, the worker pool and (with --agent)
// the agent's pool of one, and the supervisor that runs them.
func newSupervisor(cfg *config, log *slog.Logger, r *reaper.Reaper, sigc chan os.Signal, env *workerEnv, self, dir string) *supervisor {
	base := spawner{cfg: cfg, reaper: r, log: log, self: self, dir: dir, oomScore: -1001, env: childEnv(os.Environ())}
	sp := base
	sp.command, sp.path = cfg.command, cfg.path
	sp.files, sp.listenEnv, sp.cgroup, sp.sharer = env.files, env.listenEnv, env.cgroup, env.sharer
	sp.foreground = !cfg.clusterMode && ownsTerminal()
	name := func(id int) string { return "child " + cfg.command[0] }
	ready := cluster.Readiness{Mode: cluster.ReadyExec}
	var io *procIO
	if cfg.clusterMode {
		sp.role, sp.oomScore = "worker", workerOOMScore()
		name = func(id int) string { return fmt.Sprintf("worker %d", id) }
		ready = cfg.ready
		io = newProcIO(cfg, log)
		sp.io, sp.env = io, withoutChannelEnv(sp.env, io)
		sp.notify = cfg.ready.Mode == cluster.ReadyNotify
	}
	sup := &supervisor{cfg: cfg, log: log, reaper: r, sigc: sigc, oomCheck: env.oomCheck, memoryOver: env.memoryOver, name: name, io: io}
	sup.pool = cluster.New(cluster.Config{
		Workers: cfg.workers, Policy: cfg.policy, Start: sp.start, Log: log, Name: name,
		Explain: env.explain,
		Quiet:   !cfg.clusterMode && cfg.policy.Restart == cluster.RestartNever,
		Ready:   ready, StopSignal: cfg.stopSignal, Group: cfg.groupScope, StopTimeout: cfg.stopTimeout,
		Surge: cfg.reloadSurge, Release: sp.newRelease, Watchdog: cfg.watchdog, MaxLifetime: cfg.maxLifetime,
		OnEvent: func(e cluster.Event) { sup.onPoolEvent("worker", e) },
	})
	if cfg.agent != nil {
		// The agent: its own command and channel, no sockets, no shared
		// binds (it is one process), the workers' restart policy.
		ag := base
		ag.command, ag.path, ag.role = cfg.agent, cfg.agentPath, "agent"
		ag.oomScore, ag.io, ag.env = workerOOMScore(), io, sp.env
		ag.notify = cfg.agentReady.Mode == cluster.ReadyNotify
		sup.agent = cluster.New(cluster.Config{
			Workers: 1, Policy: cfg.policy, Start: ag.start, Log: log, Name: func(int) string { return "agent" },
			Ready: cfg.agentReady, StopSignal: cfg.stopSignal, Group: cfg.groupScope, StopTimeout: cfg.stopTimeout,
			Release: ag.newRelease, Watchdog: cfg.watchdog,
			OnEvent: func(e cluster.Event) { sup.onPoolEvent("agent", e) },
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
