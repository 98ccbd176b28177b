package cgroup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the helper program run inside slots: with
// helperEnv set, TestMain runs the helper instead of the tests. That avoids
// building a separate binary and keeps the helper next to its tests.
const (
	helperEnv       = "GOINIT_CGROUP_TEST_HELPER"
	helperBytesEnv  = "GOINIT_CGROUP_TEST_BYTES"
	helperPrefixEnv = "GOINIT_CGROUP_TEST_PREFIX"
	// helperTimeout bounds every helper run; real runs take well under
	// a few seconds.
	helperTimeout = 30 * time.Second
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	restore, err := isolateOnV2()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := restore(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		code = 1
	}
	// Whatever the individual tests checked, nothing of ours may remain
	// anywhere under the cgroup filesystem.
	if leaks := findDirs(DefaultRoot, testPrefixBase()); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: cgroup directories left behind:\n  %s\n", strings.Join(leaks, "\n  "))
		code = 1
	}
	os.Exit(code)
}

// isolateOnV2 gives the test process a cgroup of its own on cgroup v2 when
// it shares one with other processes (typically "go test" itself, e.g. in a
// systemd session). Open must move goinit out of its cgroup and enable
// controllers there, which the kernel refuses while other processes live
// in it; goinit as a container's PID 1 is alone, and this recreates that:
// the process moves into a new sibling cgroup for the duration of the tests.
func isolateOnV2() (restore func() error, err error) {
	noop := func() error { return nil }
	if hostVersion() != 2 || os.Geteuid() != 0 {
		return noop, nil
	}
	pi, err := readProcInfo()
	if err != nil {
		return nil, err
	}
	m, ok := pi.v2Mount(DefaultRoot)
	if !ok {
		return noop, nil
	}
	own, err := pi.ownDir(m, "")
	if err != nil {
		return nil, err
	}
	pids, err := cgroups.GetPids(own)
	if err != nil {
		return nil, err
	}
	if own == m.Dir || (len(pids) == 1 && pids[0] == os.Getpid()) {
		return noop, nil // the root is exempt from the rule; alone is fine
	}
	dir := filepath.Join(filepath.Dir(own), testPrefixBase()+"main")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("isolate test process: %w", err)
	}
	if err := cgroups.WriteCgroupProc(dir, os.Getpid()); err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("isolate test process in %s: %w", dir, err)
	}
	return func() error {
		if err := cgroups.WriteCgroupProc(own, os.Getpid()); err != nil {
			return fmt.Errorf("move test process back to %s: %w", own, err)
		}
		// Children started outside slots (helpers) inherited dir.
		for _, pid := range mustPids(dir) {
			_ = cgroups.WriteCgroupProc(own, pid)
		}
		return cgroups.RemovePath(dir)
	}, nil
}

// mustPids lists dir's processes, or none.
func mustPids(dir string) []int {
	pids, _ := cgroups.GetPids(dir)
	return pids
}

// runHelper is the helper program. Modes that run inside a slot first
// block on stdin until the test has placed them (see startInSlot).
func runHelper(mode string) int {
	switch mode {
	case "alloc":
		if !waitRelease() {
			return 3
		}
		return alloc()
	case "alloc-nowait":
		return alloc()
	case "alloc-child":
		// The placed process survives; its child is the one that
		// exceeds the limit.
		if !waitRelease() {
			return 3
		}
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), helperEnv+"=alloc-nowait")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		err := child.Run()
		fmt.Printf("child: %v\n", err)
		return 0
	case "spin":
		if !waitRelease() {
			return 3
		}
		var n uint64
		for {
			n++
			if n == 0 {
				fmt.Println("wrapped")
			}
		}
	case "cpus":
		if !waitRelease() {
			return 3
		}
		c, err := AvailableCPUs()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = json.NewEncoder(os.Stdout).Encode(c)
		return 0
	case "readonly-open":
		return readonlyOpen()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// waitRelease blocks until the test writes to stdin; EOF means the test
// went away without placing us, and the helper must not run unplaced.
func waitRelease() bool {
	var b [1]byte
	n, _ := os.Stdin.Read(b[:])
	return n == 1
}

