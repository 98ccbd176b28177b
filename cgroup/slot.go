package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

// removeTimeout bounds how long Remove waits for killed processes to leave
// the slot. SIGKILLed processes exit within milliseconds unless stuck in the
// kernel (D state), which waiting longer would not fix.
const removeTimeout = 5 * time.Second

// Slot is the cgroup of one worker slot or named slot, or a sibling of
// one (Sibling). It outlives the processes in it: a restart of the worker
// can go into the same Slot.
type Slot struct {
	h *Hierarchy
	// id is the worker slot id, -1 for a named slot.
	id int
	// name is the directory name: "worker-<id>" or the named slot's name.
	name   string
	limits Limits

	// paths maps controller to directory (v1), or "" to the one
	// directory (v2).
	paths map[string]string
	// dirs are the distinct directories of paths, memory first, so that
	// the first one is the best place to list processes.
	dirs []string
	// Where each kind of accounting is read; "" when not available.
	memDir, cpuDir, pidsDir string

	// dirFD is the open v2 directory for clone3 placement; nil on v1 and
	// after Remove. Guarded by h.mu.
	dirFD *os.File
}

// newSlotDirs fills in the directory bookkeeping of a slot.
func newSlotDirs(h *Hierarchy, id int, name string, l Limits, paths map[string]string) *Slot {
	s := &Slot{h: h, id: id, name: name, limits: l, paths: paths}
	if dir, ok := paths[""]; ok { // v2: one directory has everything
		s.dirs = []string{dir}
		s.cpuDir = dir // cpu.stat exists without the cpu controller
		if slices.Contains(h.controllers, ctrlMemory) {
			s.memDir = dir
		}
		if slices.Contains(h.controllers, ctrlPids) {
			s.pidsDir = dir
		}
		return s
	}
	for _, c := range []string{ctrlMemory, ctrlPids, ctrlCPUAcct, ctrlCPU} {
		if dir, ok := paths[c]; ok && !slices.Contains(s.dirs, dir) {
			s.dirs = append(s.dirs, dir)
		}
	}
	s.memDir, s.cpuDir, s.pidsDir = paths[ctrlMemory], paths[ctrlCPUAcct], paths[ctrlPids]
	return s
}

// ID returns the slot id given to Hierarchy.Slot, or -1 for a named slot.
func (s *Slot) ID() int { return s.id }

// Name returns the slot's directory name: "worker-<id>" for a worker slot,
// the name given to Hierarchy.NamedSlot for a named one.
func (s *Slot) Name() string { return s.name }

// Sibling returns the n-th sibling (n >= 1) of slot s, creating it if
// needed: a cgroup "<name>.<n>" beside s with the same id and limits, for
// a process of the same slot that runs at the same time as the one in s,
// such as the replacement a rolling reload starts while the old process
// still serves. Each then has the slot's full limits instead of sharing
// them. Like Hierarchy.Slot it is idempotent until the sibling is removed;
// Hierarchy.Close removes siblings with the rest.
func (s *Slot) Sibling(n int) (*Slot, error) {
	if n < 1 {
		return nil, fmt.Errorf("cgroup sibling %d of %s must be 1 or more", n, s.label())
	}
	return s.h.slot(s.id, s.base()+"."+strconv.Itoa(n), s.limits)
}

// base is the name of the slot a sibling belongs to: its own name for the
// slot itself. Sibling names are the only ones with a dot (see validName).
func (s *Slot) base() string {
	b, _, _ := strings.Cut(s.name, ".")
	return b
}

// Empty reports whether no process is in the slot (in any of its
// directories on v1), so that a new one started there would be alone.
// Exited but unreaped processes are not counted.
func (s *Slot) Empty() (bool, error) {
	pids, err := s.procs()
	if err != nil {
		return false, fmt.Errorf("list the processes of %s: %w", s.label(), err)
	}
	return len(pids) == 0, nil
}

// label names the slot in errors: "slot 2", "slot agent".
func (s *Slot) label() string {
	if s.id < 0 {
		return "slot " + s.name
	}
	return "slot " + strconv.Itoa(s.id)
}

// Path returns the slot's cgroup directory: on v1 the one in the memory
// hierarchy if used (else the first controller's), on v2 the only one.
func (s *Slot) Path() string { return s.dirs[0] }

