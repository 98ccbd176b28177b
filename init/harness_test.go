package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/testbin"
)

// requireRoot skips a test that needs root, except in CI where every test
// must run.
func requireRoot(t *testing.T) { t.Helper(); testbin.RequireRoot(t, "PID namespaces") }

// startMasked starts cmd, with every signal blocked when block is true: Go's
// fork gives the child the forking thread's mask, so blocking them on this
// locked thread hands them to goinit exactly as a parent that blocked them.
func startMasked(cmd *exec.Cmd, block bool) error {
	if !block {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		return err
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return cmd.Start()
}

// runOpts says how to start goinit.
type runOpts struct {
	pid1       bool // PID 1 of a new PID namespace
	env        []string
	extraFiles []*os.File
	stdin      io.Reader
	// blockAll starts goinit with every signal blocked, as a wrapper
	// script or a nohup-style tool can leave it.
	blockAll bool
	// dir is goinit's working directory; default the test's.
	dir string
	// bin is the goinit binary; default the release build.
	bin string
	// hostProc leaves a pid1 goinit with the host's /proc, as
	// `unshare --pid` without --mount-proc does.
	hostProc bool
	// netns gives a pid1 goinit a new network namespace too, with lo up,
	// as a container has; sysctls (NAME=VALUE) are set in it before
	// goinit starts, as `docker run --sysctl` does. Its /proc/PID/ns/net
	// (PID: cmd.Process.Pid) is the way in (see internal/netns).
	netns   bool
	sysctls []string
}

// proc is a running goinit with its output.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	cond   chan struct{} // closed and replaced on every new line
	stderr bytes.Buffer
	done   chan struct{}
	outEOF chan struct{} // stdout reached EOF
	errEOF chan struct{} // stderr reached EOF
	code   int
}

// start runs goinit with args in the way opts says.
func start(t *testing.T, opts runOpts, args ...string) *proc {
	t.Helper()
	bin := opts.bin
	if bin == "" {
		bin = testbin.Goinit(t)
	}
	cmd := exec.Command(bin, args...)
	if opts.pid1 && !opts.hostProc {
		// goinit gets a /proc of its own namespace, as in a container.
		cmd = exec.Command(testbin.Build(t, "./init/testdata/procns"), append([]string{bin}, args...)...)
	}
	cmd.Env = append(os.Environ(), opts.env...)
	if opts.netns {
		if !opts.pid1 || opts.hostProc {
			t.Fatal("runOpts.netns needs pid1 without hostProc: procns sets the namespace up")
		}
		cmd.Env = append(cmd.Env, "PROCNS_LOOPBACK=up", "PROCNS_SYSCTL="+strings.Join(opts.sysctls, ","))
	}
	cmd.ExtraFiles = opts.extraFiles
	cmd.Dir = opts.dir
	cmd.Stdin = opts.stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if opts.pid1 {
		requireRoot(t)
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
		if opts.netns {
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
		}
	}
	p := &proc{t: t, cmd: cmd, cond: make(chan struct{}), done: make(chan struct{}), outEOF: make(chan struct{}), errEOF: make(chan struct{})}
	// A plain pipe, not StdoutPipe: a process left behind may hold the
	// write end open, and goinit's exit must still be seen.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, errW
	if err := startMasked(cmd, opts.blockAll); err != nil {
		t.Fatal(err)
	}
	w.Close()
	errW.Close()
	go func() {
		defer close(p.errEOF)
		defer errR.Close()
		_, _ = io.Copy(&lockedWriter{mu: &p.mu, w: &p.stderr}, errR)
	}()
	go func() {
		defer close(p.outEOF)
		defer out.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.cond)
			p.cond = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("goinit %v\nstdout:\n%s\nstderr:\n%s", args, p.stdout(), p.errText())
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *proc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLine waits until a stdout line starts with prefix and returns it.
func (p *proc) waitLine(prefix string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		line, found, cond := p.scan(prefix, &seen)
		if found {
			return line
		}
		select {
		case <-cond:
		case <-p.done:
			// Read whatever arrived with the exit, then give up.
			select {
			case <-p.outEOF:
			case <-time.After(5 * time.Second):
			}
			if line, found, _ := p.scan(prefix, &seen); found {
				return line
			}
			p.t.Fatalf("goinit exited (%d) before printing %q", p.code, prefix)
		case <-deadline:
			p.t.Fatalf("no line %q within %s", prefix, timeout)
		}
	}
}

// scan looks for prefix in the lines after *seen, and returns the channel
// that is closed when the next line arrives.
func (p *proc) scan(prefix string, seen *int) (string, bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ; *seen < len(p.lines); *seen++ {
		if strings.HasPrefix(p.lines[*seen], prefix) {
			return p.lines[*seen], true, nil
		}
	}
	return "", false, p.cond
}

// hasLine reports whether a stdout line starts with prefix so far.
func (p *proc) hasLine(prefix string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// wait waits for goinit to exit, and for its output up to a short
// deadline (a process left behind may hold stdout open), and returns its
// exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		// Both pipes, within one deadline (a timer's channel fires
		// once; a context's Done stays closed).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		grace := ctx.Done()
		for _, eof := range []chan struct{}{p.outEOF, p.errEOF} {
			select {
			case <-eof:
			case <-grace:
			}
		}
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("goinit still running after %s", timeout)
		return -1
	}
}

// signal sends sig to goinit itself.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// runToEnd runs goinit to completion and returns its exit code and stderr.
func runToEnd(t *testing.T, opts runOpts, args ...string) (int, string) {
	t.Helper()
	p := start(t, opts, args...)
	code := p.wait(30 * time.Second)
	return code, p.errText()
}

// sigrecord returns the path of the signal recording test program.
func sigrecord(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "./init/testdata/sigrecord")
}

// descendants lists the processes below pid with their state, from /proc.
func descendants(pid int) map[int]string {
	children := map[int][]int{}
	state := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		var ppid int
		fmt.Sscan(f[1], &ppid)
		children[ppid] = append(children[ppid], p)
		state[p] = f[0]
	}
	out := map[int]string{}
	queue := []int{pid}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for _, k := range children[c] {
			out[k] = state[k]
			queue = append(queue, k)
		}
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goinitBin returns the goinit binary under test.
func goinitBin(t *testing.T) string {
	t.Helper()
	return testbin.Goinit(t)
}
