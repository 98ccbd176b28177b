package cgroup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

func TestOpenBadOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		opts    Options
		wantErr string
	}{
		{Options{Prefix: "a/b"}, `cgroup prefix "a/b" must be a single directory name`},
		{Options{Prefix: ".."}, `must be a single directory name`},
		{Options{Prefix: SupervisorDir}, `must be a single directory name`},
		{Options{Root: "sys/fs/cgroup"}, `must be an absolute path`},
		{Options{Limits: Limits{CPU: 0.001}}, `below the kernel minimum`},
	}
	for _, tc := range cases {
		h, err := Open(tc.opts)
		if err == nil {
			h.Close()
			t.Errorf("Open(%+v) succeeded", tc.opts)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Open(%+v) = %v, want %q", tc.opts, err, tc.wantErr)
		}
	}

	// No cgroupfs at all is "unavailable", not a bug.
	_, err := Open(Options{Root: "/nonexistent", Limits: Limits{Memory: 1 << 30}})
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) ||
		err.Error() != "no cgroup filesystem is mounted at /nonexistent; mount cgroup2 (or the cgroup v1 controllers) there, or run without cgroup limits" {
		t.Errorf("Open(/nonexistent) = %v", err)
	}
}

// TestSlotLimitsWritten reads the kernel's files back after Slot.
func TestSlotLimitsWritten(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	l := Limits{Memory: 64 << 20, CPU: 0.5, Pids: 64}
	if hostVersion() == 2 {
		l.MemoryHigh = 48 << 20
	}
	h := openTest(t, l)
	s, err := h.Slot(3)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.Slot(3); err != nil || again != s {
		t.Errorf("second Slot(3) = %p, %v; want the same slot %p", again, err, s)
	}
	if filepath.Base(s.Path()) != "worker-3" || s.ID() != 3 || s.Limits() != l {
		t.Errorf("slot path %s, id %d, limits %v", s.Path(), s.ID(), s.Limits())
	}
	read := func(dir, file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Error(err)
		}
		return strings.TrimSpace(string(b))
	}
	want := map[string]string{}
	if h.Version() == 1 {
		want["memory/memory.limit_in_bytes"] = "67108864"
		if h.memsw {
			want["memory/memory.memsw.limit_in_bytes"] = "67108864"
		}
		want["cpu/cpu.cfs_quota_us"] = "50000"
		want["cpu/cpu.cfs_period_us"] = "100000"
		want["pids/pids.max"] = "64"
		for key, v := range want {
			c, file, _ := strings.Cut(key, "/")
			if got := read(s.paths[c], file); got != v {
				t.Errorf("%s/%s = %q, want %q", s.paths[c], file, got, v)
			}
		}
		if _, ok := s.FD(); ok {
			t.Error("FD() ok on cgroup v1")
		}
	} else {
		want = map[string]string{
			"memory.max": "67108864", "memory.high": "50331648",
			"cpu.max": "50000 100000", "pids.max": "64",
		}
		if _, err := os.Stat(filepath.Join(s.Path(), "memory.swap.max")); err == nil {
			want["memory.swap.max"] = "0"
		}
		for file, v := range want {
			if got := read(s.Path(), file); got != v {
				t.Errorf("%s/%s = %q, want %q", s.Path(), file, got, v)
			}
		}
		if fd, ok := s.FD(); !ok || fd < 0 {
			t.Errorf("FD() = %d, %v on cgroup v2", fd, ok)
		}
	}
	u, err := s.Usage()
	if err != nil || u.Pids != 0 {
		t.Errorf("Usage of an empty slot = %+v, %v", u, err)
	}

	// Remove, then the same id is a fresh slot.
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slot dir after Remove: %v", err)
	}
	if _, ok := s.FD(); ok {
		t.Error("FD() ok after Remove")
	}
	s2, err := h.Slot(3)
	if err != nil || s2 == s {
		t.Errorf("Slot(3) after Remove = %p, %v", s2, err)
	}
}