// Limits returns the limits applied to the slot (Options.Limits for a
// worker slot, its Options.Named entry for a named one), e.g. for log
// lines: FormatBytes(s.Limits().Memory) is "256MiB".
func (s *Slot) Limits() Limits { return s.limits }

// FD returns an open file descriptor of the slot's cgroup v2 directory, for
// starting a worker directly inside the slot:
//
//	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
//
// The Slot owns the descriptor and keeps it open until Remove; do not close
// it. ok is false on cgroup v1 (use Add) and after Remove.
func (s *Slot) FD() (fd int, ok bool) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.dirFD == nil {
		return -1, false
	}
	return int(s.dirFD.Fd()), true
}

// Add moves process pid into the slot, in every controller's hierarchy. On
// v1 call it before the process allocates memory: memory already charged
// stays charged to the old cgroup. Typically the worker starts as a shim
// that blocks until the parent has called Add, then execs.
func (s *Slot) Add(pid int) error {
	for _, dir := range s.dirs {
		if err := cgroups.WriteCgroupProc(dir, pid); err != nil {
			return fmt.Errorf("move pid %d into %s cgroup %s: %w", pid, s.label(), dir, err)
		}
	}
	return nil
}

// OOMKills returns how many processes the kernel OOM killer has killed in
// the slot since it was created (v2 memory.events oom_kill, v1
// memory.oom_control oom_kill). It counts any process in the slot, not only
// the worker itself: compare it before and after a worker exits. It is 0
// without the memory controller.
//
// memory.failcnt is not used: it stays 0 on some kernels even after OOM
// kills.
func (s *Slot) OOMKills() (uint64, error) {
	if s.memDir == "" {
		return 0, nil
	}
	var n uint64
	var err error
	if s.h.version == 2 {
		n, err = fs2.OOMKillCount(s.memDir)
	} else {
		n, err = fs.OOMKillCount(s.memDir)
	}
	if err != nil {
		return 0, fmt.Errorf("read OOM kill count of %s: %w", s.label(), err)
	}
	return n, nil
}

// LimitOOMs counts the times the slot's own memory limit ran out and the
// OOM killer was invoked for it (cgroup v2 memory.events "oom"). Compared
// with OOMKills it tells which limit killed a worker: a kill counted in the
// slot without a limit event of its own came from a limit above it, such as
// the container's. ok is false on cgroup v1, which keeps no such count, and
// without the memory controller.
func (s *Slot) LimitOOMs() (n uint64, ok bool, err error) {
	if s.memDir == "" || s.h.version != 2 {
		return 0, false, nil
	}
	b, err := os.ReadFile(filepath.Join(s.memDir, "memory.events"))
	if err != nil {
		return 0, false, fmt.Errorf("read memory events of %s: %w", s.label(), err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, found := strings.Cut(line, " "); found && k == "oom" {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("%s memory.events: bad oom count %q", s.label(), v)
			}
			return n, true, nil
		}
	}
	return 0, true, nil
}

// Usage is what the kernel has charged to a slot. Fields the host cannot
// provide are zero.
type Usage struct {
	// MemoryBytes is the current memory use, page cache included
	// (v2 memory.current, v1 memory.usage_in_bytes).
	MemoryBytes int64
	// WorkingSetBytes is MemoryBytes without the inactive file cache
	// (memory.stat inactive_file, v1 total_inactive_file): what the kubelet
	// calls the working set, the memory the slot cannot give back at once.
	WorkingSetBytes int64
	// MemoryPeakBytes is the highest MemoryBytes since the slot was
	// created (v2 memory.peak, Linux 5.19+; v1 memory.max_usage_in_bytes).
	MemoryPeakBytes int64
	// CPUTime is the CPU time used by all processes that ran in the slot
	// (v2 cpu.stat usage_usec, v1 cpuacct.usage).
	CPUTime time.Duration
	// Pids is the number of processes now in the slot.
	Pids int
	// Tasks is the number of tasks (threads included) counted against
	// Limits.Pids (pids.current); 0 without the pids controller.
	Tasks int64
}

