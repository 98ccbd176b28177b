package cluster_test

import (
	"fmt"
	"time"

	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/reaper"
)

// The supervisor drives a Pool from its loop: it starts the slots, feeds
// every reaped exit to HandleExit, and calls Due when NextStart comes.
// Time is a parameter, so the schedule below is exact.
func ExamplePool() {
	pids := 100
	start := func(id, release int) (int, error) { pids++; return pids, nil }
	policy := cluster.DefaultPolicy(cluster.RestartOnFailure)
	policy.Jitter = 0
	p := cluster.New(cluster.Config{Workers: 2, Policy: policy, Start: start})

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.Start(t0)
	p.HandleExit(102, reaper.ExitStatus(1), t0.Add(time.Second)) // worker 1 crashed
	next, _ := p.NextStart()
	fmt.Println("restart due after", next.Sub(t0))
	p.Due(next)
	for _, s := range p.Slots() {
		fmt.Println("worker", s.ID, s.State, "pid", s.Pid, "restarts", s.Restarts)
	}
	// Output:
	// restart due after 1.1s
	// worker 0 running pid 101 restarts 0
	// worker 1 running pid 103 restarts 1
}