// alloc allocates and touches helperBytesEnv bytes, page by page, so that
// every page is really charged to the cgroup.
func alloc() int {
	n, err := ParseSize(os.Getenv(helperBytesEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	fmt.Printf("survived %d\n", n)
	return 0
}

// readonlyResult is what the readonly-open helper reports.
type readonlyResult struct {
	Mount       string
	Err         string
	Unavailable bool
	EROFS       bool
	Typed       bool
}

// readonlyOpen runs in a private mount namespace (the test starts it with
// CLONE_NEWNS; Go makes "/" rprivate there), remounts the memory
// controller's cgroupfs read-only and reports what Open says.
func readonlyOpen() int {
	pi, err := readProcInfo()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var res readonlyResult
	if m, ok := pi.v2Mount(DefaultRoot); ok {
		res.Mount = m.Dir
	} else if m, ok := pi.v1Mount(DefaultRoot, ctrlMemory); ok {
		res.Mount = m.Dir
	} else {
		fmt.Fprintln(os.Stderr, "no memory cgroup mount")
		return 1
	}
	// MS_BIND makes this a per-mount (VFS) flag change: the superblock,
	// shared with the host's mount, stays read-write.
	if err := unix.Mount("", res.Mount, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		fmt.Fprintf(os.Stderr, "remount %s read-only: %v\n", res.Mount, err)
		return 1
	}
	h, err := Open(Options{Prefix: os.Getenv(helperPrefixEnv), Limits: Limits{Memory: 64 << 20}})
	if err == nil {
		_ = h.Close()
		fmt.Fprintln(os.Stderr, "Open succeeded on a read-only cgroupfs")
		return 1
	}
	var ue *UnavailableError
	res.Err = err.Error()
	res.Unavailable = errors.Is(err, ErrUnavailable)
	res.EROFS = errors.Is(err, unix.EROFS)
	res.Typed = errors.As(err, &ue)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// requireCgroups skips the test unless it can create cgroups: root and a
// mounted cgroupfs. With CI=true a missing requirement fails instead, so a
// misconfigured CI cannot pass by skipping everything.
func requireCgroups(t *testing.T) {
	t.Helper()
	var why string
	var st unix.Statfs_t
	switch {
	case os.Geteuid() != 0:
		why = "not running as root"
	case unix.Statfs(DefaultRoot, &st) != nil:
		why = DefaultRoot + " does not exist"
	case st.Type != unix.CGROUP2_SUPER_MAGIC && st.Type != unix.TMPFS_MAGIC:
		why = DefaultRoot + " is not a cgroup filesystem"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cgroup test needs root and a cgroup filesystem: %s (failing, not skipping, because CI=true)", why)
	}
	t.Skipf("skipping: cgroup test needs root and a cgroup filesystem: %s", why)
}

// hostVersion is the cgroup version of this machine.
var hostVersion = sync.OnceValue(func() int {
	var st unix.Statfs_t
	if unix.Statfs(DefaultRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return 2
	}
	return 1
})

// parallelOnV1 runs the test in parallel on cgroup v1 only. On v2, Open
// moves the whole test process into its supervisor leaf, so two open
// Hierarchies would nest; there the tests take turns.
func parallelOnV1(t *testing.T) {
	if hostVersion() == 1 {
		t.Parallel()
	}
}

// testPrefixBase starts every prefix this test process uses, so leftovers
// can be found (and parallel test processes do not collide).
func testPrefixBase() string {
	return "goinit-test-" + strconv.Itoa(os.Getpid()) + "-"
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// testPrefix is a prefix unique to t.
func testPrefix(t *testing.T) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "-")
	if len(name) > 60 {
		name = name[:60]
	}
	return testPrefixBase() + name
}

// openTest opens a Hierarchy for t and closes it, checking that nothing is
// left behind, when t ends.
func openTest(t *testing.T, l Limits) *Hierarchy {
	t.Helper()
	return openTestOpts(t, Options{Limits: l})
}

// openTestOpts is openTest with more options; Prefix and Logger are set
// here.
func openTestOpts(t *testing.T, opts Options) *Hierarchy {
	t.Helper()
	prefix := testPrefix(t)
	opts.Prefix = prefix
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s, named %v): %v", opts.Limits, opts.Named, err)
	}
	if h.Version() != hostVersion() {
		t.Errorf("Version() = %d, host is v%d", h.Version(), hostVersion())
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := findDirs(DefaultRoot, prefix); len(left) > 0 {
			t.Errorf("Close left %v", left)
		}
	})
	return h
}

// findDirs lists directories under root whose name starts with prefix.
func findDirs(root, prefix string) []string {
	var found []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished while walking: another test cleaning up
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), prefix) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// lockedBuffer is a bytes.Buffer safe to write from exec's copying
// goroutine while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}

func (b *lockedBuffer) String() string { return string(b.Bytes()) }

// proc is a process started in a slot.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	state          *os.ProcessState
}

// startHelper starts the test binary in helper mode inside s.
func startHelper(t *testing.T, s *Slot, mode string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	return startInSlot(t, s, cmd)
}

// startInSlot starts cmd inside s the way goinit does: on v2 directly in
// the slot with clone3(CLONE_INTO_CGROUP); on v1 blocked on stdin until
// Slot.Add has placed it. Either way the command must read one line from
// stdin before doing anything that allocates or forks.
func startInSlot(t *testing.T, s *Slot, cmd *exec.Cmd) *proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := &proc{cmd: cmd, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, p.stdout, p.stderr
	// A grandchild that inherited stdout must not keep Wait from
	// returning once the process itself has exited.
	cmd.WaitDelay = time.Second
	fd, v2 := s.FD()
	if v2 {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	err = cmd.Start()
	r.Close()
	if err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	if !v2 {
		if err := s.Add(cmd.Process.Pid); err != nil {
			t.Fatalf("Add(%d): %v", cmd.Process.Pid, err)
		}
	}
	pids, err := cgroups.GetPids(s.Path())
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("pid %d is not in %s (%v, %v)", cmd.Process.Pid, s.Path(), pids, err)
	}
	if _, err := w.Write([]byte("go\n")); err != nil {
		t.Fatalf("release %v: %v", cmd.Args, err)
	}
	return p
}

// wait waits for the process to exit, failing the test after
// helperTimeout.
func (p *proc) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.state
	case <-time.After(helperTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not exit within %v; output:\n%s", p.cmd.Args, helperTimeout, p.output())
		return nil
	}
}

func (p *proc) output() string {
	return p.stdout.String() + p.stderr.String()
}

// killedBySignal reports whether st is a death by sig.
func killedBySignal(st *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
