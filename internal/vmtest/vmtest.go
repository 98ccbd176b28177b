package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultTimeout  = 2 * time.Minute
	DefaultMemoryMB = 1024
	DefaultCPUs     = 2
)

// exitGrace is how long qemu may take to power off after the script has
// reported its exit status, before the harness kills it.
const exitGrace = 10 * time.Second

// EnvVerbose, when set to 1, copies every console line to the test log as it
// arrives (use with go test -v to watch a VM that seems stuck). Without it the
// console is logged only if the test fails.
const EnvVerbose = "VMTEST_VERBOSE"

// kernelArgs is the kernel command line before Config.KernelArgs.
//   - console=ttyS0: the only console; qemu connects it to its stdout.
//   - panic=-1 and oops=panic: a kernel crash reboots at once, and
//     -no-reboot turns that into qemu exiting, so a crash ends the test
//     instead of hanging until the timeout.
//   - quiet loglevel=1: only emergency messages reach the console, so kernel
//     lines (an OOM kill report, say) cannot split the script's verdict lines.
//     Scripts read the full log with dmesg.
//   - mitigations=off: speculative execution defences cost much and protect
//     nothing in a throwaway VM.
var kernelArgs = []string{"console=ttyS0", "panic=-1", "oops=panic", "quiet", "loglevel=1", "mitigations=off"}

// Config describes one VM boot. The zero value boots a VM that runs an empty
// script.
type Config struct {
	// Files maps absolute paths inside the VM to host files copied there,
	// permission bits kept, e.g. {"/bin/goinit": testbin.Goinit(t)}. Parent
	// directories are created. Paths under /init, /bin/busybox, /vmtest,
	// /dev, /proc and /sys are reserved.
	Files map[string]string

	// Script is a busybox sh script run once the VM is set up, with the
	// helpers of /vmtest/lib.sh (verdict, pass, fail, check) defined. Its
	// output goes to the console; its exit status becomes Result.ExitCode.
	Script string

	// Timeout bounds the whole boot, from starting qemu to its exit.
	// Default DefaultTimeout.
	Timeout time.Duration

	// MemoryMB is the VM's RAM. Default DefaultMemoryMB.
	MemoryMB int

	// CPUs is the number of virtual CPUs. Default DefaultCPUs.
	CPUs int

	// KernelArgs are appended to the kernel command line; a later
	// parameter overrides an earlier one (e.g. "loglevel=7").
	KernelArgs []string
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MemoryMB <= 0 {
		c.MemoryMB = DefaultMemoryMB
	}
	if c.CPUs <= 0 {
		c.CPUs = DefaultCPUs
	}
	return c
}

// Result is what a VM reported.
type Result struct {
	// Console is everything the VM wrote to its serial console, with
	// "\r\n" line ends turned into "\n".
	Console string

	// Output is the part of Console the script wrote: the lines between
	// the start and exit markers.
	Output string

	// ExitCode is the script's exit status, or -1 if it never reported one.
	ExitCode int

	// BootTime is the time from starting qemu to the script's start.
	BootTime time.Duration

	// Elapsed is the time from starting qemu to its exit.
	Elapsed time.Duration
}

