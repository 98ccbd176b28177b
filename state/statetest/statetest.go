// Package statetest builds sample snapshots for the tests of the packages
// that read them (metrics, health, control), so each test starts from the
// same realistic pool instead of its own copy of one.
package statetest

import (
	"runtime"
	"time"

	"github.com/goinit/goinit/state"
)

// Sample returns a snapshot of a running pool taken at now: an agent, three
// workers (two ready, one backing off after an OOM kill) and a shared TCP
// socket with inode 4242. Every call returns a fresh value the caller may
// change before publishing it.
func Sample(now time.Time) *state.Snapshot {
	started := now.Add(-90 * time.Second)
	return &state.Snapshot{
		Version:   "v1.2.3-test",
		GoVersion: runtime.Version(),
		PID:       1,
		Started:   started,
		Phase:     state.PhaseRunning,
		Taken:     now,
		Processes: []state.Process{
			{Role: state.RoleAgent, PID: 10, State: state.StateReady, Ready: true, Started: started,
				HasCgroup: true, MemoryBytes: 12 << 20, CPUSeconds: 0.25},
			{Role: state.RoleWorker, ID: 0, PID: 11, State: state.StateReady, Ready: true, Started: started,
				HasCgroup: true, MemoryBytes: 64 << 20, CPUSeconds: 3.5},
			{Role: state.RoleWorker, ID: 1, PID: 15, State: state.StateReady, Ready: true, Started: now.Add(-5 * time.Second),
				Restarts: state.Restarts{Exit: 1, Signal: 1}, LastExit: "signal KILL", LastReason: "killed by signal KILL",
				HasCgroup: true, MemoryBytes: 60 << 20, CPUSeconds: 1.5},
			{Role: state.RoleWorker, ID: 2, State: state.StateBackingOff,
				Restarts: state.Restarts{OOM: 3}, OOMKills: 3,
				LastExit: "signal KILL", LastReason: "killed by the OOM killer (memory limit 256MiB)", HasCgroup: true},
		},
		Pool:          state.Pool{Workers: 3, MinReady: 1},
		OrphansReaped: 7,
		Reloads:       state.Reloads{Succeeded: 2, RolledBack: 1},
		Messages:      state.Messages{Relayed: 100, Invalid: 2, QueueFull: 5},
		Sockets:       []state.Socket{{Address: "tcp://0.0.0.0:8080", Worker: -1, Inode: 4242}},
	}
}
