package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/goinit/goinit/health"
	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

// TestPrometheusScrape starts Debian's prometheus on loopback, lets it
// scrape goinit's own endpoint server (health, which answers /metrics with
// [metrics.Write] in a hand-written HTTP/1.1 responder), and asks its
// query API for a value only that output contains. Prometheus scrapes with
// HTTP/1.1 keep-alive and Accept-Encoding: gzip; goinit answers each with
// Connection: close and no compression.
func TestPrometheusScrape(t *testing.T) {
	bin := testbin.Tool(t, "prometheus")
	var pub state.Publisher
	pub.Publish(statetest.Sample(time.Now()))
	ln, err := health.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- health.New(health.Options{Snapshot: pub.Load,
			Queues: func() (map[uint64]uint64, error) { return map[uint64]uint64{4242: 3}, nil }}).Serve(srvCtx, ln)
	}()
	defer func() {
		stopSrv()
		if err := <-served; err != nil {
			t.Errorf("health Serve: %v", err)
		}
	}()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: goinit
    static_configs:
      - targets: [%q]
`, ln.Addr().String()), 0o644); err != nil {
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

	// up is 1 only for a scrape Prometheus parsed; the restart count
	// proves the series arrived with their labels.
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for _, q := range []struct{ query, want string }{
		{`up{job="goinit"}`, "1"},
		{`goinit_process_restarts_total{job="goinit",worker="2",reason="oom"}`, "3"},
	} {
		query, want := q.query, q.want
		api := "http://" + addr + "/api/v1/query?" + url.Values{"query": {query}}.Encode()
		for {
			v, err := queryValue(client, api)
			if err == nil && v == want {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = "value " + v
			}
			if time.Now().After(deadline) {
				t.Fatalf("prometheus never returned %s for %s within 60s; last: %s", want, query, last)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
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

// freePort returns a loopback address nobody listens on right now;
// prometheus binds it a moment later.
func freePort(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
}
