package cgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// Defaults for Options.
const (
	// DefaultRoot is where the cgroup filesystem is mounted.
	DefaultRoot = "/sys/fs/cgroup"
	// DefaultPrefix is the directory goinit creates under its own cgroup
	// (with "-<pid>" appended unless goinit is PID 1).
	DefaultPrefix = "goinit"
	// SupervisorDir is the v2 leaf, under the prefix directory, that goinit
	// moves itself into (see the package doc).
	SupervisorDir = "supervisor"
)

// Options configure Open. The zero value is usable: default root and
// prefix, no limits, no logging.
type Options struct {
	// Root is the cgroup filesystem mount: the cgroup2 mount itself on v2,
	// the tmpfs holding the v1 controller mounts on v1. Default DefaultRoot.
	Root string

	// Prefix is the directory created under goinit's own cgroup (in each
	// v1 hierarchy used) to hold the slots. It must be a single path
	// element. Two Hierarchies alive at the same time in the same cgroup
	// need different prefixes. Default: DefaultPrefix when goinit is PID 1
	// (alone in its container), else DefaultPrefix-<pid>, so that several
	// goinits sharing a cgroup (e.g. tests on one host) never share, and
	// kill, each other's slots.
	Prefix string

	// Limits are applied to every worker slot (Hierarchy.Slot). Zero
	// fields are not limited; with no limits at all, slots still track
	// usage and can be killed as a whole.
	Limits Limits

	// Named declares the slots that are not worker slots, by name, each
	// with its own limits: goinit's agent is {"agent": agentLimits}.
	// Hierarchy.NamedSlot creates them. Open validates every name (see
	// NamedSlot) and limit and checks and enables the controllers they
	// need together with those of Limits, so a Hierarchy whose workers
	// have no limits still enforces a named slot's, and a limit that
	// cannot be applied fails Open, before anything has started, rather
	// than the first start of the agent. Default: none.
	Named map[string]Limits

	// Logger receives debug messages about controllers that are skipped
	// or cleaned up. Default: discard.
	Logger *slog.Logger
}

// controller names as the kernel spells them.
const (
	ctrlMemory  = "memory"
	ctrlCPU     = "cpu"
	ctrlCPUAcct = "cpuacct"
	ctrlPids    = "pids"
)

// need is one controller a Hierarchy uses, the limit that requires it
// ("" when it is only used for accounting) and the named slot that limit
// belongs to ("" for the worker slots).
type need struct {
	controller string
	limit      string
	slot       string
}

// slotLimits are the limits of the worker slots (name "") or of one named
// slot.
type slotLimits struct {
	name   string
	limits Limits
}

// limitSets lists the worker slots' limits, then the named slots' in name
// order, so that errors about them come in a stable order.
func (h *Hierarchy) limitSets() []slotLimits {
	sets := []slotLimits{{"", h.limits}}
	for _, name := range slices.Sorted(maps.Keys(h.named)) {
		sets = append(sets, slotLimits{name, h.named[name]})
	}
	return sets
}

// needs lists the controllers that the limit sets need, required ones
// first, each controller once (for the first set that needs it). On v1,
// cpuacct is the only source of CPU time; on v2, cpu.stat exists without
// the cpu controller.
func needs(sets []slotLimits, version int) (required, optional []need) {
	add := func(n need) {
		if !slices.ContainsFunc(required, func(r need) bool { return r.controller == n.controller }) {
			required = append(required, n)
		}
	}
	for _, set := range sets {
		l := set.limits
		if l.Memory != 0 {
			add(need{ctrlMemory, "memory", set.name})
		} else if l.MemoryHigh != 0 {
			add(need{ctrlMemory, "memory-high", set.name})
		}
		if l.CPU != 0 {
			add(need{ctrlCPU, "cpu", set.name})
		}
		if l.Pids != 0 {
			add(need{ctrlPids, "pids", set.name})
		}
	}
	accounting := []string{ctrlMemory, ctrlPids}
	if version == 1 {
		accounting = append(accounting, ctrlCPUAcct)
	}
	for _, c := range accounting {
		if !slices.ContainsFunc(required, func(n need) bool { return n.controller == c }) {
			optional = append(optional, need{controller: c})
		}
	}
	return required, optional
}

// Hierarchy is goinit's own cgroup, in which it creates one child cgroup per
// worker slot and one per named slot. Its methods are safe for concurrent
// use.
type Hierarchy struct {
	root    string
	prefix  string
	limits  Limits
	named   map[string]Limits // Options.Named, copied
	log     *slog.Logger
	version int

	// v1: controller -> <own>/<prefix> in that controller's hierarchy.
	// Co-mounted controllers (cpu,cpuacct) share a directory.
	v1Bases map[string]string
	// v1: memory.memsw.* exists (swap accounting is on).
	memsw bool

	// v2: own is goinit's cgroup at Open, base is own/prefix, leaf is
	// base/supervisor. controllers are enabled in base/cgroup.subtree_control;
	// enabledOwn are the ones this package enabled in own's (and must
	// disable again).
	own, base, leaf string
	controllers     []string
	enabledOwn      []string

	// createdBases are the prefix directories Open made, removed by Close.
	createdBases []string

	mu sync.Mutex
	// slots are the live slots by directory name ("worker-3", "agent"),
	// which Open keeps distinct.
	slots  map[string]*Slot
	closed bool
}

