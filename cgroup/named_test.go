package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestNamedSlotBadOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		named   map[string]Limits
		wantErr string
	}{
		{map[string]Limits{"": {}}, `invalid cgroup slot name "": use a letter followed by`},
		{map[string]Limits{"a/b": {}}, `invalid cgroup slot name "a/b": use a letter`},
		{map[string]Limits{"..": {}}, `invalid cgroup slot name "..": use a letter`},
		{map[string]Limits{"memory.max": {}}, `invalid cgroup slot name "memory.max": use a letter`},
		{map[string]Limits{"1agent": {}}, `invalid cgroup slot name "1agent": use a letter`},
		{map[string]Limits{strings.Repeat("a", 65): {}}, `use a letter followed by up to 63`},
		{map[string]Limits{"worker-0": {}}, `invalid cgroup slot name "worker-0": "worker-0" is taken by goinit's own cgroups`},
		{map[string]Limits{SupervisorDir: {}}, `"supervisor" is taken`},
		{map[string]Limits{"agent": {CPU: 0.001}}, `cgroup slot "agent": cpu limit 0.001 is below the kernel minimum`},
		{map[string]Limits{"agent": {Memory: 1 << 20, MemoryHigh: 2 << 20}}, `cgroup slot "agent": memory-high 2MiB is above the memory limit 1MiB`},
	}
	for _, tc := range cases {
		// Validation comes before any cgroupfs access: no root needed.
		h, err := Open(Options{Root: "/nonexistent", Named: tc.named})
		if err == nil {
			h.Close()
			t.Errorf("Open(named %v) succeeded", tc.named)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(named %v) = %v, want one line containing %q", tc.named, err, tc.wantErr)
		}
	}
}

// TestNeedsNamed checks which controllers Open insists on when limits come
// from named slots, and which slot an unavailable one is blamed on.
func TestNeedsNamed(t *testing.T) {
	t.Parallel()
	h := &Hierarchy{
		limits: Limits{CPU: 1},
		named:  map[string]Limits{"b": {Memory: 1 << 20, CPU: 1}, "a": {Pids: 8, MemoryHigh: 1 << 20}},
	}
	required, optional := needs(h.limitSets(), 2)
	want := []need{{ctrlCPU, "cpu", ""}, {ctrlMemory, "memory-high", "a"}, {ctrlPids, "pids", "a"}}
	if !slices.Equal(required, want) || len(optional) != 0 {
		t.Errorf("needs = %v, %v; want %v and nothing optional", required, optional, want)
	}

	// Workers without limits: the named slot's limits still make their
	// controllers required, not optional accounting.
	h = &Hierarchy{named: map[string]Limits{"agent": {Memory: 32 << 20}}}
	required, optional = needs(h.limitSets(), 1)
	if !slices.Equal(required, []need{{ctrlMemory, "memory", "agent"}}) ||
		!slices.Equal(optional, []need{{controller: ctrlPids}, {controller: ctrlCPUAcct}}) {
		t.Errorf("needs with only a named limit = %v, %v", required, optional)
	}
}

