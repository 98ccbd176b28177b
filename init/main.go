// Command goinit is a container init: it runs as PID 1, reaps every zombie,
// forwards signals, runs one command or a pool of workers sharing listening
// sockets, and exits with the status of what it ran.
//
//	goinit [flags] -- COMMAND [ARG...]
//
// See README.md for every flag, variable and exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/control"
	"github.com/goinit/goinit/reaper"
	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/worklog"
)

// version is stamped at build time from git describe.
var version = "dev"

// Exit codes of goinit's own (the child's status passes through otherwise).
const (
	exitUsage    = 2   // bad flag, variable or value
	exitInternal = 125 // goinit itself failed at run time, like docker run
)

func main() {
	if opts, ok := os.LookupEnv(shimEnv); ok {
		os.Exit(runShim(opts, os.Args[1:], os.Stderr))
	}
	// `goinit status` and friends: the same binary is the client of a
	// running goinit's control socket. PID 1 is never the client: as PID
	// 1, `goinit top` runs a command named top (as `goinit -- top` does
	// anywhere).
	if len(os.Args) > 1 && control.IsCommand(os.Args[1]) && os.Getpid() != 1 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
		code := control.RunCLI(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is goinit without the process around it: it returns the exit code.
func run(args, environ []string, stdout, stderr io.Writer) int {
	f := newFlags()
	if err := f.parse(args, environ); err != nil {
		return fail(stderr, err)
	}
	if f.help {
		printHelp(stdout, f)
		return 0
	}
	if f.version {
		fmt.Fprintf(stdout, "goinit %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	}
	cfg, err := f.config(availableCPUs)
	if err != nil {
		return fail(stderr, err)
	}
	var logs *worklog.Logs
	if cfg.clusterMode && cfg.workerLogs != worklog.Inherit {
		// goinit's own lines go through the same writer as the workers'
		// lines, so that no two lines ever interleave.
		if logs, err = worklog.New(cfg.workerLogs, stdout, stderr, worklog.Options{}); err != nil {
			return fail(stderr, err)
		}
		stderr = logs.Stderr()
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			logs.Close(ctx)
		}()
	}
	log := newLogger(cfg, stderr)
	if cfg.workersHow != "" {
		log.Info(fmt.Sprintf("--workers=auto: %d workers (%s)", cfg.workers, cfg.workersHow))
	}
	if cfg.path, err = resolveCommand(cfg.command[0]); err != nil {
		log.Error(err.Error())
		return exitCode(err)
	}
	if cfg.agent != nil {
		if cfg.agentPath, err = resolveCommand(cfg.agent[0]); err != nil {
			log.Error("--agent: " + err.Error())
			return exitCode(err)
		}
	}

	// Catch every forwardable signal before the first fork, so none is
	// lost between the child's start and the loop.
	sigc := make(chan os.Signal, 64)
	urg := forwardsURG()
	// No signal.Stop: goinit exits right after the loop, and undoing ~60
	// handlers costs a runtime round trip each.
	signal.Notify(sigc, signals.Forwardable(urg)...)
	if !urg {
		log.Debug("SIGURG is not forwarded: this goinit was not built with asynchronous preemption off (make build does that), so its Go runtime sends SIGURG to itself")
	}

	if err := prepareProcess(cfg, log); err != nil {
		log.Error(err.Error())
		return exitInternal
	}
	env, cleanup, err := prepareWorkers(cfg, log)
	defer cleanup()
	if err != nil {
		return fail(stderr, err)
	}

	dir, err := leaveWorkingDirectory()
	if err != nil {
		log.Error(err.Error())
		return exitInternal
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New(log)
	if cfg.logReaped {
		r.LogOrphansAt(slog.LevelWarn)
	}
	reaped := make(chan error, 1)
	go func() { reaped <- r.Run(ctx) }()

	self, err := os.Executable()
	if err != nil {
		log.Error(fmt.Sprintf("cannot find goinit's own executable: %v", err))
		return exitInternal
	}
	sup := newSupervisor(cfg, log, r, sigc, env, self, dir, logs)
	if err := operate(ctx, cfg, log, sup, env, logs); err != nil {
		log.Error(err.Error())
		return exitCode(err)
	}
	code := sup.run(ctx)
	cancel()
	if err := <-reaped; err != nil && !errors.Is(err, context.Canceled) {
		log.Error("reaper failed", "err", err)
	}
	return code
}

// godebugDefault is the default GODEBUG the release build gave the Go
// runtime (signals.PreemptOffLDFlags sets both).
var godebugDefault string

// forwardsURG reports whether this goinit's Go runtime leaves SIGURG alone,
// from the defaults it was built with and the GODEBUG it runs with: only
// then is every SIGURG it receives one to forward.
func forwardsURG() bool {
	return signals.AsyncPreemptOff(godebugDefault, os.Getenv("GODEBUG"))
}

// fail prints a start-up error as one line and returns its exit code.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "goinit: %v\n", err)
	return exitCode(err)
}

// exitCode maps goinit's own errors to exit codes in one place.
func exitCode(err error) int {
	var ue *usageError
	var se *cluster.StartError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &se):
		return se.Code
	}
	return exitInternal
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.logLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("prog", "goinit")
}

// prepareProcess sets up goinit itself before any child exists.
func prepareProcess(cfg *config, log *slog.Logger) error {
	// fds inherited from whoever started goinit must not leak into the
	// child: mark them close-on-exec. os/exec passes 0-2 and ExtraFiles
	// explicitly.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Debug("close_range unavailable; inherited fds may leak", "err", err)
	}
	resetIgnoredReserved()
	if os.Getpid() != 1 {
		if err := reaper.BecomeSubreaper(); err != nil {
			return err
		}
		log.Debug("not PID 1: registered as child subreaper, so orphans of the child are reaped here")
	}
	if cfg.pdeathsig != 0 {
		// The parent-death signal belongs to the thread that sets it.
		parent := os.Getppid()
		runtime.LockOSThread()
		err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(cfg.pdeathsig), 0, 0, 0)
		runtime.UnlockOSThread()
		if err != nil {
			return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
		}
		if os.Getppid() != parent {
			// The parent died before the prctl took effect: the kernel
			// will never send the signal, so send it ourselves.
			_ = unix.Kill(os.Getpid(), cfg.pdeathsig)
		}
	}
	return nil
}

