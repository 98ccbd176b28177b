package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// launcher starts contenders the same way for all of them.
type launcher struct {
	// pidNS runs each contender as PID 1 of a new PID namespace, as in a
	// container. Without it, supervisors must be asked to become child
	// subreapers to adopt orphans.
	pidNS bool
	// procns is the program that gives a contender started with ownProc
	// a /proc of its own PID namespace.
	procns string
}

// proc is one process the harness started, with everything under it.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// lines receives stdout line by line, if the process was started with
	// pipes; it is closed at EOF.
	lines  chan string
	stderr *tailBuffer
	done   chan struct{}
	err    error // Wait's result, valid once done is closed
}

// startOptions are the optional parts of a start.
type startOptions struct {
	// env is added to the harness's environment.
	env []string
	// dir is the working directory; "" is the harness's.
	dir string
	// pipes connects stdin and stdout to the harness.
	pipes bool
	// files are passed as fd 3 onwards.
	files []*os.File
	// plain runs the process in the harness's PID namespace even when the
	// launcher uses namespaces.
	plain bool
	// ownProc, with a PID namespace, also gives the process a mount
	// namespace with a /proc of its PID namespace, as container runtimes
	// do: it starts through procns, which mounts it and execs argv, so
	// argv is still PID 1 and the process the harness watches.
	ownProc bool
	// mergeStdout sends stdout, when not piped, to the same tail as
	// stderr, for a command whose report is on stdout (pm2's CLI).
	mergeStdout bool
}

// start runs argv in its own process group (and PID namespace, if the
// launcher has them). If the harness dies, the kernel kills the process.
func (l launcher) start(argv []string, o startOptions) (*proc, error) {
	nsFlags := 0
	if l.pidNS && !o.plain {
		nsFlags = syscall.CLONE_NEWPID
		if o.ownProc {
			nsFlags |= syscall.CLONE_NEWNS
			argv = append([]string{l.procns}, argv...)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir = o.dir
	cmd.ExtraFiles = o.files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: uintptr(nsFlags)}
	p := &proc{cmd: cmd, stderr: &tailBuffer{max: 4096}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if o.mergeStdout && !o.pipes {
		cmd.Stdout = p.stderr
	}
	var stdout io.ReadCloser
	if o.pipes {
		var err error
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe for %s: %w", argv[0], err)
		}
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("stdout pipe for %s: %w", argv[0], err)
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	if stdout != nil {
		p.lines = make(chan string, 16)
		go func() {
			defer close(p.lines)
			defer stdout.Close()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
		}()
	}
	// Process.Wait rather than Cmd.Wait: Cmd.Wait would close stdout under
	// the reader above, and would block while any grandchild holds a pipe.
	go func() {
		st, err := cmd.Process.Wait()
		if err == nil && !st.Success() {
			err = &exec.ExitError{ProcessState: st}
		}
		p.err = err
		if p.stdin != nil {
			_ = p.stdin.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// pid is the process's pid in the harness's namespace.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// line returns the next line of stdout, waiting at most d.
func (p *proc) line(d time.Duration) (string, error) {
	select {
	case s, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s closed its output%s", p.cmd.Path, p.stderrSuffix())
		}
		return s, nil
	case <-time.After(d):
		return "", fmt.Errorf("%s printed nothing for %v%s", p.cmd.Path, d, p.stderrSuffix())
	}
}

// wait waits at most d for the process to exit and returns Wait's error.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.cmd.Path, d)
	}
}

// exitCode returns the exit status of a process that has exited; -1 if it
// was killed by a signal or has not exited.
func (p *proc) exitCode() int {
	if !p.exited() {
		return -1
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs the process group and
// the process itself (which, as PID 1 of its namespace, takes every process
// in the namespace with it). It returns once the process has been reaped.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	if grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.wait(grace) // its error is only the exit status or the timeout
		if p.exited() {
			p.killGroup()
			return
		}
	}
	p.killGroup()
	_ = p.cmd.Process.Kill()
	_ = p.wait(10 * time.Second)
}

// killGroup SIGKILLs whatever is left in the process group.
func (p *proc) killGroup() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
}

// stderrSuffix returns the end of the process's stderr, for error messages.
func (p *proc) stderrSuffix() string {
	s := strings.TrimSpace(p.stderr.String())
	if s == "" {
		return ""
	}
	return "; its stderr ends with: " + s
}

// watchStderr returns a channel that receives the first whole line written
// to stderr after this call that contains any of subs. Lines are matched as
// they are written, so a line the tail has since dropped is still seen.
func (p *proc) watchStderr(subs ...string) <-chan string {
	return p.stderr.watch(subs)
}

// tailBuffer keeps the last max bytes written to it, and hands whole lines
// to watchers.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	// line is the unterminated end of what was written, at most max bytes.
	line     []byte
	watchers []lineWatch
}

// lineWatch waits for one line containing any of subs.
type lineWatch struct {
	subs []string
	ch   chan string // buffered 1; receives once
}

// Write implements io.Writer.
func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	if len(t.watchers) == 0 {
		return len(b), nil
	}
	t.line = append(t.line, b...)
	for {
		i := bytes.IndexByte(t.line, '\n')
		if i < 0 {
			break
		}
		t.match(string(t.line[:i]))
		t.line = t.line[i+1:]
	}
	if len(t.line) > t.max {
		t.line = t.line[len(t.line)-t.max:]
	}
	return len(b), nil
}

// match hands line to the watchers it satisfies and drops them.
func (t *tailBuffer) match(line string) {
	t.watchers = slices.DeleteFunc(t.watchers, func(w lineWatch) bool {
		if !slices.ContainsFunc(w.subs, func(s string) bool { return strings.Contains(line, s) }) {
			return false
		}
		w.ch <- line
		return true
	})
}

// watch registers a watcher for the lines written from now on.
func (t *tailBuffer) watch(subs []string) <-chan string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.watchers) == 0 {
		t.line = t.line[:0] // only lines written from now on count
	}
	ch := make(chan string, 1)
	t.watchers = append(t.watchers, lineWatch{subs: subs, ch: ch})
	return ch
}

// String returns what is kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// probePIDNamespace reports whether this process may create PID namespaces,
// by running trueBin in one.
func probePIDNamespace(trueBin string) error {
	if trueBin == "" {
		return errors.New("no true binary to probe with")
	}
	cmd := exec.Command(trueBin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("clone(CLONE_NEWPID): %w", err)
	}
	return nil
}
