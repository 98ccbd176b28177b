package metrics

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

func render(t *testing.T, s *state.Snapshot, queues map[uint64]uint64) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, s, queues); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestSeries(t *testing.T) {
	out := render(t, statetest.Sample(time.Now()), map[uint64]uint64{4242: 9})
	for _, want := range []string{
		`goinit_build_info{version="v1.2.3-test",goversion="go`,
		`goinit_phase{phase="running"} 1`,
		`goinit_phase{phase="stopping"} 0`,
		`goinit_processes{role="worker",state="ready"} 2`,
		`goinit_processes{role="worker",state="backing-off"} 1`,
		`goinit_processes{role="agent",state="ready"} 1`,
		`goinit_ready_workers 2`,
		`goinit_process_restarts_total{role="worker",worker="2",reason="oom"} 3`,
		`goinit_process_restarts_total{role="worker",worker="1",reason="signal"} 1`,
		`goinit_process_oom_kills_total{role="worker",worker="2"} 3`,
		`goinit_process_memory_bytes{role="worker",worker="0"} 67108864`,
		`goinit_process_cpu_seconds_total{role="agent",worker="agent"} 0.25`,
		`goinit_reloads_total{result="rolled-back"} 1`,
		`goinit_messages_dropped_total{reason="queue-full"} 5`,
		`goinit_orphans_reaped_total 7`,
		`goinit_socket_accept_queue_length{address="tcp://0.0.0.0:8080",worker="shared"} 9`,
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if strings.Contains(out, `goinit_process_start_time_seconds{role="worker",worker="2"}`) {
		t.Error("a slot with no live process has a start time")
	}
}

func TestEscaping(t *testing.T) {
	s := statetest.Sample(time.Now())
	s.Version = "a\"b\\c\nd"
	out := render(t, s, nil)
	if want := `goinit_build_info{version="a\"b\\c\nd",`; !strings.Contains(out, want) {
		t.Fatalf("label not escaped: want %s in\n%s", want, out)
	}
	checkMetrics(t, out)
}

// TestPromtool: Prometheus's own linter accepts the output, for a pool and
// for a single command before anything has happened.
func TestPromtool(t *testing.T) {
	checkMetrics(t, render(t, statetest.Sample(time.Now()), map[uint64]uint64{4242: 0}))
	checkMetrics(t, render(t, &state.Snapshot{Phase: state.PhaseStarting,
		Processes: []state.Process{{Role: state.RoleCommand, State: state.StateStarting}}}, nil))
}

func checkMetrics(t *testing.T, out string) {
	t.Helper()
	cmd := exec.Command(testbin.Tool(t, "promtool"), "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\ninput:\n%s", err, b, out)
	}
}
