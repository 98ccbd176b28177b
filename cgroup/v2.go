package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs2"
	"golang.org/x/sys/unix"
)

// openV2 builds, under goinit's own cgroup <own>:
//
//	<own>                   subtree_control += controllers (was goinit's home)
//	<own>/<prefix>          subtree_control  = controllers, no processes
//	<own>/<prefix>/supervisor   goinit itself
//	<own>/<prefix>/worker-N     one per worker slot (created by Slot)
//	<own>/<prefix>/<name>       one per named slot (created by NamedSlot)
//
// The kernel only lets a cgroup enable controllers for its children while it
// holds no processes, so goinit has to leave <own> first. Unlike
// fs2.CreateCgroupPath, every subtree_control write is checked.
func (h *Hierarchy) openV2(pi procInfo) error {
	m, _ := pi.v2Mount(h.root)
	own, err := pi.ownDir(m, "")
	if err != nil {
		return &UnavailableError{
			Cause: fmt.Sprintf("cannot find goinit's cgroup v2: %v", err),
			Fix:   "run goinit with a cgroup namespace (the default for containers on cgroup v2)",
			Err:   err,
		}
	}
	h.own = own
	h.base = filepath.Join(own, h.prefix)
	h.leaf = filepath.Join(h.base, SupervisorDir)

	available, err := readFields(own, "cgroup.controllers")
	if err != nil {
		return fmt.Errorf("read available cgroup controllers: %w", err)
	}
	required, optional := needs(h.limitSets(), 2)
	for _, n := range required {
		if !slices.Contains(available, n.controller) {
			return &UnavailableError{
				Controller: n.controller,
				Limit:      n.limit,
				Slot:       n.slot,
				Cause: fmt.Sprintf("cgroup %s controller is not delegated to %s (available: %s)",
					n.controller, own, orNone(available)),
				Fix: "enable it in the parent's cgroup.subtree_control (systemd: Delegate=yes)",
				Err: os.ErrNotExist,
			}
		}
	}
	want := make([]need, 0, len(required)+len(optional))
	want = append(want, required...)
	for _, n := range optional {
		if slices.Contains(available, n.controller) {
			want = append(want, n)
		}
	}
	var first need // the limit to name when nothing at all can be written
	if len(required) > 0 {
		first = required[0]
	}

	created, err := makeDir(h.base)
	if err != nil {
		if isPermissionLike(err) {
			return first.notWritable(h.base, err)
		}
		return fmt.Errorf("create cgroup %s: %w", h.base, err)
	}
	if created {
		h.createdBases = append(h.createdBases, h.base)
	}
	if _, err := makeDir(h.leaf); err != nil {
		return fmt.Errorf("create cgroup %s: %w", h.leaf, err)
	}
	if err := cgroups.WriteCgroupProc(h.leaf, os.Getpid()); err != nil {
		return fmt.Errorf("move goinit (pid %d) into %s: %w", os.Getpid(), h.leaf, err)
	}

	enabled, err := readFields(own, "cgroup.subtree_control")
	if err != nil {
		return fmt.Errorf("read enabled cgroup controllers: %w", err)
	}
	for _, n := range want {
		dir, err := own, error(nil)
		if !slices.Contains(enabled, n.controller) {
			if err = writeFile(own, "cgroup.subtree_control", "+"+n.controller); err == nil {
				h.enabledOwn = append(h.enabledOwn, n.controller)
			}
		}
		if err == nil {
			dir, err = h.base, writeFile(h.base, "cgroup.subtree_control", "+"+n.controller)
		}
		switch {
		case err != nil && n.limit == "":
			h.log.Debug("cgroup controller skipped; its usage is not tracked", "controller", n.controller, "err", err)
		case err != nil:
			return h.enableError(n, dir, err)
		default:
			h.controllers = append(h.controllers, n.controller)
		}
	}
	h.log.Debug("cgroup v2 hierarchy ready", "dir", h.base, "controllers", h.controllers)
	return nil
}