func TestMemoryHighNeedsV2(t *testing.T) {
	requireCgroups(t)
	if hostVersion() != 1 {
		t.Skip("cgroup v1 behaviour; v2 is covered by TestSlotLimitsWritten")
	}
	t.Parallel()
	_, err := Open(Options{Prefix: testPrefix(t), Limits: Limits{MemoryHigh: 1 << 30}})
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Limit != "memory-high" || ue.Slot != "" || !strings.Contains(err.Error(), "memory-high limit needs cgroup v2") {
		t.Errorf("Open(memory-high) on v1 = %v", err)
	}
	// A named slot's memory-high is refused the same way, naming the slot.
	_, err = Open(Options{Prefix: testPrefix(t), Named: map[string]Limits{"agent": {MemoryHigh: 1 << 30}}})
	if !errors.As(err, &ue) || ue.Limit != "memory-high" || ue.Slot != "agent" ||
		!strings.HasSuffix(err.Error(), "or run without the memory-high limit of slot agent") {
		t.Errorf("Open(agent memory-high) on v1 = %v", err)
	}
}

// TestOOM runs real allocations against a 64MiB limit.
func TestOOM(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	h := openTest(t, Limits{Memory: 64 << 20})

	t.Run("over the limit is killed", func(t *testing.T) {
		s, err := h.Slot(0)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.OOMKills(); err != nil || n != 0 {
			t.Fatalf("OOMKills of a new slot = %d, %v", n, err)
		}
		p := startHelper(t, s, "alloc", helperBytesEnv+"=200Mi")
		st := p.wait(t)
		if !killedBySignal(st, syscall.SIGKILL) {
			t.Errorf("helper allocating 200Mi under a 64Mi limit: %v, want SIGKILL; output %q", st, p.output())
		}
		if n, err := s.OOMKills(); err != nil || n != 1 {
			t.Errorf("OOMKills = %d, %v; want 1", n, err)
		}
		if u, err := s.Usage(); err != nil {
			t.Error(err)
		} else if u.MemoryPeakBytes != 0 && (u.MemoryPeakBytes > 65<<20 || u.MemoryPeakBytes < 32<<20) {
			// The kernel may overshoot by a few pages while reclaiming.
			t.Errorf("peak memory %d bytes, want close to the 64MiB limit", u.MemoryPeakBytes)
		}
	})

	t.Run("under the limit survives", func(t *testing.T) {
		s, err := h.Slot(1)
		if err != nil {
			t.Fatal(err)
		}
		p := startHelper(t, s, "alloc", helperBytesEnv+"=16Mi")
		if st := p.wait(t); !st.Success() || !strings.Contains(p.output(), "survived 16777216") {
			t.Errorf("helper allocating 16Mi: %v, output %q", st, p.output())
		}
		if n, err := s.OOMKills(); err != nil || n != 0 {
			t.Errorf("OOMKills = %d, %v; want 0", n, err)
		}
	})

	t.Run("child killed, parent survives", func(t *testing.T) {
		s, err := h.Slot(2)
		if err != nil {
			t.Fatal(err)
		}
		p := startHelper(t, s, "alloc-child", helperBytesEnv+"=200Mi")
		st := p.wait(t)
		if !st.Success() || !strings.Contains(p.output(), "child: signal: killed") {
			t.Errorf("placed process: %v, output %q; want exit 0 reporting its child killed", st, p.output())
		}
		if n, err := s.OOMKills(); err != nil || n != 1 {
			t.Errorf("OOMKills = %d, %v; want 1 although the placed process exited 0", n, err)
		}
	})
}

