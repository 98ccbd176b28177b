package state

import (
	"sync"
	"testing"
)

// TestPublisherConcurrent publishes from one goroutine (the supervisor) while
// others read; run with -race, it proves readers need no lock.
func TestPublisherConcurrent(t *testing.T) {
	var p Publisher
	if p.Load() != nil {
		t.Fatal("zero Publisher returned a snapshot")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := -1
			for last < 999 {
				s := p.Load()
				if s == nil {
					continue
				}
				if s.PID < last {
					t.Errorf("snapshot went back from %d to %d", last, s.PID)
					return
				}
				last = s.PID
			}
		}()
	}
	for i := range 1000 {
		p.Publish(&Snapshot{PID: i})
	}
	wg.Wait()
}

func TestReadyWorkers(t *testing.T) {
	s := &Snapshot{Processes: []Process{
		{Role: RoleAgent, Ready: true},
		{Role: RoleWorker, ID: 0, Ready: true},
		{Role: RoleWorker, ID: 1, Ready: false},
		{Role: RoleWorker, ID: 2, Ready: true},
	}}
	if got := s.ReadyWorkers(); got != 2 {
		t.Fatalf("ReadyWorkers = %d, want 2 (the agent does not count)", got)
	}
	if got := (Process{Role: RoleWorker, ID: 12}).Name(); got != "worker 12" {
		t.Fatalf("Name = %q", got)
	}
}
