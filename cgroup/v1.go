package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
)

// openV1 prepares <own>/<prefix> in the hierarchy of every controller used.
// goinit itself stays where it is: v1 allows processes in inner cgroups.
func (h *Hierarchy) openV1(pi procInfo) error {
	sets := h.limitSets()
	for _, set := range sets {
		if set.limits.MemoryHigh != 0 {
			return &UnavailableError{
				Controller: ctrlMemory,
				Limit:      "memory-high",
				Slot:       set.name,
				Cause:      fmt.Sprintf("the memory-high limit needs cgroup v2, but %s is cgroup v1", h.root),
				Fix:        "use the memory limit instead or run on a cgroup v2 host",
				Err:        errNoMemoryHighOnV1,
			}
		}
	}
	required, optional := needs(sets, 1)
	h.v1Bases = make(map[string]string)
	var firstSkipped error
	for i, n := range append(required, optional...) {
		isRequired := i < len(required)
		base, err := h.prepareV1(pi, n)
		if err != nil {
			if isRequired {
				return err
			}
			if firstSkipped == nil {
				firstSkipped = err
			}
			// Accounting only: usage for this controller reads as zero.
			h.log.Debug("cgroup controller skipped; its usage is not tracked",
				"controller", n.controller, "err", err)
			continue
		}
		h.v1Bases[n.controller] = base
	}
	if len(h.v1Bases) == 0 {
		// Nothing to track usage with either; the first reason is as
		// good as any (they usually share one cause).
		return firstSkipped
	}
	if base, ok := h.v1Bases[ctrlMemory]; ok {
		// Without swap accounting (swapaccount=0) there is no memsw file;
		// the memory limit alone still holds, only swap is not capped.
		h.memsw = cgroups.PathExists(filepath.Join(base, "memory.memsw.limit_in_bytes"))
		if !h.memsw && slices.ContainsFunc(sets, func(s slotLimits) bool { return s.limits.Memory != 0 }) {
			h.log.Debug("cgroup v1 swap accounting is off; the memory limit does not cap swap", "dir", base)
		}
	}
	return nil
}

// prepareV1 creates (or reuses) <own>/<prefix> in the hierarchy of n's
// controller and returns it.
func (h *Hierarchy) prepareV1(pi procInfo, n need) (string, error) {
	m, ok := pi.v1Mount(h.root, n.controller)
	if !ok {
		return "", &UnavailableError{
			Controller: n.controller,
			Limit:      n.limit,
			Slot:       n.slot,
			Cause:      fmt.Sprintf("cgroup %s controller is not mounted under %s", n.controller, h.root),
			Fix:        "mount it (or enable it in the kernel)",
			Err:        os.ErrNotExist,
		}
	}
	own, err := pi.ownDir(m, n.controller)
	if err != nil {
		return "", &UnavailableError{
			Controller: n.controller,
			Limit:      n.limit,
			Slot:       n.slot,
			Cause:      fmt.Sprintf("cannot find goinit's cgroup for the %s controller: %v", n.controller, err),
			Fix:        "mount the cgroup filesystem with a cgroup namespace or the container's own subtree",
			Err:        err,
		}
	}
	base := filepath.Join(own, h.prefix)
	for _, b := range h.v1Bases {
		if b == base { // co-mounted with a controller already prepared
			return base, nil
		}
	}
	created, err := makeDir(base)
	if err != nil {
		if isPermissionLike(err) {
			return "", n.notWritable(base, err)
		}
		return "", &UnavailableError{
			Controller: n.controller,
			Limit:      n.limit,
			Slot:       n.slot,
			Cause:      fmt.Sprintf("cannot create cgroup %s: %s", base, errnoText(err)),
			Fix:        "check that the cgroup filesystem is mounted and delegated",
			Err:        err,
		}
	}
	if created {
		h.createdBases = append(h.createdBases, base)
	}
	return base, nil
}

// newSlotV1 creates the slot's directory in every hierarchy used and writes
// the limits l. Only the controllers listed in paths are touched: passing
// the paths explicitly keeps the fs driver from creating directories in the
// name=systemd and hybrid cgroup2 hierarchies too.
func (h *Hierarchy) newSlotV1(id int, name string, l Limits) (*Slot, error) {
	paths := make(map[string]string, len(h.v1Bases))
	for c, base := range h.v1Bases {
		paths[c] = filepath.Join(base, name)
	}
	s := newSlotDirs(h, id, name, l, paths)
	res := h.resources(l)
	mgr, err := fs.NewManager(&cgroups.Cgroup{Resources: res}, paths)
	if err != nil {
		return nil, fmt.Errorf("create cgroup for %s: %w", s.label(), err)
	}
	if err := mgr.Apply(-1); err != nil {
		_ = s.removeDirs()
		return nil, fmt.Errorf("create cgroup for %s: %w", s.label(), err)
	}
	if err := setV1(paths, res); err != nil {
		_ = s.removeDirs()
		return nil, fmt.Errorf("set limits (%s) on %s cgroup %s: %w", l, s.label(), s.Path(), err)
	}
	return s, nil
}

// setV1 writes the limits with the fs driver's controllers. fs.Manager.Set
// is not used: it runs every controller's Set through package-level
// controller values, and the blkio one caches state in them without a lock,
// a data race between two Hierarchies in one process. Fresh values of the
// three controllers goinit limits have no shared state.
func setV1(paths map[string]string, res *cgroups.Resources) error {
	if dir, ok := paths[ctrlMemory]; ok && res.Memory != 0 {
		if err := (&fs.MemoryGroup{}).Set(dir, res); err != nil {
			return err
		}
	}
	if dir, ok := paths[ctrlCPU]; ok && res.CpuQuota != 0 {
		if err := (&fs.CpuGroup{}).Set(dir, res); err != nil {
			return err
		}
	}
	if dir, ok := paths[ctrlPids]; ok && res.PidsLimit != nil {
		if err := (&fs.PidsGroup{}).Set(dir, res); err != nil {
			return err
		}
	}
	return nil
}
