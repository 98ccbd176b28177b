package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/portshare"
	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/worklog"
)

// slotCgroup is what starting a worker needs of its cgroup.
type slotCgroup interface {
	// FD is the cgroup v2 directory to start the worker in, if any.
	FD() (int, bool)
	// Add moves pid into the cgroup (cgroup v1).
	Add(pid int) error
	// Started says the worker is pid, once it runs there.
	Started(pid int)
}

// spawner starts worker processes: the command itself, or goinit's shim
// when something must happen between fork and exec. The agent has a
// spawner of its own, with its command and role and no sockets.
type spawner struct {
	cfg *config
	// command is what runs (argv), path its resolved command[0]; role is
	// "worker", "agent", or "" for a single command.
	command []string
	path    string
	role    string
	// notify gives each start its own NOTIFY_SOCKET (--ready=notify).
	notify bool
	reaper *reaper.Reaper
	log    *slog.Logger
	self   string // goinit's own executable, for the shim
	// dir is the directory goinit was started in, where every child
	// starts; goinit itself has moved to / (leaveWorkingDirectory).
	dir string

	// files returns the sockets worker id receives as fds 3, 4, ...
	files func(id int) []*os.File
	// listenEnv is LISTEN_FDS, LISTEN_FDNAMES and PORT.
	listenEnv []string
	// cgroup returns worker id's cgroup, or nil without limits.
	cgroup func(id int) (slotCgroup, error)
	// foreground gives the child the terminal: single command on a tty.
	foreground bool
	// oomScore is the workers' oom_score_adj, so that a container-wide OOM
	// takes a worker rather than goinit; -1001 leaves it alone. The shim
	// sets it before exec, so nothing the worker forks escapes it.
	oomScore int
	// env is the environment every start begins with: goinit's own,
	// without its settings (childEnv).
	env []string
	// sharer shares the ports the worker binds itself; nil when off.
	sharer *portshare.Sharer
	// io makes each worker's channel to goinit and notify socket; nil
	// when workers get neither.
	io *procIO
	// logs carries the workers' output with --worker-logs=prefix|json;
	// nil to inherit goinit's stdout and stderr.
	logs *worklog.Logs
	// workers is the pool's current number of worker slots, for
	// GOINIT_WORKERS; nil means --workers.
	workers func() int
	// releases are the commands a reload prepared, by release number;
	// release 0 is the one goinit started with (made on first use).
	releases []release
}

// release is one version of the command: its resolved path, and the file
// itself held open (O_PATH), so that a slot restarted after a failed
// reload runs the binary it ran before even when a deploy has put another
// file at that path.
type release struct {
	path string
	pin  *os.File // nil when the file could not be opened
}

// pinRelease opens path for exec by descriptor.
func pinRelease(path string) release {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return release{path: path}
	}
	return release{path: path, pin: os.NewFile(uintptr(fd), path)}
}

