package runc

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// cleanupTimeout bounds each step of tearing a container down.
const cleanupTimeout = 5 * time.Second

// Container is one running (or finished) `runc run` started by Start. Its
// methods fail the test on error; call them from the test's goroutine.
type Container struct {
	// ID is the runc container ID, unique on the host.
	ID string
	// Bundle is the host directory holding rootfs/ and config.json.
	Bundle string
	// Shared is the host directory the container sees at SharedPath.
	Shared string

	t      testing.TB
	root   string // runc --root: this container's private state directory
	work   string // scratch files such as `runc exec` process specs
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	start  time.Time

	done     chan struct{} // closed when `runc run` has returned
	exitCode int           // valid after done; -1 if runc itself was killed
	waitErr  error         // valid after done
}

// Start writes a bundle for opts and starts `runc run` in the foreground,
// with stdin from /dev/null and stdout and stderr captured. It returns as
// soon as runc is started; use WaitOutput to know the container's process
// is up. The container is always killed and deleted in t.Cleanup, and its
// output is logged there if the test failed.
func Start(t testing.TB, opts Options) *Container {
	t.Helper()
	Require(t)
	c := &Container{
		ID:     newID(t),
		Bundle: t.TempDir(),
		Shared: t.TempDir(),
		t:      t,
		root:   t.TempDir(),
		work:   t.TempDir(),
		stdout: newOutput(),
		stderr: newOutput(),
		done:   make(chan struct{}),
	}
	// The container's root runs as uid 0 but may lack CAP_DAC_OVERRIDE
	// under a custom spec; let it write regardless.
	if err := os.Chmod(c.Shared, 0o777); err != nil {
		t.Fatal(err)
	}
	writeBundle(t, c.Bundle, c.Shared, c.ID, opts)

	c.cmd = exec.Command("runc", "--root", c.root, "run", "--bundle", c.Bundle, c.ID)
	c.cmd.Stdout = c.stdout
	c.cmd.Stderr = c.stderr
	// Output pipes close when every process in the container is gone,
	// which is when runc returns; the delay only guards against a bug.
	c.cmd.WaitDelay = cleanupTimeout
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start runc: %v", err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		c.exitCode = c.cmd.ProcessState.ExitCode()
		close(c.done)
	}()
	t.Cleanup(c.cleanup)
	return c
}

// cleanup kills and deletes the container, then logs what it printed if the
// test failed.
func (c *Container) cleanup() {
	select {
	case <-c.done:
	default:
		_ = c.runc("kill", c.ID, "KILL")
		select {
		case <-c.done:
		case <-time.After(cleanupTimeout):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	if err := c.runc("delete", "-f", c.ID); err != nil && !strings.Contains(err.Error(), "does not exist") {
		c.t.Errorf("runc delete %s: %v", c.ID, err)
	}
	if c.t.Failed() {
		c.t.Logf("container %s after %v: exit code %d (%v)\n--- stdout ---\n%s\n--- stderr (goinit logs, runc errors) ---\n%s",
			c.ID, time.Since(c.start).Round(time.Millisecond), c.exitCode, c.waitErr, c.stdout, c.stderr)
	}
}

// runc runs a runc subcommand against this container's state directory.
func (c *Container) runc(args ...string) error {
	_, err := c.runcOutput(args...)
	return err
}

func (c *Container) runcOutput(args ...string) (string, error) {
	cmd := exec.Command("runc", append([]string{"--root", c.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = cleanupTimeout
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String(), errors.New(strings.TrimSpace(err.Error() + ": " + stderr.String()))
		}
		return stdout.String(), nil
	case <-time.After(2 * cleanupTimeout):
		_ = cmd.Process.Kill()
		<-done
		return stdout.String(), errors.New("runc " + strings.Join(args, " ") + ": timed out")
	}
}

// Kill sends sig (a name such as "TERM" or "SIGUSR1", or a number) to the
// container's PID 1 with `runc kill`, as `docker stop` and the kubelet do.
func (c *Container) Kill(sig string) {
	c.t.Helper()
	if err := c.runc("kill", c.ID, sig); err != nil {
		c.t.Fatalf("runc kill %s %s: %v", c.ID, sig, err)
	}
}

// Exec runs argv inside the running container with `runc exec` (no
// terminal) and returns its stdout; on failure the error carries its
// stderr. The process is not a child of PID 1 but shares its namespaces and
// cgroup.
func (c *Container) Exec(argv ...string) (string, error) {
	p := process{
		Args: argv,
		Env:  []string{DefaultPath},
		Cwd:  "/",
		Capabilities: capabilities{
			Bounding: dockerCaps, Effective: dockerCaps, Permitted: dockerCaps,
		},
		NoNewPrivileges: true,
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(c.work, "process-*.json")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return c.runcOutput("exec", "--process", f.Name(), c.ID)
}

// Status returns runc's view of the container: "creating", "created",
// "running", "paused" or "stopped", or "" once it has been deleted.
func (c *Container) Status() string {
	c.t.Helper()
	out, err := c.runcOutput("state", c.ID)
	if err != nil {
		return ""
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("runc state %s: %v: %s", c.ID, err, out)
	}
	return st.Status
}

// Done is closed when `runc run` has returned, that is when the container's
// PID 1 has exited and runc has torn the container down.
func (c *Container) Done() <-chan struct{} { return c.done }

// Wait waits up to timeout for the container to exit and returns runc's
// exit code, which is PID 1's exit code (or 128+N if it was killed by
// signal N). It fails the test on timeout.
func (c *Container) Wait(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
		return c.exitCode
	case <-time.After(timeout):
		c.t.Fatalf("container %s still running after %v", c.ID, timeout)
		return -1
	}
}

// WaitOutput waits up to timeout for a line equal to line on the
// container's stdout. It fails the test on timeout, or if the container
// exits without printing it.
func (c *Container) WaitOutput(line string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		text, changed := c.stdout.snapshot()
		if hasLine(text, line) {
			return
		}
		select {
		case <-changed:
		case <-c.done:
			// All output is in once runc run has returned.
			if text, _ := c.stdout.snapshot(); !hasLine(text, line) {
				c.t.Fatalf("container %s exited with code %d without printing %q", c.ID, c.exitCode, line)
			}
			return
		case <-deadline.C:
			c.t.Fatalf("container %s printed no line %q within %v", c.ID, line, timeout)
		}
	}
}

// Stdout returns everything the container has written to stdout so far.
func (c *Container) Stdout() string { return c.stdout.String() }

// Stderr returns everything written to stderr so far: the container's
// (goinit logs there) and runc's own errors.
func (c *Container) Stderr() string { return c.stderr.String() }

// HasLine reports whether the container's stdout so far has a line equal
// to line.
func (c *Container) HasLine(line string) bool { return hasLine(c.Stdout(), line) }

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimRight(l, "\r") == line {
			return true
		}
	}
	return false
}

// output is an io.Writer that records everything and lets readers wait for
// the next write without polling.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

// snapshot returns the text so far and a channel closed on the next write.
func (o *output) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String(), o.changed
}

func (o *output) String() string {
	s, _ := o.snapshot()
	return s
}