// TestCPULimit checks that 0.2 CPUs is about 20% of one CPU, measured by
// the slot's own accounting over a fixed window.
func TestCPULimit(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	h := openTest(t, Limits{CPU: 0.2})
	s, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, s, "spin")
	u0, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	const window = 2500 * time.Millisecond
	select {
	case <-p.done:
		t.Fatalf("spinner exited: %v %q", p.state, p.output())
	case <-time.After(window): // the measurement itself
	}
	u1, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Since(t0)
	share := float64(u1.CPUTime-u0.CPUTime) / float64(wall)
	t.Logf("CPU used %v in %v wall: %.3f CPUs (limit 0.2)", u1.CPUTime-u0.CPUTime, wall, share)
	if share > 0.35 {
		t.Errorf("busy loop under a 0.2 CPU limit used %.3f CPUs, want at most 0.35", share)
	}
	if share < 0.1 {
		// Too little: either the limit is wrong, or the machine is so
		// busy (other packages' tests) that the loop never got its
		// quota. The kernel says which: a loop that reached the quota
		// was throttled in most periods.
		cpuDir := s.Path()
		if h.Version() == 1 {
			cpuDir = s.paths[ctrlCPU]
		}
		periods, err1 := fscommon.GetValueByKey(cpuDir, "cpu.stat", "nr_periods")
		throttled, err2 := fscommon.GetValueByKey(cpuDir, "cpu.stat", "nr_throttled")
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if periods > 0 && float64(throttled)/float64(periods) >= 0.5 {
			t.Errorf("busy loop under a 0.2 CPU limit used %.3f CPUs although throttled in %d of %d periods, want at least 0.1",
				share, throttled, periods)
		} else {
			t.Logf("machine too busy to check the lower bound: throttled in only %d of %d periods", throttled, periods)
		}
	}
	if u1.Pids != 1 {
		t.Errorf("Usage().Pids = %d, want 1", u1.Pids)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if st := p.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("after Kill: %v, want SIGKILL", st)
	}
}

// TestPidsLimit runs a shell that starts background jobs until fork fails.
func TestPidsLimit(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	// dash and busybox report a failed fork at once; bash retries for
	// about 15 s, so it is not used.
	var shell []string
	if p, err := exec.LookPath("dash"); err == nil {
		shell = []string{p}
	} else if p, err := exec.LookPath("busybox"); err == nil {
		shell = []string{p, "sh"}
	} else {
		t.Fatal("TestPidsLimit needs dash or busybox")
	}
	h := openTest(t, Limits{Pids: 8})
	s, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	// The sleeps must not hold the output pipes open, or Wait would wait
	// for them.
	script := `read x; i=0; while [ $i -lt 20 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); echo $i; done; echo done`
	p := startInSlot(t, s, exec.Command(shell[0], append(shell[1:], "-c", script)...))
	st := p.wait(t)
	out := strings.Fields(p.stdout.String())
	if st.Success() || slices.Contains(out, "done") || len(out) > 7 ||
		!regexp.MustCompile(`(?i)fork`).MatchString(p.stderr.String()) {
		t.Errorf("shell under pids=8: %v, started %d jobs, stderr %q; want a fork failure after at most 7 jobs",
			st, len(out), p.stderr.String())
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Tasks > 8 || u.Pids > 8 || u.Pids < 1 {
		t.Errorf("Usage = %+v, want 1..8 processes and tasks", u)
	}
	t.Logf("started %d jobs before fork failed; %d sleeps left in the slot", len(out), u.Pids)
	// The orphaned sleeps are killed by Remove (via Close).
}

// TestCloseLeavesNothing compares the cgroup tree before Open and after
// Close. Other tests (and other packages) create cgroups concurrently, so
// only differences that belong to this test's prefix count.
func TestCloseLeavesNothing(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	prefix := testPrefix(t)
	before := findDirs(DefaultRoot, "")
	h, err := Open(Options{
		Prefix: prefix,
		Limits: Limits{Memory: 64 << 20, CPU: 1, Pids: 100},
		Named:  map[string]Limits{"agent": {Memory: 32 << 20}},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			h.Close()
		}
	})
	var slots []*Slot
	for id := range 3 {
		s, err := h.Slot(id)
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, s)
	}
	p := startHelper(t, slots[1], "spin")
	agent, err := h.NamedSlot("agent")
	if err != nil {
		t.Fatal(err)
	}
	pa := startHelper(t, agent, "spin")

	during := findDirs(DefaultRoot, prefix)
	if len(during) == 0 {
		t.Fatal("no prefix directory found while open")
	}
	for _, dir := range during {
		// The v1 driver would also create dirs in name=systemd and the
		// hybrid cgroup2 tree if given the chance.
		if strings.Contains(dir, "/systemd/") || strings.Contains(dir, "/unified/") {
			t.Errorf("created %s outside the controllers in use", dir)
		}
	}
	t.Logf("while open: %d prefix dirs, e.g. %s", len(during), during[0])

	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if st := p.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("process in a slot after Close: %v, want SIGKILL", st)
	}
	if st := pa.wait(t); !killedBySignal(st, syscall.SIGKILL) {
		t.Errorf("process in a named slot after Close: %v, want SIGKILL", st)
	}
	after := findDirs(DefaultRoot, "")
	var diff []string
	for _, d := range after {
		if !slices.Contains(before, d) && strings.Contains(d, prefix) {
			diff = append(diff, "+"+d)
		}
	}
	for _, d := range before {
		if !slices.Contains(after, d) && !strings.Contains(d, testPrefixBase()) && !strings.Contains(d, "goinit") {
			// Ours never deletes what it did not make; other tests'
			// and packages' directories come and go.
			t.Logf("note: %s vanished (not ours)", d)
		}
	}
	if len(diff) > 0 {
		t.Errorf("cgroup tree changed by Open/Close:\n%s", strings.Join(diff, "\n"))
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := h.Slot(0); err == nil {
		t.Error("Slot after Close succeeded")
	}
	if _, err := h.NamedSlot("agent"); err == nil {
		t.Error("NamedSlot after Close succeeded")
	}
	if hostVersion() == 2 {
		self, _ := os.ReadFile("/proc/self/cgroup")
		if strings.Contains(string(self), prefix) {
			t.Errorf("test process still in %s", self)
		}
	}
}

