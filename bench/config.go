package bench

import (
	"fmt"
	"io"
	"time"
)

// Mode selects how many runs and how long each load lasts.
type Mode int

const (
	// Full is `make bench`: every figure with enough runs to trust the
	// medians; about 9 minutes on 2 cores.
	Full Mode = iota
	// Quick is BENCH_QUICK=1: every figure, few and short runs; about a
	// minute and a half. Good for seeing the shape, not for quoting numbers.
	Quick
	// Tiny is what `go test` runs: one short run of everything, to check the
	// harness still works. Its numbers mean nothing.
	Tiny
)

// String returns the name ParseMode accepts.
func (m Mode) String() string {
	switch m {
	case Full:
		return "full"
	case Quick:
		return "quick"
	case Tiny:
		return "tiny"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode returns the Mode named s: "full", "quick" or "tiny".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Full, Quick, Tiny} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q: want full, quick or tiny", s)
}

// Plan is how many times, and how long, each figure is measured.
type Plan struct {
	// StartRuns is the number of runs of `X -- true` per contender.
	StartRuns int
	// SignalRuns is the number of SIGTERM round trips per contender.
	SignalRuns int
	// RSSRuns is the number of fresh starts per contender for idle RSS.
	RSSRuns int
	// Settle is how long a supervisor idles before its RSS is read.
	Settle time.Duration
	// StormOrphans is the number of orphans released at once.
	StormOrphans int
	// StormRuns is the number of storms per contender.
	StormRuns int
	// Workers is the number of workers in the throughput and fault runs.
	Workers int
	// IdleWorkers is the number of workers for the idle-RSS figure.
	IdleWorkers int
	// LoadReps is the number of fresh starts of each cluster contender;
	// each runs one keep-alive and one connection-per-request load.
	LoadReps int
	// LoadDuration is the length of each wrk run.
	LoadDuration time.Duration
	// Warmup, if not zero, is a wrk run before the measured ones, so that
	// Node's JIT has compiled the handler.
	Warmup time.Duration
	// Threads and Connections are wrk's -t and -c.
	Threads, Connections int
	// RestartKills is the number of workers killed, one at a time, in each
	// throughput start to time their replacement.
	RestartKills int
	// FaultReps is the number of fault runs per contender.
	FaultReps int
	// FaultDuration is the length of the load during which workers are
	// killed, and FaultEvery the time between two kills.
	FaultDuration, FaultEvery time.Duration
	// ReloadReps is the number of reloads per contender and release (a
	// good one and one that exits at start), each on a fresh start.
	ReloadReps int
	// ReloadLead is how long the load runs before the reload is asked
	// for, and ReloadTail how long it goes on after a good reload
	// reported success, while the old workers drain.
	ReloadLead, ReloadTail time.Duration
	// ReloadAfter is the load after a bad release's reload reported,
	// whatever it reported: is the app still served?
	ReloadAfter time.Duration
	// ReloadTimeout bounds the wait for a reload to report; a reload of two
	// Node workers takes about a second.
	ReloadTimeout time.Duration
}

// PlanFor returns the plan of mode m.
func PlanFor(m Mode) Plan {
	switch m {
	case Quick:
		return Plan{
			StartRuns: 40, SignalRuns: 40, RSSRuns: 1, Settle: 300 * time.Millisecond,
			StormOrphans: 1000, StormRuns: 2,
			Workers: 2, IdleWorkers: 8,
			LoadReps: 1, LoadDuration: time.Second, Warmup: 0,
			Threads: 2, Connections: 32, RestartKills: 1,
			FaultReps: 1, FaultDuration: 3 * time.Second, FaultEvery: time.Second,
			ReloadReps: 1, ReloadLead: time.Second, ReloadTail: time.Second,
			ReloadAfter: 5 * time.Second, ReloadTimeout: 30 * time.Second,
		}
	case Tiny:
		return Plan{
			StartRuns: 3, SignalRuns: 3, RSSRuns: 1, Settle: 100 * time.Millisecond,
			StormOrphans: 50, StormRuns: 1,
			Workers: 2, IdleWorkers: 2,
			LoadReps: 1, LoadDuration: time.Second, Warmup: 0,
			Threads: 1, Connections: 4, RestartKills: 1,
			FaultReps: 1, FaultDuration: time.Second, FaultEvery: 500 * time.Millisecond,
			ReloadReps: 1, ReloadLead: 500 * time.Millisecond, ReloadTail: 500 * time.Millisecond,
			ReloadAfter: time.Second, ReloadTimeout: 30 * time.Second,
		}
	}
	return Plan{
		StartRuns: 200, SignalRuns: 200, RSSRuns: 3, Settle: time.Second,
		StormOrphans: 3000, StormRuns: 5,
		Workers: 2, IdleWorkers: 8,
		LoadReps: 3, LoadDuration: 5 * time.Second, Warmup: time.Second,
		Threads: 2, Connections: 64, RestartKills: 2,
		FaultReps: 2, FaultDuration: 10 * time.Second, FaultEvery: time.Second,
		ReloadReps: 3, ReloadLead: time.Second, ReloadTail: 2 * time.Second,
		ReloadAfter: 5 * time.Second, ReloadTimeout: 30 * time.Second,
	}
}

// Config says what to measure and where everything is.
type Config struct {
	// Mode names the plan, for the report's header.
	Mode Mode
	// Plan is the number and length of runs; PlanFor(Mode) unless changed.
	Plan Plan
	// Root is the repository root: goinit is built from Root/init and the
	// example servers are found under Root/examples.
	Root string
	// Cache is where binaries are built and pm2 is installed; default
	// Root/.cache.
	Cache string
	// RequireAll makes a missing peer (tini, dumb-init, wrk, node, pm2, an
	// example server) an error. When false, the contenders that need it are
	// left out and a note says so.
	RequireAll bool
	// Log receives one line per step, for a person watching; nil discards.
	Log io.Writer
	// Only names the sections to run ("init cost", "signal latency",
	// "reaping", "cluster throughput", "faults under load", "reload under
	// load"); empty runs
	// every one.
	Only []string
}

// NewConfig returns the configuration for mode m with the repository at
// root, everything else at its default.
func NewConfig(m Mode, root string) Config {
	return Config{Mode: m, Plan: PlanFor(m), Root: root, RequireAll: true}
}
