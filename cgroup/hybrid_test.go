package cgroup

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hybridUnified is where hybrid hosts mount cgroup2 without controllers.
const hybridUnified = "/sys/fs/cgroup/unified"

// TestV2OnHybridUnified exercises the cgroup v2 code paths on a hybrid host
// by pointing Root at its controller-less cgroup2 mount: supervisor leaf,
// clone3 placement, cgroup.kill, cpu.stat, moving back on Close, and the
// "not delegated" error. Real v2 limits are tested on a v2 host.
func TestV2OnHybridUnified(t *testing.T) {
	requireCgroups(t)
	var st unix.Statfs_t
	if hostVersion() != 1 || unix.Statfs(hybridUnified, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skip("not a hybrid host; v2 is covered by the other tests there")
	}
	// Not parallel with itself (it moves the test process), but the v1
	// tests do not care where the process is in the v2 tree.
	t.Parallel()
	prefix := testPrefix(t)
	selfBefore, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(Options{Root: hybridUnified, Prefix: prefix, Limits: Limits{Memory: 64 << 20}})
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Controller != "memory" ||
		!strings.Contains(err.Error(), "cgroup memory controller is not delegated to "+hybridUnified) ||
		!strings.Contains(err.Error(), "run without the memory limit") {
		t.Errorf("Open(memory limit) on a controller-less cgroup2 = %v", err)
	}
	if left := findDirs(hybridUnified, prefix); len(left) > 0 {
		t.Errorf("failed Open left %v", left)
	}
	// Workers without limits do not excuse a named slot's limit.
	_, err = Open(Options{Root: hybridUnified, Prefix: prefix, Named: map[string]Limits{"agent": {Pids: 10}}})
	if !errors.As(err, &ue) || ue.Controller != "pids" || ue.Slot != "agent" ||
		!strings.Contains(err.Error(), "cgroup pids controller is not delegated to "+hybridUnified) ||
		!strings.HasSuffix(err.Error(), "or run without the pids limit of slot agent") {
		t.Errorf("Open(agent pids limit) on a controller-less cgroup2 = %v", err)
	}
	if left := findDirs(hybridUnified, prefix); len(left) > 0 {
		t.Errorf("failed Open left %v", left)
	}

	h, err := Open(Options{Root: hybridUnified, Prefix: prefix, Named: map[string]Limits{"agent": {}}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := findDirs(hybridUnified, prefix); len(left) > 0 {
			t.Errorf("Close left %v", left)
		}
		selfAfter, _ := os.ReadFile("/proc/self/cgroup")
		if string(selfAfter) != string(selfBefore) {
			t.Errorf("/proc/self/cgroup after Close:\n%s\nbefore Open:\n%s", selfAfter, selfBefore)
		}
	}()
	if h.Version() != 2 {
		t.Fatalf("Version() = %d on cgroup2", h.Version())
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	if !strings.Contains(string(self), "0::/"+prefix+"/"+SupervisorDir+"\n") {
		t.Errorf("goinit not moved into the supervisor leaf: %s", self)
	}

	s, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.FD(); !ok {
		t.Fatal("no FD on cgroup v2")
	}
	p := startHelper(t, s, "spin") // placed with clone3 CLONE_INTO_CGROUP
	deadline := time.Now().Add(10 * time.Second)
	var u Usage
	for {
		if u, err = s.Usage(); err != nil {
			t.Fatal(err)
		}
		if u.CPUTime > 50*time.Millisecond || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if u.CPUTime <= 50*time.Millisecond || u.Pids != 1 {
		t.Errorf("Usage of a spinning slot = %+v, want CPU time and 1 process", u)
	}
	if n, err := s.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOMKills without the memory controller = %d, %v; want 0, nil", n, err)
	}
	if err := s.Kill(); err != nil { // cgroup.kill
		t.Fatal(err)
	}
	if st := p.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("after Kill: %v, want SIGKILL", st)
	}

	// A second slot and a named one with live processes, the named one
	// placed with clone3 too: Close must kill and remove them.
	s1, err := h.Slot(1)
	if err != nil {
		t.Fatal(err)
	}
	p1 := startHelper(t, s1, "spin")
	agent, err := h.NamedSlot("agent")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := agent.FD(); !ok {
		t.Fatal("no FD for a named slot on cgroup v2")
	}
	pa := startHelper(t, agent, "spin")
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st := p1.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("process in a slot after Close: %v, want SIGKILL", st)
	}
	if st := pa.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("process in a named slot after Close: %v, want SIGKILL", st)
	}
}