// Open finds goinit's own cgroup, checks that every controller the
// requested limits (of the worker slots and of the named slots) need is
// present and writable, and creates the prefix directory that will hold the
// slots. On cgroup v2 it also moves goinit into the supervisor leaf and
// enables the controllers (see the package doc).
//
// When a limit cannot be applied here (read-only cgroupfs, controller not
// mounted or not delegated, no permission, memory-high on v1) the error
// matches ErrUnavailable and is an *UnavailableError with a one-line
// message naming cause and fix; its Slot names the named slot whose limit
// it is, if it is one. Nothing is left behind on error.
func Open(opts Options) (*Hierarchy, error) {
	h := &Hierarchy{
		root:   opts.Root,
		prefix: opts.Prefix,
		limits: opts.Limits,
		named:  maps.Clone(opts.Named),
		log:    opts.Logger,
		slots:  make(map[string]*Slot),
	}
	if h.root == "" {
		h.root = DefaultRoot
	}
	h.root = filepath.Clean(h.root)
	if h.prefix == "" {
		h.prefix = DefaultPrefix
		if pid := os.Getpid(); pid != 1 {
			h.prefix += "-" + strconv.Itoa(pid)
		}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if !filepath.IsAbs(h.root) {
		return nil, fmt.Errorf("cgroup root %q must be an absolute path", h.root)
	}
	if h.prefix != filepath.Base(h.prefix) || h.prefix == "." || h.prefix == ".." || h.prefix == SupervisorDir {
		return nil, fmt.Errorf("cgroup prefix %q must be a single directory name", h.prefix)
	}
	if err := h.limits.Validate(); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(h.named)) {
		if err := validName(name); err != nil {
			return nil, err
		}
		if err := h.named[name].Validate(); err != nil {
			return nil, fmt.Errorf("cgroup slot %q: %w", name, err)
		}
	}
	pi, err := readProcInfo()
	if err != nil {
		return nil, err
	}
	if err := h.open(pi); err != nil {
		return nil, err
	}
	return h, nil
}

// open is Open after the options are settled, split out so the error paths
// can share one cleanup.
func (h *Hierarchy) open(pi procInfo) (err error) {
	defer func() {
		if err != nil {
			h.undoOpen()
		}
	}()
	if _, ok := pi.v2Mount(h.root); ok {
		h.version = 2
		return h.openV2(pi)
	}
	for _, m := range pi.mounts {
		if !m.V2 && under(m.Dir, h.root) {
			h.version = 1
			return h.openV1(pi)
		}
	}
	return &UnavailableError{
		Cause: fmt.Sprintf("no cgroup filesystem is mounted at %s", h.root),
		Fix:   "mount cgroup2 (or the cgroup v1 controllers) there",
		Err:   os.ErrNotExist,
	}
}

// Version returns the cgroup version in use: 1 or 2.
func (h *Hierarchy) Version() int { return h.version }

// Limits returns the limits every worker slot gets (Options.Limits). A
// named slot's are its Slot.Limits.
func (h *Hierarchy) Limits() Limits { return h.limits }

// resources translates limits l for the opencontainers/cgroups drivers.
func (h *Hierarchy) resources(l Limits) *cgroups.Resources {
	// SkipDevices: goinit does not restrict devices, and without it the
	// v1 driver insists on the devices controller.
	r := &cgroups.Resources{SkipDevices: true}
	if l.Memory != 0 {
		r.Memory = l.Memory
		// Memory+swap equal to memory means no swap: the limit is a real
		// limit, not a slow path into swap.
		if h.version == 2 || h.memsw {
			r.MemorySwap = l.Memory
		}
	}
	if l.CPU != 0 {
		r.CpuQuota = l.cpuQuota()
		r.CpuPeriod = CPUPeriod
	}
	if l.Pids != 0 {
		p := l.Pids
		r.PidsLimit = &p
	}
	if l.MemoryHigh != 0 && h.version == 2 {
		r.Unified = map[string]string{"memory.high": strconv.FormatInt(l.MemoryHigh, 10)}
	}
	return r
}

// Slot returns the cgroup for worker slot id, creating it with the limits
// applied if needed. It is idempotent: calling it again for the same id
// (e.g. on every restart of that worker) returns the same *Slot until the
// slot is removed. A directory left over from an earlier run is reused and
// its limits rewritten.
func (h *Hierarchy) Slot(id int) (*Slot, error) {
	if id < 0 {
		return nil, fmt.Errorf("cgroup slot id %d must not be negative", id)
	}
	return h.slot(id, slotName(id), h.limits)
}