// Run boots a VM as described by cfg, waits for its script to finish and
// the VM to power off, and returns what it reported.
//
// If qemu, the kernel or busybox is missing, or the VM cannot boot as far as
// starting the script, the test is skipped, or failed when CI=true (see
// Prepare). Run returns an error if the script does not finish within
// cfg.Timeout or the VM dies before reporting its exit status; the Result then
// holds the console output so far. Either way, the console is logged if the
// test fails.
func Run(ctx context.Context, t testing.TB, cfg Config) (*Result, error) {
	t.Helper()
	img := Prepare(t)
	cfg = cfg.withDefaults()

	initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := writeInitramfs(initrd, img.Busybox, cfg); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, img.QEMU, qemuArgs(img, cfg, initrd)...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	res := &Result{ExitCode: -1}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vmtest: VM console (%s, kernel %s):\n%s", res.Elapsed.Round(time.Millisecond), img.KernelSource, res.Console)
		}
	})

	start := time.Now()
	if err := cmd.Start(); err != nil {
		unavailable(t, "start %s: %v", img.QEMU, err)
	}
	var grace *time.Timer
	started, exited, setupErr := readConsole(stdout, res, start, t, os.Getenv(EnvVerbose) == "1", func() {
		// The script is done: give the VM a moment to power off by itself.
		grace = time.AfterFunc(exitGrace, cancel)
	})
	if grace != nil {
		defer grace.Stop()
	}
	waitErr := cmd.Wait()
	res.Elapsed = time.Since(start)

	timedOut := ctx.Err() != nil && !exited
	switch {
	case !started && setupErr != "":
		unavailable(t, "VM setup failed: %s", setupErr)
	case !started && timedOut:
		unavailable(t, "VM did not start the script within %s (kernel %s, accelerator %s); console ends:\n%s",
			cfg.Timeout, img.KernelSource, img.Accel, tail(res.Console, 20))
	case !started:
		unavailable(t, "VM exited before starting the script (%v); qemu said: %s; console ends:\n%s",
			waitErr, strings.TrimSpace(stderr.String()), tail(res.Console, 20))
	case timedOut:
		return res, fmt.Errorf("vmtest: script did not finish (timeout %s, booted in %s): %w",
			cfg.Timeout, res.BootTime.Round(time.Millisecond), ctx.Err())
	case !exited:
		return res, fmt.Errorf("vmtest: VM exited before the script reported its exit status (%v); qemu said: %s",
			waitErr, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

// readConsole reads the VM's console until EOF, filling res. onExit is called
// when the exit marker arrives. It reports whether the start and exit markers
// were seen, and the reason given by a setup failure marker.
func readConsole(r io.Reader, res *Result, start time.Time, t testing.TB, verbose bool, onExit func()) (started, exited bool, setupErr string) {
	t.Helper()
	var console, output strings.Builder
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			console.WriteString(line)
			console.WriteByte('\n')
			res.Console = console.String()
			if verbose {
				t.Logf("vm: %s", line)
			}
			switch {
			case exited:
			case !started && line == markerStart:
				started = true
				res.BootTime = time.Since(start)
			case !started && strings.HasPrefix(line, markerSetup):
				setupErr = strings.TrimPrefix(line, markerSetup)
			case started:
				// The exit marker may follow output that did not end
				// in a newline.
				if before, after, ok := strings.Cut(line, markerExit); ok {
					if code, err := strconv.Atoi(after); err == nil {
						exited = true
						res.ExitCode = code
						line = before
						onExit()
					}
				}
				if !exited || line != "" {
					output.WriteString(line)
					output.WriteByte('\n')
					res.Output = output.String()
				}
			}
		}
		if err != nil {
			return started, exited, setupErr
		}
	}
}

func qemuArgs(img *Image, cfg Config, initrd string) []string {
	args := []string{
		// No default devices (VGA, NIC, floppy, CD-ROM, parallel port):
		// less to emulate and probe at boot.
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio",
		"-no-reboot",
		"-m", strconv.Itoa(cfg.MemoryMB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-kernel", img.Kernel,
		"-initrd", initrd,
		"-append", strings.Join(append(append([]string(nil), kernelArgs...), cfg.KernelArgs...), " "),
		"-accel", img.Accel,
	}
	if img.Accel == "kvm" {
		args = append(args, "-cpu", "host")
	} else {
		// Every CPU feature TCG can emulate, so the guest kernel and Go
		// binaries take their usual code paths.
		args = append(args, "-cpu", "max")
	}
	return args
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Verdict is one scenario result a script reported with a line
// "VERDICT name PASS|FAIL detail...".
type Verdict struct {
	Name   string
	Pass   bool
	Detail string
}

// ErrNoVerdict is returned by Result.Verdict when the script reported no
// verdict of that name.
var ErrNoVerdict = errors.New("vmtest: no such verdict")

// Verdicts returns the verdicts in the script's output, in order. Lines whose
// status is neither PASS nor FAIL count as FAIL.
func (r *Result) Verdicts() []Verdict {
	var vs []Verdict
	for _, line := range strings.Split(r.Output, "\n") {
		rest, ok := strings.CutPrefix(line, "VERDICT ")
		if !ok {
			continue
		}
		name, rest, _ := strings.Cut(rest, " ")
		status, detail, _ := strings.Cut(rest, " ")
		vs = append(vs, Verdict{Name: name, Pass: status == "PASS", Detail: strings.TrimSpace(detail)})
	}
	return vs
}

// Verdict returns the last verdict reported under name.
func (r *Result) Verdict(name string) (Verdict, error) {
	vs := r.Verdicts()
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Name == name {
			return vs[i], nil
		}
	}
	return Verdict{}, fmt.Errorf("%w: %q", ErrNoVerdict, name)
}

// Report turns the verdicts into subtests of t, one per verdict in the order
// reported, each failing with the verdict's detail if it is FAIL. Every name
// in want must have been reported; a missing one fails t. It lets one boot
// run many scenarios while go test still lists them one by one.
func (r *Result) Report(t *testing.T, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, v := range r.Verdicts() {
		seen[v.Name] = true
		t.Run(v.Name, func(t *testing.T) {
			if !v.Pass {
				t.Errorf("FAIL %s", v.Detail)
			} else if v.Detail != "" {
				t.Logf("PASS %s", v.Detail)
			}
		})
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("vmtest: the script reported no verdict for %q", name)
		}
	}
}
