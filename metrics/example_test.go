package metrics_test

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/goinit/goinit/metrics"
	"github.com/goinit/goinit/state"
)

// A /metrics handler writes the latest published snapshot; here a single
// command that restarted once after a crash.
func ExampleWrite() {
	snap := &state.Snapshot{
		Version: "v1.0.0", GoVersion: "go1.26.8", Phase: state.PhaseRunning,
		Processes: []state.Process{{Role: state.RoleCommand, PID: 7, State: state.StateRunning, Ready: true,
			Restarts: state.Restarts{Exit: 1}}},
	}
	var b bytes.Buffer
	if err := metrics.Write(&b, snap, nil); err != nil {
		panic(err)
	}
	sc := bufio.NewScanner(&b)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "goinit_build_info") || strings.HasPrefix(l, "goinit_ready") ||
			strings.HasPrefix(l, `goinit_process_restarts_total{role="command",worker="command",reason="exit"}`) {
			fmt.Println(l)
		}
	}
	// Output:
	// goinit_build_info{version="v1.0.0",goversion="go1.26.8"} 1
	// goinit_ready_workers 1
	// goinit_process_restarts_total{role="command",worker="command",reason="exit"} 1
}