// NamedSlot returns the slot declared in Options.Named under name, with
// the limits declared there, creating its cgroup <own>/<Prefix>/<name> if
// needed. Apart from its name and limits it is a slot like a worker's: FD
// or Add to place a process, OOMKills, LimitOOMs, Usage, Kill, Remove, and
// Close removes it. Like Slot it is idempotent until the slot is removed.
//
// A name is a letter followed by up to 63 letters, digits, '-' and '_',
// and neither "supervisor" nor a worker slot's "worker-<id>"; Open rejects
// any other, so names never collide with each other's directories, with
// the worker slots' or with the kernel's control files (which all contain
// a dot). A name not declared in Options.Named is an error.
func (h *Hierarchy) NamedSlot(name string) (*Slot, error) {
	l, ok := h.named[name] // read-only after Open
	if !ok {
		return nil, fmt.Errorf("cgroup slot %q was not declared: add it to Options.Named (declared: %s)",
			name, orNone(slices.Sorted(maps.Keys(h.named))))
	}
	return h.slot(-1, name, l)
}

// slot returns the live slot in directory name, or creates it with limits
// l: a worker slot (id >= 0) or a named slot (id -1).
func (h *Hierarchy) slot(id int, name string, l Limits) (*Slot, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("cgroup hierarchy is closed")
	}
	if s, ok := h.slots[name]; ok {
		return s, nil
	}
	var s *Slot
	var err error
	if h.version == 2 {
		s, err = h.newSlotV2(id, name, l)
	} else {
		s, err = h.newSlotV1(id, name, l)
	}
	if err != nil {
		return nil, err
	}
	h.slots[name] = s
	return s, nil
}

// slotName is the directory name of worker slot id.
func slotName(id int) string { return "worker-" + strconv.Itoa(id) }

// validName checks a named slot's name (see NamedSlot): a letter, then up
// to 63 letters, digits, '-' or '_', and not one of goinit's own names. It
// is checked by hand rather than with a package-level regexp, which would
// cost PID 1's every start half a millisecond of compiling.
func validName(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && isLetter(name[0])
	for i := 1; ok && i < len(name); i++ {
		c := name[i]
		ok = isLetter(c) || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return fmt.Errorf("invalid cgroup slot name %q: use a letter followed by up to 63 letters, digits, '-' or '_', e.g. \"agent\"", name)
	}
	if rest, found := strings.CutPrefix(name, "worker-"); name == SupervisorDir || found && rest != "" && strings.Trim(rest, "0123456789") == "" {
		return fmt.Errorf("invalid cgroup slot name %q: %q is taken by goinit's own cgroups; choose another, e.g. \"agent\"", name, name)
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Close kills every process still in a slot, removes every cgroup this
// Hierarchy created and, on v2, moves goinit back to its original cgroup
// and disables the controllers Open enabled. It is safe to call more than
// once; later calls do nothing.
func (h *Hierarchy) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	slots := slices.Collect(maps.Values(h.slots))
	h.mu.Unlock()

	var errs []error
	for _, s := range slots {
		if err := s.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := h.undoOpen(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// undoOpen reverses what open did, for Close and for a failed Open.
func (h *Hierarchy) undoOpen() error {
	if h.version == 2 {
		return h.undoOpenV2()
	}
	var errs []error
	// Remove in reverse creation order; RemovePath also removes stale
	// slot directories left by an earlier run, as the prefix is ours.
	for _, dir := range slices.Backward(h.createdBases) {
		if err := removeDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	h.createdBases = nil
	return errors.Join(errs...)
}

// removeDir removes a cgroup directory and the cgroups below it, retrying
// briefly while exiting processes leave.
func removeDir(dir string) error {
	if err := cgroups.RemovePath(dir); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// makeDir creates a cgroup directory, accepting one that already exists,
// and reports whether it created it.
func makeDir(dir string) (created bool, err error) {
	err = os.Mkdir(dir, 0o755)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrExist) {
		// mkdir reports EEXIST before EROFS, so an existing directory
		// says nothing about whether we can write: ask.
		if err := unix.Access(filepath.Join(dir, "cgroup.procs"), unix.W_OK); err != nil {
			return false, &os.PathError{Op: "access", Path: dir, Err: err}
		}
		return false, nil
	}
	return false, err
}

// writeFile writes one value to a cgroup control file.
func writeFile(dir, file, data string) error {
	if err := cgroups.WriteFile(dir, file, data); err != nil {
		return fmt.Errorf("write %s to %s: %w", strings.TrimSpace(data), filepath.Join(dir, file), err)
	}
	return nil
}