// enableError explains a failed write to dir/cgroup.subtree_control.
func (h *Hierarchy) enableError(n need, dir string, err error) error {
	if errnoOf(err) == unix.EBUSY {
		// The no-internal-processes rule: someone else lives in dir.
		pids, _ := cgroups.GetPids(dir)
		return &UnavailableError{
			Controller: n.controller,
			Limit:      n.limit,
			Slot:       n.slot,
			Cause: fmt.Sprintf("cannot enable the cgroup %s controller in %s: other processes share goinit's cgroup (pids %s)",
				n.controller, dir, joinInts(pids)),
			Fix: "run goinit as the container's first process, alone in its cgroup",
			Err: err,
		}
	}
	if isPermissionLike(err) {
		return n.notWritable(dir, err)
	}
	return &UnavailableError{
		Controller: n.controller,
		Limit:      n.limit,
		Slot:       n.slot,
		Cause:      fmt.Sprintf("cannot enable the cgroup %s controller in %s: %s", n.controller, dir, errnoText(err)),
		Fix:        "check that the controller is delegated and the cgroup is not threaded",
		Err:        err,
	}
}

// undoOpenV2 reverses openV2 in reverse order: controllers off (children
// first, the kernel refuses otherwise), goinit back home, directories gone.
func (h *Hierarchy) undoOpenV2() error {
	var errs []error
	for _, c := range slices.Backward(h.controllers) {
		// Best effort: the directory is removed right after anyway.
		_ = cgroups.WriteFile(h.base, "cgroup.subtree_control", "-"+c)
	}
	for _, c := range slices.Backward(h.enabledOwn) {
		if err := writeFile(h.own, "cgroup.subtree_control", "-"+c); err != nil {
			errs = append(errs, err)
		}
	}
	h.enabledOwn = nil
	if h.leaf != "" {
		if err := cgroups.WriteCgroupProc(h.own, os.Getpid()); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("move goinit (pid %d) back to %s: %w", os.Getpid(), h.own, err))
		}
		// Besides goinit, the leaf holds every child goinit started
		// without placing it in a slot (hooks, helpers): without us they
		// would have been in own, so they go back there too. goinit
		// moved first, so its new children no longer land in the leaf;
		// a few rounds catch children of those children.
		for range 10 {
			pids, _ := cgroups.GetPids(h.leaf)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = cgroups.WriteCgroupProc(h.own, pid) // ESRCH: exited meanwhile
			}
		}
		if err := removeDir(h.leaf); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range slices.Backward(h.createdBases) {
		if err := removeDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	h.createdBases = nil
	return errors.Join(errs...)
}

// newSlotV2 creates the slot's cgroup, writes the limits l with the fs2
// driver and opens the directory for clone3 placement.
func (h *Hierarchy) newSlotV2(id int, name string, l Limits) (*Slot, error) {
	dir := filepath.Join(h.base, name)
	s := newSlotDirs(h, id, name, l, map[string]string{"": dir})
	if _, err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("create cgroup for %s: %w", s.label(), err)
	}
	res := h.resources(l)
	mgr, err := fs2.NewManager(&cgroups.Cgroup{Resources: res}, dir)
	if err == nil {
		err = mgr.Set(res)
	}
	if err != nil {
		_ = s.removeDirs()
		return nil, fmt.Errorf("set limits (%s) on %s cgroup %s: %w", l, s.label(), dir, err)
	}
	// O_RDONLY|O_DIRECTORY rather than O_PATH: clone3's cgroup fd must
	// be a real open of the directory on older kernels.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = s.removeDirs()
		return nil, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	s.dirFD = os.NewFile(uintptr(fd), dir)
	return s, nil
}

// readFields reads a space-separated cgroup file such as cgroup.controllers.
func readFields(dir, file string) ([]string, error) {
	data, err := cgroups.ReadFile(dir, file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(data), nil
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, " ")
}

func joinInts(list []int) string {
	if len(list) == 0 {
		return "unknown"
	}
	s := make([]string, len(list))
	for i, v := range list {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}