// slotLimitFiles reads the memory, cpu and pids limits of s back from the
// kernel's files, as "max" when unlimited and "-" when the controller is
// not used for the slot (v1: no cgroup in its hierarchy; v2: no file, as
// the controller is not enabled).
func slotLimitFiles(t *testing.T, s *Slot) (memory, cpu, pids string) {
	t.Helper()
	read := func(dir, file string) string {
		t.Helper()
		if dir == "" {
			return "-"
		}
		b, err := os.ReadFile(filepath.Join(dir, file))
		if errors.Is(err, os.ErrNotExist) {
			return "-"
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if s.h.Version() == 2 {
		memory, cpu, pids = read(s.Path(), "memory.max"), read(s.Path(), "cpu.max"), read(s.Path(), "pids.max")
		cpu = strings.TrimSuffix(cpu, " "+strconv.Itoa(CPUPeriod))
		return memory, cpu, pids
	}
	memory = read(s.paths[ctrlMemory], "memory.limit_in_bytes")
	if n, err := strconv.ParseInt(memory, 10, 64); err == nil && n >= 1<<62 {
		memory = "max" // v1's "unlimited" is the largest page-aligned int64
	}
	cpu = read(s.paths[ctrlCPU], "cpu.cfs_quota_us")
	if cpu == "-1" {
		cpu = "max"
	}
	return memory, cpu, read(s.paths[ctrlPids], "pids.max")
}

// TestNamedSlot runs an agent-like named slot with its own small memory
// limit beside a worker slot with a larger one: the named slot's limits
// reach the kernel's files and its own, an allocation that the worker
// survives is OOM-killed in the named slot and counted there only, and
// Remove and Close clean up.
func TestNamedSlot(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	workerLimits := Limits{Memory: 128 << 20}
	agentLimits := Limits{Memory: 32 << 20, CPU: 0.5, Pids: 32}
	h := openTestOpts(t, Options{Limits: workerLimits, Named: map[string]Limits{"agent": agentLimits}})

	agent, err := h.NamedSlot("agent")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.NamedSlot("agent"); err != nil || again != agent {
		t.Errorf("second NamedSlot(agent) = %p, %v; want the same slot %p", again, err, agent)
	}
	worker, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	if agent.Name() != "agent" || agent.ID() != -1 || agent.Limits() != agentLimits ||
		filepath.Base(agent.Path()) != "agent" || filepath.Dir(agent.Path()) != filepath.Dir(worker.Path()) {
		t.Errorf("named slot: name %q, id %d, limits %v, path %s (worker's %s)",
			agent.Name(), agent.ID(), agent.Limits(), agent.Path(), worker.Path())
	}
	if worker.Name() != "worker-0" || worker.Limits() != workerLimits || h.Limits() != workerLimits {
		t.Errorf("worker slot: name %q, limits %v, hierarchy's %v", worker.Name(), worker.Limits(), h.Limits())
	}
	if got, want := agent.String(), "slot agent ("+agent.Path()+")"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if _, v2 := agent.FD(); v2 != (h.Version() == 2) {
		t.Errorf("FD() ok = %v on cgroup v%d", v2, h.Version())
	}
	if m, c, p := slotLimitFiles(t, agent); m != "33554432" || c != "50000" || p != "32" {
		t.Errorf("named slot's limit files: memory %s, cpu quota %s, pids %s; want 33554432, 50000, 32", m, c, p)
	}
	if m, c, p := slotLimitFiles(t, worker); m != "134217728" || c != "max" || p != "max" {
		t.Errorf("worker slot's limit files: memory %s, cpu quota %s, pids %s; want 134217728, max, max", m, c, p)
	}
	if _, err := h.NamedSlot("other"); err == nil ||
		err.Error() != `cgroup slot "other" was not declared: add it to Options.Named (declared: agent)` {
		t.Errorf("NamedSlot(undeclared) = %v", err)
	}

	// 64Mi: over the named slot's 32Mi, under the worker slot's 128Mi.
	p := startHelper(t, agent, "alloc-child", helperBytesEnv+"=64Mi")
	if st := p.wait(t); !st.Success() || !strings.Contains(p.output(), "child: signal: killed") {
		t.Errorf("named slot's process: %v, output %q; want exit 0 reporting its child killed", st, p.output())
	}
	if n, err := agent.OOMKills(); err != nil || n != 1 {
		t.Errorf("named slot OOMKills = %d, %v; want 1", n, err)
	}
	n, ok, err := agent.LimitOOMs()
	if err != nil || ok != (h.Version() == 2) || (ok && n < 1) {
		t.Errorf("named slot LimitOOMs = %d, %v, %v; want at least 1 on v2, not ok on v1", n, ok, err)
	}
	if u, err := agent.Usage(); err != nil {
		t.Error(err)
	} else if u.MemoryPeakBytes > 33<<20 {
		t.Errorf("named slot's peak memory %d bytes, above its 32MiB limit", u.MemoryPeakBytes)
	}

	w := startHelper(t, worker, "alloc", helperBytesEnv+"=64Mi")
	if st := w.wait(t); !st.Success() || !strings.Contains(w.output(), "survived 67108864") {
		t.Errorf("worker slot allocating 64Mi under 128Mi: %v, output %q", st, w.output())
	}
	if n, err := worker.OOMKills(); err != nil || n != 0 {
		t.Errorf("worker slot OOMKills = %d, %v; want 0", n, err)
	}
	if n, err := agent.OOMKills(); err != nil || n != 1 {
		t.Errorf("named slot OOMKills after the worker ran = %d, %v; want still 1", n, err)
	}

	// Kill and Remove, as for a worker: a live process is killed and the
	// directories go; the next NamedSlot is a fresh slot.
	spin := startHelper(t, agent, "spin")
	if err := agent.Kill(); err != nil {
		t.Fatal(err)
	}
	if st := spin.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("after Kill: %v, want SIGKILL", st)
	}
	if err := agent.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range agent.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("named slot dir %s after Remove: %v", dir, err)
		}
	}
	fresh, err := h.NamedSlot("agent")
	if err != nil || fresh == agent {
		t.Fatalf("NamedSlot(agent) after Remove = %p, %v", fresh, err)
	}
	if n, err := fresh.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOMKills of the fresh named slot = %d, %v; want 0", n, err)
	}
	// A process left in it is killed by Close (openTest's cleanup, which
	// also checks that no directory is left).
	startHelper(t, fresh, "spin")
}

// TestNamedSlotOnlyLimits opens a Hierarchy whose workers have no limits
// and whose one named slot has a memory limit: Open must enable the memory
// controller for it, and the limit must hold.
func TestNamedSlotOnlyLimits(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	h := openTestOpts(t, Options{Named: map[string]Limits{"agent": {Memory: 32 << 20}}})
	agent, err := h.NamedSlot("agent")
	if err != nil {
		t.Fatal(err)
	}
	worker, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	if m, _, _ := slotLimitFiles(t, agent); m != "33554432" {
		t.Errorf("named slot's memory limit file = %s, want 33554432", m)
	}
	if m, c, _ := slotLimitFiles(t, worker); m != "max" || c != "-" {
		t.Errorf("worker slot's memory limit file = %s, cpu quota %s; want max (no limit) and no cpu controller", m, c)
	}
	p := startHelper(t, agent, "alloc", helperBytesEnv+"=64Mi")
	if st := p.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("named slot allocating 64Mi under 32Mi: %v, want SIGKILL; output %q", st, p.output())
	}
	if n, err := agent.OOMKills(); err != nil || n != 1 {
		t.Errorf("named slot OOMKills = %d, %v; want 1", n, err)
	}
}
