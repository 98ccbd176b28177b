package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// served is what a worker of the agent example answers on GET /config.
type served struct {
	Worker string `json:"worker"`
	PID    int    `json:"pid"`
	Config *struct {
		Version int `json:"version"`
		Agent   int `json:"agent"`
	} `json:"config"`
}

// TestAgentExample runs each pair of examples/agent, the Node one
// (process.send only) and the Go one (the standard library on
// $GOINIT_IPC_FD), as `goinit --workers=2 --agent=AGENT -- APP` with goinit
// as PID 1 of a new PID namespace with its own /proc, as in a container.
// Every worker serves the config of the running agent, the same version on
// both, and the version advances; after the agent is SIGKILLed the workers
// keep answering, goinit starts a new agent without restarting them, and
// they serve the new agent's versions.
func TestAgentExample(t *testing.T) {
	t.Run("node", func(t *testing.T) {
		// nodeScript looks in examples/nodeserver; the example is beside it.
		app := nodeScript(t, filepath.Join("..", "agent", "node", "app.js"))
		agent := filepath.Join(filepath.Dir(app[1]), "agent.js")
		runAgentExample(t, shellQuote(app[0])+" "+shellQuote(agent), app)
	})
	t.Run("go", func(t *testing.T) {
		agent := testbin.Build(t, "./examples/agent/go/agent")
		app := testbin.Build(t, "./examples/agent/go/app")
		runAgentExample(t, shellQuote(agent), []string{app})
	})
}

func runAgentExample(t *testing.T, agent string, app []string) {
	port := testbin.FreePort(t)
	// A tick of 200 ms lets a burst of requests see both workers between
	// two versions, even on a busy machine.
	cmd := goinitPID1(t, []string{"PORT=" + strconv.Itoa(port), "INTERVAL_MS=200"},
		append([]string{"--workers=2", "--ready=message", "--agent=" + agent, "--restart-delay=50ms", "--stop-timeout=5s", "--"}, app...)...)
	p := start(t, cmd)
	sup := cmd.Process.Pid // procns execs goinit

	workers := map[string]int{} // worker id -> pid, as the workers log it
	for range 2 {
		m := p.waitLine(t, servingOn)
		pid, _ := strconv.Atoi(m[2])
		workers[m[1]] = pid
	}
	if len(workers) != 2 {
		t.Fatalf("serving workers %v, want ids 0 and 1", workers)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	host, first := agentPid(t, sup, 0)
	v := waitSameConfig(t, addr, workers, first, 0)
	waitSameConfig(t, addr, workers, first, v)

	if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL the agent (host pid %d): %v", host, err)
	}
	// Right away, before its successor: the workers still answer (any
	// config, any agent) and none was restarted.
	for id, s := range askAll(t, addr, workers) {
		if s.Config == nil {
			t.Errorf("worker %s lost its config when the agent died", id)
		}
	}
	_, second := agentPid(t, sup, first)
	v = waitSameConfig(t, addr, workers, second, 0)
	waitSameConfig(t, addr, workers, second, v)

	p.stop(t)
}

// waitSameConfig asks every worker until all serve the same config
// version, above after, from the agent whose pid (in goinit's namespace) is
// agent, and returns that version. A worker whose pid is not the one in
// workers, or a failed request, fails the test.
func waitSameConfig(t *testing.T, addr string, workers map[string]int, agent, after int) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]served
	for time.Now().Before(deadline) {
		last = askAll(t, addr, workers)
		version := -1
		for _, s := range last {
			switch {
			case s.Config == nil || s.Config.Agent != agent || s.Config.Version <= after:
				version = -1
			case version == -1 || version == s.Config.Version:
				version = s.Config.Version
			default:
				version = -2 // two versions: ask again
			}
			if version < 0 {
				break
			}
		}
		if version > 0 {
			return version
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("within %s the workers did not all serve one config version above %d from agent pid %d; last answers %+v", timeout, after, agent, last)
	return 0
}

// askAll asks GET /config over new connections, in small concurrent bursts
// (one idle worker tends to win every sequential accept of a shared
// socket), until every worker in workers has answered, and returns the
// latest answer of each.
func askAll(t *testing.T, addr string, workers map[string]int) map[string]served {
	t.Helper()
	got := map[string]served{}
	inBursts(t, "http://"+addr+"/config", func(body []byte) {
		var s served
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("GET http://%s/config = %q: %v", addr, body, err)
		}
		if pid, ok := workers[s.Worker]; !ok || pid != s.PID {
			t.Fatalf("GET http://%s/config answered by worker %q pid %d; the workers are %v (a worker was restarted?)", addr, s.Worker, s.PID, workers)
		}
		got[s.Worker] = s
	}, func() bool { return len(got) == len(workers) })
	if len(got) < len(workers) {
		t.Fatalf("on %s only workers %v answered within 200 requests; want all of %v", addr, got, workers)
	}
	return got
}

// agentPid waits until goinit (host pid sup) has a child whose environment
// says GOINIT_ROLE=agent and whose pid in goinit's namespace is not
// previous, and returns its host pid and its pid in the namespace.
func agentPid(t *testing.T, sup, previous int) (host, ns int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, pid := range childrenOf(t, sup) {
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil || !bytes.Contains(env, []byte("\x00GOINIT_ROLE=agent\x00")) {
				continue // gone already, or a worker
			}
			if n := nsPid(pid); n > 0 && n != previous {
				return pid, n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("goinit (pid %d) has no agent other than pid %d after %s", sup, previous, timeout)
	return 0, 0
}

// nsPid returns the pid of host process pid in the innermost PID namespace
// it is in, or 0 if it is gone.
func nsPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// shellQuote quotes s for --agent, which goinit splits by shell word rules.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
