package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/portshare"
)

// shimEnv marks a process as goinit's shim. It starts with an underscore so
// that it is not taken for a GOINIT_* setting, and the shim removes it
// before the command runs.
const shimEnv = "_GOINIT_SHIM"

// shimOptions is what the parent asks of the shim, passed in shimEnv as
// "sync=FD,listen=1,oom=N".
type shimOptions struct {
	syncFD   int  // read one byte from it before exec: the parent has placed us in our cgroup
	listen   bool // set LISTEN_PID to our own pid
	oomScore int  // write to /proc/self/oom_score_adj; -1001 = leave alone
	shareFD  int  // install the port-sharing filter and send its fd over this socket
	exeFD    int  // exec the file held open at this fd (a pinned release), not the path
	pdeath   int  // the parent-death signal to set again on the thread that execs
}

func (o shimOptions) String() string {
	parts := []string{}
	if o.syncFD > 0 {
		parts = append(parts, "sync="+strconv.Itoa(o.syncFD))
	}
	if o.listen {
		parts = append(parts, "listen=1")
	}
	if o.oomScore >= -1000 {
		parts = append(parts, "oom="+strconv.Itoa(o.oomScore))
	}
	if o.shareFD > 0 {
		parts = append(parts, "share="+strconv.Itoa(o.shareFD))
	}
	if o.exeFD > 0 {
		parts = append(parts, "exe="+strconv.Itoa(o.exeFD))
	}
	if o.pdeath > 0 {
		parts = append(parts, "pdeath="+strconv.Itoa(o.pdeath))
	}
	return strings.Join(parts, ",")
}

func parseShimOptions(s string) (shimOptions, error) {
	o := shimOptions{oomScore: -1001}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return o, fmt.Errorf("bad shim option %q", kv)
		}
		switch k {
		case "sync":
			o.syncFD = n
		case "listen":
			o.listen = n == 1
		case "oom":
			o.oomScore = n
		case "share":
			o.shareFD = n
		case "exe":
			o.exeFD = n
		case "pdeath":
			o.pdeath = n
		default:
			return o, fmt.Errorf("bad shim option %q", kv)
		}
	}
	return o, nil
}

// execCommand runs the command: a binary from the file held open at exeFD
// when there is one (the release goinit pinned), else path. A script runs
// by its path: run through /proc/self/fd/N it would see that name as its
// $0, which breaks wrappers that dispatch on their own name (pyenv's and
// nvm's shims). Without /proc, or if the exec by descriptor fails, path.
func execCommand(path string, exeFD int, argv, env []string) error {
	if exeFD > 0 {
		unix.CloseOnExec(exeFD)
		self := "/proc/self/fd/" + strconv.Itoa(exeFD)
		if f, err := os.Open(self); err == nil {
			var magic [2]byte
			n, _ := f.Read(magic[:])
			f.Close()
			if n < 2 || string(magic[:]) != "#!" {
				// Exec only returns on failure: then try the path.
				_ = unix.Exec(self, argv, env)
			}
		}
	}
	return unix.Exec(path, argv, env)
}

// runShim is the first moments of a worker: goinit re-executed as the
// worker's own process. It exists because some things can only be done in
// the worker between fork and exec, and Go's os/exec offers no hook there:
// LISTEN_PID must equal the worker's pid (sd_listen_fds refuses the fds
// otherwise), and on cgroup v1 the worker must be in its cgroup before it
// allocates, since charges do not move with a migrated process; and the
// port-sharing seccomp filter must be installed by the worker itself.
// args are [path, argv0, argv1...]. It returns only on failure, with the
// exit code a shell would give.
func runShim(opts string, args []string, stderr io.Writer) int {
	o, err := parseShimOptions(opts)
	if err != nil || len(args) < 2 {
		fmt.Fprintf(stderr, "goinit shim: %v (%s=%q is internal to goinit; do not set it)\n", err, shimEnv, opts)
		return 2
	}
	if o.syncFD > 0 {
		sync := os.NewFile(uintptr(o.syncFD), "sync")
		var b [1]byte
		if n, err := sync.Read(b[:]); n != 1 {
			// The parent died or could not place us: never run unlimited.
			fmt.Fprintf(stderr, "goinit: worker was not placed in its cgroup (%v); not starting it\n", err)
			return 125
		}
		sync.Close()
	}
	if o.oomScore >= -1000 {
		// Raising our own score needs no privilege; failure only costs the
		// protection of goinit, so it is not fatal.
		_ = os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(o.oomScore)), 0)
	}
	env := os.Environ()
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, shimEnv+"=") && !(o.listen && strings.HasPrefix(kv, "LISTEN_PID=")) {
			out = append(out, kv)
		}
	}
	if o.listen {
		out = append(out, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	if o.pdeath > 0 {
		// The parent-death signal belongs to the thread that set it,
		// the one the parent forked, and an exec keeps only the exec'ing
		// thread's, which this one may not be: set it again here, on a
		// thread locked until the exec. Until then the forked thread's
		// still covers the whole process.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(o.pdeath), 0, 0, 0); err != nil {
			fmt.Fprintf(stderr, "goinit: prctl(PR_SET_PDEATHSIG): %v; not starting the worker, which could outlive goinit\n", err)
			return 125
		}
	}
	if o.shareFD > 0 {
		// The filter belongs to this thread, which InstallFilter locks:
		// nothing may run between it and the exec below.
		if err := portshare.InstallFilter(o.shareFD); err != nil {
			fmt.Fprintf(stderr, "goinit: cannot share ports for this worker: %v (--share-ports=off turns sharing off)\n", err)
			return 125
		}
	}
	err = execCommand(args[0], o.exeFD, args[1:], out)
	code := 126
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		code = 127
	}
	fmt.Fprintf(stderr, "goinit: cannot run %s: %v\n", args[0], err)
	return code
}