// TestReadOnlyCgroupfs remounts the memory cgroupfs read-only in a private
// mount namespace (the host's mounts are not touched) and checks Open's
// error there.
func TestReadOnlyCgroupfs(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=readonly-open", helperPrefixEnv+"="+testPrefix(t))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWNS}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helper: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var res readonlyResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	t.Logf("Open on read-only %s: %s", res.Mount, res.Err)
	if !res.Unavailable || !res.Typed || !res.EROFS {
		t.Errorf("error %q: errors.Is(ErrUnavailable)=%v, *UnavailableError=%v, errors.Is(EROFS)=%v; want all true",
			res.Err, res.Unavailable, res.Typed, res.EROFS)
	}
	want := regexp.MustCompile(`^cgroup (memory controller|filesystem) is not writable at ` + regexp.QuoteMeta(res.Mount) +
		`/\S*: read-only file system; mount the cgroup filesystem read-write .*, or run without the memory limit$`)
	if !want.MatchString(res.Err) {
		t.Errorf("error %q does not match %s", res.Err, want)
	}
	// The host's mount must still be writable.
	var st unix.Statfs_t
	if err := unix.Statfs(res.Mount, &st); err != nil || st.Flags&unix.ST_RDONLY != 0 {
		t.Errorf("host mount %s: flags %#x, %v; want read-write", res.Mount, st.Flags, err)
	}
}

