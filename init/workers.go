package main

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/listen"
	"github.com/goinit/goinit/portshare"
	"github.com/goinit/goinit/reaper"
)

// workerEnv is what every worker start shares: its sockets, its cgroup and
// how to explain its death.
type workerEnv struct {
	files     func(id int) []*os.File
	listenEnv []string
	// sets holds the --listen sockets behind files; nil without --listen.
	sets *listen.Sets
	// tcp are the TCP --listen sockets (of the first set with
	// --balance=reuseport), which a worker's own bind of the same address
	// gets when ports are shared.
	tcp     []*os.File
	cgroup  func(id int) (slotCgroup, error)
	explain func(id, pid int, st reaper.Status) string
	// oomCheck reports OOM kills inside running workers; nil without
	// cgroup limits.
	oomCheck func(name func(int) string)
	// memoryOver lists the worker pids using more memory than a limit;
	// usage reads one slot's cgroups; oomKills are the OOM kills reported
	// per slot. All nil without cgroup limits.
	memoryOver func(limit int64) []int
	usage      func(id, pid int) (cgroup.Usage, bool)
	oomKills   func() map[int]uint64
	// sharer shares the ports workers bind themselves; nil when off.
	sharer *portshare.Sharer
	// agentCgroup and agentExplain are the agent's cgroup and OOM
	// explanation; nil without cgroups.
	agentCgroup  func(id int) (slotCgroup, error)
	agentExplain func(id, pid int, st reaper.Status) string
}

// prepareWorkers binds the --listen sockets and creates the workers'
// cgroups, before any worker starts, so that a bad address or an
// unavailable controller is a start-up error, not a crash loop. cleanup
// releases what it made; call it whether or not there was an error.
func prepareWorkers(cfg *config, log *slog.Logger) (*workerEnv, func(), error) {
	env := &workerEnv{}
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if len(cfg.listen) > 0 {
		sets, err := openListeners(cfg, env)
		if err != nil {
			return env, cleanup, err
		}
		closers = append(closers, sets.Close)
	}
	sh, err := openSharer(cfg, env.tcp, log)
	if err != nil {
		return env, cleanup, err
	}
	if sh != nil {
		env.sharer = sh
		// Closed last of all, once every worker is gone: a worker that
		// binds after its sharer is gone gets ENOSYS.
		closers = append([]func(){func() { sh.Close() }}, closers...)
	}
	closeCgroups, err := openCgroups(cfg, env, log)
	if closeCgroups != nil {
		closers = append(closers, closeCgroups)
	}
	return env, cleanup, err
}

// openListeners binds every --listen address: once for all workers
// (--balance=shared), or once per starting worker slot with SO_REUSEPORT
// (--balance=reuseport). goinit keeps every socket open while a slot uses
// it, so connections queued on a socket survive its worker's restart; the
// supervisor closes and re-opens a slot's set as it scales.
func openListeners(cfg *config, env *workerEnv) (*listen.Sets, error) {
	addrs := make([]listen.Addr, len(cfg.listen))
	for i, s := range cfg.listen {
		a, err := listen.ParseAddr(s)
		if err != nil {
			return nil, usagef("%v", err)
		}
		addrs[i] = a
	}
	n, reuse := 1, cfg.balance == "reuseport"
	if reuse {
		n = cfg.workers
	}
	sets, err := listen.OpenSets(context.Background(), addrs, n, reuse)
	if err != nil {
		return nil, usagef("%v", err)
	}
	first := sets.Files(0)
	env.sets, env.files = sets, sets.Files
	env.listenEnv = listen.Env(addrs, first)
	for i, a := range addrs {
		if strings.HasPrefix(a.Network, "tcp") {
			env.tcp = append(env.tcp, first[i])
		}
	}
	return sets, nil
}
