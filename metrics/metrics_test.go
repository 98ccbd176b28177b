package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

// requireTool returns the path of a command the test needs; it skips
// without it, except under CI, where scripts/install-deps.sh installs it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; scripts/install-deps.sh installs it (Debian package prometheus)", name)
		}
		t.Skipf("%s not found (apt-get install prometheus)", name)
	}
	return p
}

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
	cmd := exec.Command(requireTool(t, "promtool"), "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\ninput:\n%s", err, b, out)
	}
}

// TestPrometheusScrape starts Debian's prometheus on loopback, lets it
// scrape a server that serves Write's output, and asks its query API for a
// value only that output contains.
func TestPrometheusScrape(t *testing.T) {
	bin := requireTool(t, "prometheus")
	snap := statetest.Sample(time.Now())
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		if err := Write(w, snap, map[uint64]uint64{4242: 3}); err != nil {
			t.Error(err)
		}
	}))
	defer target.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: goinit
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(target.URL, "http://")), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	}()

	q := url.Values{"query": {`goinit_process_restarts_total{job="goinit",worker="2",reason="oom"}`}}
	api := "http://" + addr + "/api/v1/query?" + q.Encode()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if v, err := queryValue(client, api); err != nil {
			last = err.Error()
		} else if v == "3" {
			return
		} else {
			last = "value " + v
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("prometheus never returned the scraped value 3 within 60s; last: %s", last)
}

// queryValue returns the value of the single sample a /api/v1/query
// answer holds.
func queryValue(c *http.Client, api string) (string, error) {
	resp, err := c.Get(api)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", fmt.Errorf("decode query answer: %w", err)
	}
	if r.Status != "success" || len(r.Data.Result) != 1 {
		return "", fmt.Errorf("status %q, %d results", r.Status, len(r.Data.Result))
	}
	v, _ := r.Data.Result[0].Value[1].(string)
	return v, nil
}

// freePort returns a loopback address nobody listens on right now. The
// kernel picks it; prometheus binds it a moment later.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