func TestDefaultPrefix(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	h, err := Open(Options{Limits: Limits{Pids: 10}})
	if err != nil {
		t.Fatal(err)
	}
	want := "goinit-" + strconv.Itoa(os.Getpid())
	s, err := h.Slot(0)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	if got := filepath.Base(filepath.Dir(s.Path())); got != want {
		t.Errorf("default prefix directory %q, want %q", got, want)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if left := findDirs(DefaultRoot, want); len(left) > 0 {
		t.Errorf("Close left %v", left)
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want string
	}{
		{
			notWritable("memory", "memory", "/sys/fs/cgroup/memory/x", &os.PathError{Op: "mkdir", Path: "/sys/fs/cgroup/memory/x", Err: unix.EROFS}),
			"cgroup memory controller is not writable at /sys/fs/cgroup/memory/x: read-only file system; mount the cgroup filesystem read-write (containers: run privileged or with a writable, delegated cgroup), or run without the memory limit",
		},
		{
			notWritable("pids", "pids", "/sys/fs/cgroup/x", &os.PathError{Op: "mkdir", Path: "/sys/fs/cgroup/x", Err: unix.EACCES}),
			"cgroup pids controller is not writable at /sys/fs/cgroup/x: permission denied; run goinit as root or delegate the cgroup to its user, or run without the pids limit",
		},
		{
			notWritable("", "", "/sys/fs/cgroup/x", unix.EPERM),
			"cgroup filesystem is not writable at /sys/fs/cgroup/x: operation not permitted; run goinit as root or delegate the cgroup to its user, or run without cgroup limits",
		},
		{
			(&Hierarchy{}).enableError(need{"cpu", "cpu", ""}, t.TempDir(), fmt.Errorf("write: %w", unix.EBUSY)),
			"other processes share goinit's cgroup (pids unknown); run goinit as the container's first process, alone in its cgroup, or run without the cpu limit",
		},
		{
			need{"memory", "memory", "agent"}.notWritable("/sys/fs/cgroup/x", unix.EROFS),
			"cgroup memory controller is not writable at /sys/fs/cgroup/x: read-only file system; mount the cgroup filesystem read-write (containers: run privileged or with a writable, delegated cgroup), or run without the memory limit of slot agent",
		},
	}
	for _, tc := range cases {
		msg := tc.err.Error()
		if !strings.HasSuffix(msg, tc.want) || strings.Contains(msg, "\n") || !errors.Is(tc.err, ErrUnavailable) {
			t.Errorf("error\n%q\nwant one line ending in\n%q, matching ErrUnavailable", msg, tc.want)
		}
		// Fix is the environment's fix alone: callers add their own way
		// of doing without the limit.
		var ue *UnavailableError
		if errors.As(tc.err, &ue) && (strings.Contains(ue.Fix, "without") || strings.HasSuffix(ue.Fix, ",")) {
			t.Errorf("%q: Fix %q names running without the limit", msg, ue.Fix)
		}
	}
	if !errors.Is(cases[0].err, unix.EROFS) {
		t.Error("EROFS not unwrapped")
	}
}

// A slot's siblings are cgroups of their own beside it, with the slot's id
// and limits, for a replacement that runs while the old process does.
func TestSibling(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	l := Limits{Memory: 64 << 20, Pids: 32}
	h := openTest(t, l)
	s, err := h.Slot(2)
	if err != nil {
		t.Fatal(err)
	}
	sib, err := s.Sibling(1)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(sib.Path()) != "worker-2.1" || filepath.Dir(sib.Path()) != filepath.Dir(s.Path()) ||
		sib.ID() != 2 || sib.Limits() != l {
		t.Fatalf("sibling 1 of %s: path %s, id %d, limits %v", s.Path(), sib.Path(), sib.ID(), sib.Limits())
	}
	if again, err := s.Sibling(1); err != nil || again != sib {
		t.Errorf("second Sibling(1) = %p, %v; want the same slot %p", again, err, sib)
	}
	if two, err := sib.Sibling(2); err != nil || filepath.Base(two.Path()) != "worker-2.2" {
		t.Errorf("a sibling's Sibling(2) = %v, %v; want worker-2.2", two, err)
	}
	if _, err := s.Sibling(0); err == nil {
		t.Error("Sibling(0) is not an error")
	}
	pidsMax := filepath.Join(sib.Path(), "pids.max")
	if h.Version() == 1 {
		pidsMax = filepath.Join(sib.paths[ctrlPids], "pids.max")
	}
	if b, err := os.ReadFile(pidsMax); err != nil || strings.TrimSpace(string(b)) != "32" {
		t.Errorf("sibling's %s = %q, %v; want the slot's 32", pidsMax, b, err)
	}

	p := startInSlot(t, sib, exec.Command("sh", "-c", "read x; exec sleep 1000"))
	for _, c := range []struct {
		slot *Slot
		want bool
	}{{s, true}, {sib, false}} {
		if empty, err := c.slot.Empty(); err != nil || empty != c.want {
			t.Errorf("%s.Empty() = %v, %v with pid %d in %s; want %v", c.slot, empty, err, p.cmd.Process.Pid, sib.Path(), c.want)
		}
	}
	p.cmd.Process.Kill()
	p.wait(t)
	if empty, err := sib.Empty(); err != nil || !empty {
		t.Errorf("sibling Empty() = %v, %v after its process exited", empty, err)
	}
}
