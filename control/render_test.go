package control

import (
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/state/statetest"
)

func TestRenderStatus(t *testing.T) {
	now := time.Now()
	out := string(renderStatus(statetest.Sample(now), now))
	t.Log("\n" + out)
	for _, want := range []string{
		"goinit v1.2.3-test (go",
		"pid 1, running for 1m30s; 2 of 3 workers ready (--min-ready 1)",
		"ROLE    ID  PID  STATE        READY  UPTIME  RESTARTS  MEMORY   CPU    LAST EXIT",
		"agent   -   10   ready        yes    1m30s   0         12.0MiB  0.25s  -",
		"worker  1   15   ready        yes    5s      2         60.0MiB  1.50s  signal KILL: killed by signal KILL",
		"reloads: 2 succeeded, 1 rolled back; orphans reaped: 7; messages: 100 relayed, 7 dropped",
		"sockets: tcp://0.0.0.0:8080",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 256 << 20: "256.0MiB", 3 << 30: "3.0GiB"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}