// Usage reads the slot's current usage.
func (s *Slot) Usage() (Usage, error) {
	var u Usage
	var errs []error
	readInt := func(dir, file string) int64 {
		if dir == "" {
			return 0
		}
		v, err := fscommon.GetCgroupParamUint(dir, file)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			return 0
		}
		return int64(min(v, uint64(1<<63-1)))
	}
	inactive := "total_inactive_file"
	if s.h.version == 2 {
		inactive = "inactive_file"
		u.MemoryBytes = readInt(s.memDir, "memory.current")
		u.MemoryPeakBytes = readInt(s.memDir, "memory.peak")
		if usec, err := fscommon.GetValueByKey(s.cpuDir, "cpu.stat", "usage_usec"); err != nil {
			errs = append(errs, err)
		} else {
			u.CPUTime = time.Duration(usec) * time.Microsecond
		}
	} else {
		u.MemoryBytes = readInt(s.memDir, "memory.usage_in_bytes")
		u.MemoryPeakBytes = readInt(s.memDir, "memory.max_usage_in_bytes")
		u.CPUTime = time.Duration(readInt(s.cpuDir, "cpuacct.usage"))
	}
	u.WorkingSetBytes = u.MemoryBytes
	if s.memDir != "" {
		if v, err := fscommon.GetValueByKey(s.memDir, "memory.stat", inactive); err == nil {
			u.WorkingSetBytes = max(u.MemoryBytes-int64(min(v, uint64(u.MemoryBytes))), 0)
		}
	}
	u.Tasks = readInt(s.pidsDir, "pids.current")
	pids, err := cgroups.GetPids(s.dirs[0])
	if err != nil {
		errs = append(errs, err)
	}
	u.Pids = len(pids)
	if err := errors.Join(errs...); err != nil {
		return u, fmt.Errorf("read usage of %s: %w", s.label(), err)
	}
	return u, nil
}

// Kill sends SIGKILL to every process in the slot, including processes
// that forked while it ran. It does not wait for them to exit or reap
// them. On v2 it uses cgroup.kill (Linux 5.14+), which the kernel makes
// race-free; otherwise it signals each pid in cgroup.procs until no new
// pid appears.
func (s *Slot) Kill() error {
	if s.h.version == 2 {
		err := cgroups.WriteFile(s.dirs[0], "cgroup.kill", "1")
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kill %s: %w", s.label(), err)
		}
	}
	signalled := make(map[int]bool)
	// Each round signals pids not seen before; a forking process shows
	// up with new children at most a few rounds in a row before it dies.
	for range 100 {
		pids, err := s.procs()
		if err != nil {
			return fmt.Errorf("kill %s: %w", s.label(), err)
		}
		fresh := 0
		for _, pid := range pids {
			if signalled[pid] {
				continue
			}
			signalled[pid] = true
			fresh++
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill pid %d in %s: %w", pid, s.label(), err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("kill %s: processes keep appearing", s.label())
}

// procs lists the processes in any of the slot's directories. On v1 a
// process can be in one hierarchy's cgroup and not another's (e.g. a
// failed Add), so all are read.
func (s *Slot) procs() ([]int, error) {
	var all []int
	for _, dir := range s.dirs {
		pids, err := cgroups.GetPids(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, p := range pids {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
	}
	return all, nil
}

// Remove kills everything in the slot, waits (up to a few seconds) for the
// processes to leave, and removes the slot's cgroup directories. Exited but
// unreaped processes (zombies) do not hold it up. After Remove, Hierarchy.Slot
// with the same id (NamedSlot with the same name) creates a fresh slot.
func (s *Slot) Remove() error {
	s.h.mu.Lock()
	if s.h.slots[s.name] == s {
		delete(s.h.slots, s.name)
	}
	if s.dirFD != nil {
		_ = s.dirFD.Close()
		s.dirFD = nil
	}
	s.h.mu.Unlock()

	deadline := time.Now().Add(removeTimeout)
	for {
		if err := s.Kill(); err != nil {
			return err
		}
		pids, err := s.procs()
		if err != nil {
			return fmt.Errorf("remove %s: %w", s.label(), err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove %s: processes %s did not exit within %v of SIGKILL", s.label(), joinInts(pids), removeTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s.removeDirs()
}

// removeDirs removes the slot's directories.
func (s *Slot) removeDirs() error {
	var errs []error
	for _, dir := range s.dirs {
		if err := removeDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// String names the slot for logs: "slot 2 (/sys/fs/cgroup/.../worker-2)",
// "slot agent (/sys/fs/cgroup/.../agent)".
func (s *Slot) String() string {
	return s.label() + " (" + s.Path() + ")"
}