// samePinned reports whether the file at path is still the one pin holds.
func samePinned(path string, pin *os.File) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Fstat(int(pin.Fd()), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// workerCount is GOINIT_WORKERS: the slots there are as the process starts.
func (s *spawner) workerCount() int {
	if s.workers != nil {
		return s.workers()
	}
	return s.cfg.workers
}

// newRelease looks the command up again for a reload, so that a new binary
// on disk is picked up, and returns its release number. The earlier
// releases stay, so a slot whose replacement failed restarts its own.
func (s *spawner) newRelease() (int, error) {
	path, err := resolveCommand(s.command[0])
	if err != nil {
		return 0, err
	}
	s.release(0)
	s.releases = append(s.releases, pinRelease(path))
	return len(s.releases) - 1, nil
}

// forget closes the pins of the releases that needed says no start can
// run any more. An open descriptor keeps a replaced binary's blocks on
// disk, and a pin per reload would pile up; a forgotten release keeps its
// path, in case it is asked for after all.
func (s *spawner) forget(needed func(int) bool) {
	for n := range s.releases {
		if r := &s.releases[n]; r.pin != nil && !needed(n) {
			r.pin.Close()
			r.pin = nil
		}
	}
}

// release returns release n, pinning release 0 the first time.
func (s *spawner) release(n int) release {
	if len(s.releases) == 0 {
		s.releases = []release{pinRelease(s.path)}
	}
	if n < 0 || n >= len(s.releases) {
		n = 0
	}
	return s.releases[n]
}

// start starts worker id running release and returns its pid, already
// known to the reaper.
func (s *spawner) start(id, release int) (int, error) {
	cfg := s.cfg
	env := slices.Clip(s.env)
	switch s.role {
	case "worker":
		env = append(env, "GOINIT_ROLE=worker", "GOINIT_WORKER_ID="+strconv.Itoa(id), "GOINIT_WORKERS="+strconv.Itoa(s.workerCount()))
	case "agent":
		env = append(env, "GOINIT_ROLE=agent", "GOINIT_WORKERS="+strconv.Itoa(s.workerCount()))
	}
	if cfg.user != nil {
		env = append(env, "HOME="+cfg.user.home)
		if cfg.user.name != "" {
			env = append(env, "USER="+cfg.user.name)
		}
	}
	var files []*os.File
	if s.files != nil {
		files = s.files(id)
		env = append(env, s.listenEnv...)
	}
	sockets := len(files) // LISTEN_FDS; the channel and handoff fds come after
	var link *procLink
	var handoff *portshare.Handoff
	var pipes *worklog.Pipes
	// What a start opens before the fork is released here on every
	// failure, so that a slot that keeps failing to start (its directory
	// gone) leaks nothing per attempt.
	started := false
	defer func() {
		if started {
			return
		}
		if pipes != nil {
			pipes.Abort()
		}
		if handoff != nil {
			handoff.Close()
		}
		if link != nil {
			s.io.abort(link)
		}
	}()
	if s.io != nil {
		l, extra, ioEnv, err := s.io.open(s.role, id, 3+len(files), s.notify)
		if err != nil {
			return 0, err
		}
		link = l
		files = append(slices.Clip(files), extra...)
		env = append(env, ioEnv...)
	}
	path := s.path
	var pin *os.File
	if s.role != "" {
		// Workers and the agent run a pinned release (a single command
		// never reloads, and runs exactly as under tini).
		rel := s.release(release)
		path, pin = rel.path, rel.pin
		if pin != nil && samePinned(path, pin) {
			// Exec by path while the file there is still the release's:
			// run by descriptor, the process's name (comm, which ps,
			// top and pgrep show) would be the descriptor's number.
			pin = nil
		}
	}
	attr := &syscall.SysProcAttr{
		// Each worker leads its own process group, so a signal can reach
		// everything it forked, and nothing of goinit's. With Foreground,
		// the zero Ctty is stdin: the terminal goinit owns.
		Setpgid:    true,
		Foreground: s.foreground,
	}
	if u := cfg.user; u != nil {
		attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
	var cg slotCgroup
	if s.cgroup != nil {
		var err error
		if cg, err = s.cgroup(id); err != nil {
			return 0, fmt.Errorf("worker %d cgroup: %w", id, err)
		}
	}
	opts := shimOptions{listen: sockets > 0, oomScore: s.oomScore}
	if s.sharer != nil {
		var err error
		if handoff, err = portshare.NewHandoff(); err != nil {
			return 0, fmt.Errorf("worker %d: %w", id, err)
		}
		opts.shareFD = 3 + len(files)
		files = append(slices.Clip(files), handoff.Child())
		if os.Getpid() != 1 {
			// A worker that outlived goinit would get ENOSYS from every
			// later bind(): it dies with goinit. (As PID 1, the kernel
			// kills everything in the namespace.)
			attr.Pdeathsig = unix.SIGKILL
			opts.pdeath = int(unix.SIGKILL)
		}
	}
	placeAfterFork := false
	if cg != nil {
		if fd, ok := cg.FD(); ok {
			// cgroup v2: clone3 starts the child inside; no window
			// where it runs unlimited.
			attr.UseCgroupFD, attr.CgroupFD = true, fd
		} else {
			placeAfterFork = true
		}
	}
	var cmd *exec.Cmd
	var syncR, syncW *os.File
	useShim := opts.listen || placeAfterFork || opts.oomScore >= -1000 || opts.shareFD > 0 || pin != nil
	if useShim {
		if pin != nil {
			opts.exeFD = 3 + len(files)
			files = append(slices.Clip(files), pin)
		}
		if placeAfterFork {
			var err error
			if syncR, syncW, err = os.Pipe(); err != nil {
				return 0, fmt.Errorf("worker %d: %w", id, err)
			}
			defer syncR.Close()
			defer syncW.Close()
			opts.syncFD = 3 + len(files)
			files = append(files, syncR)
		}
		cmd = &exec.Cmd{Path: s.self, Args: append([]string{"goinit", path}, s.command...)}
		env = append(env, shimEnv+"="+opts.String())
	} else {
		cmd = &exec.Cmd{Path: path, Args: s.command}
	}
	cmd.Env, cmd.ExtraFiles, cmd.SysProcAttr, cmd.Dir = env, files, attr, s.dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if s.logs != nil && s.role != "" {
		var err error
		if pipes, err = s.logs.Open(s.role, id); err != nil {
			return 0, fmt.Errorf("%s %d: worker logs: %w", s.role, id, err)
		}
		cmd.Stdout, cmd.Stderr = pipes.Stdout, pipes.Stderr
	}
	// A failed chdir in the child comes back as the same ENOENT as a
	// missing command, so the directory is checked first, to say which.
	if _, err := os.Stat(s.dir); err != nil {
		return 0, &cluster.StartError{Code: 127, Err: fmt.Errorf(
			"cannot start %s in %s, the directory goinit was started in: %v (it was removed or became inaccessible; restore it, or start goinit in another directory)",
			s.command[0], s.dir, errors.Unwrap(err))}
	}
	if err := s.reaper.Start(cmd); err != nil {
		return 0, startError(s.command[0], err)
	}
	started = true
	pid := cmd.Process.Pid
	if pipes != nil {
		pipes.Started(pid)
	}
	if link != nil {
		s.io.started(link, pid)
	}
	if handoff != nil {
		handoff.Started()
		// Returns at once; the notification fd arrives from the shim.
		s.sharer.AttachHandoff(id, pid, handoff, 0)
	}
	if cg != nil {
		cg.Started(pid)
	}
	if placeAfterFork {
		if err := cg.Add(pid); err != nil {
			// The shim reads EOF and exits 125 without running the
			// command: a worker never runs outside its limits.
			s.log.Error(fmt.Sprintf("worker %d: cannot place it in its cgroup: %v; it will not run", id, err), "worker", id)
			return pid, nil
		}
		if _, err := syncW.Write([]byte{1}); err != nil {
			s.log.Warn("cannot release worker", "worker", id, "err", err)
		}
	}
	return pid, nil
}

// startError gives a failed start the exit code a shell would: 127 when the
// command is not there, 126 when it cannot be executed.
func startError(name string, err error) error {
	code := 126
	var errno unix.Errno
	if errors.As(err, &errno) && (errno == unix.ENOENT || errno == unix.ENOTDIR) {
		code = 127
	}
	return &cluster.StartError{Code: code, Err: fmt.Errorf("cannot run %s: %w", name, err)}
}

// workerOOMScore is the oom_score_adj workers get: 500 above goinit's own,
// so that when the container runs out of memory the kernel takes a worker,
// which goinit restarts, rather than goinit, which would end the container.
func workerOOMScore() int {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return -1001
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1001
	}
	return min(own+500, 1000)
}

// childEnv is goinit's environment without goinit's own settings: a
// GOINIT_* variable configures this goinit, and passed on it would
// configure a goinit that the command may run in turn.
func childEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, envPrefix) && !workerVars[k] {
			continue
		}
		out = append(out, kv)
	}
	return out
}
