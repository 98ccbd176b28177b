package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
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
	// usage reads one process's cgroup; oomKills are the OOM kills
	// reported per slot. All nil without cgroup limits.
	memoryOver func(limit int64) []int
	usage      func(pid int) (cgroup.Usage, bool)
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
		files, err := openListeners(cfg, env)
		closers = append(closers, func() {
			for _, per := range files {
				for _, f := range per {
					f.Close()
				}
			}
		})
		if err != nil {
			return env, cleanup, err
		}
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
// (--balance=shared), or once per worker slot with SO_REUSEPORT
// (--balance=reuseport). goinit keeps every socket open for its whole life,
// so connections queued on a socket survive its worker's restart.
func openListeners(cfg *config, env *workerEnv) ([][]*os.File, error) {
	addrs := make([]listen.Addr, len(cfg.listen))
	for i, s := range cfg.listen {
		a, err := listen.ParseAddr(s)
		if err != nil {
			return nil, usagef("%v", err)
		}
		addrs[i] = a
	}
	sets := 1
	reuse := cfg.balance == "reuseport"
	if reuse {
		sets = cfg.workers
	}
	files := make([][]*os.File, sets)
	for set := range files {
		for i, a := range addrs {
			if set > 0 && a.Network == "unix" {
				// A unix socket has one path, so one socket: every
				// worker shares it whatever the balance mode.
				files[set] = append(files[set], files[0][i])
				continue
			}
			if set > 0 {
				a = samePort(a, files[0][i])
			}
			f, err := listen.Open(context.Background(), a, reuse && a.Network != "unix")
			if err != nil {
				return files, usagef("%v", err)
			}
			files[set] = append(files[set], f)
		}
	}
	env.listenEnv = listen.Env(addrs, files[0])
	for i, a := range addrs {
		if strings.HasPrefix(a.Network, "tcp") {
			env.tcp = append(env.tcp, files[0][i])
		}
	}
	env.files = func(id int) []*os.File { return files[id%sets] }
	return files, nil
}

// samePort returns a with the port the kernel chose for first, so that the
// per-worker sockets of a ":0" address all share one port.
func samePort(a listen.Addr, first *os.File) listen.Addr {
	host, port, err := net.SplitHostPort(a.Address)
	if err != nil || port != "0" {
		return a
	}
	bound, err := listen.BoundAddr(first)
	if err != nil {
		return a
	}
	switch b := bound.(type) {
	case *net.TCPAddr:
		a.Address = net.JoinHostPort(host, strconv.Itoa(b.Port))
	case *net.UDPAddr:
		a.Address = net.JoinHostPort(host, strconv.Itoa(b.Port))
	}
	return a
}