// leaveWorkingDirectory moves goinit to / and returns the directory it was
// started in, where every child still starts. PID 1 lives as long as the
// container: holding its start directory would keep that directory, and
// the mount it is on, busy for the container's whole life (dumb-init's
// rule). It runs after everything that resolves a relative path (the
// command, unix socket addresses) has done so.
func leaveWorkingDirectory() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("cannot find goinit's working directory: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return "", fmt.Errorf("cannot move goinit to /: %w", err)
	}
	return dir, nil
}

// withoutChannelEnv drops, from the workers' environment, the channel and
// notify variables goinit replaces with each worker's own: an inherited
// NODE_CHANNEL_FD would name a descriptor the worker does not have.
func withoutChannelEnv(env []string, io *procIO) []string {
	if io == nil {
		return env
	}
	drop := []string{"NODE_CHANNEL_FD=", "NODE_CHANNEL_SERIALIZATION_MODE=", "GOINIT_IPC_FD="}
	if io.notify != nil {
		drop = append(drop, "NOTIFY_SOCKET=")
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !slices.ContainsFunc(drop, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			out = append(out, kv)
		}
	}
	return out
}

// ownsTerminal reports whether stdin is a terminal whose foreground is
// goinit's process group: then the child gets the terminal, so that Ctrl-C
// reaches it as it would from a shell.
func ownsTerminal() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
