package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/state"
)

// agentWorkerApp is one Node program for both roles, unmodified-style:
// process.send and process.on('message') only.
const agentWorkerApp = `const role = process.env.GOINIT_ROLE, id = process.env.GOINIT_WORKER_ID;
const me = role === 'agent' ? 'agent' : 'worker ' + id;
console.log(me + ' up, role ' + role);
process.on('message', m => console.log(me + ' got ' + JSON.stringify(m)));
process.on('SIGTERM', () => { console.log(me + ' got TERM'); setTimeout(() => { console.log(me + ' exiting'); process.exit(0); }, role === 'agent' ? 0 : 300); });
if (role === 'agent') {
  setTimeout(() => { console.log('agent says ready'); process.send('ready'); }, 300);
  let seq = 0;
  setInterval(() => { seq++; process.send({to: 'workers', data: {seq}}); }, 50);
} else {
  process.send('ready');
  setInterval(() => process.send({to: 'agent', data: {from: Number(id)}}), 100);
}
setInterval(() => {}, 1000);
`

// TestAgent runs an agent beside 2 workers: the agent is ready before any
// worker starts, each process knows its role, the agent hears worker
// events, messages flow both ways, a killed agent is restarted while the
// workers keep running, and on shutdown the workers stop before the agent.
func TestAgent(t *testing.T) {
	requireRoot(t)
	app := nodeScript(t, agentWorkerApp)
	p := start(t, runOpts{pid1: true}, "--workers=2", "--ready=message", "--agent=node '"+app+"'", "--restart-delay=50ms", "--", "node", app)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("worker 1 up, role worker", 20*time.Second)
	p.waitLine("worker 0 up, role worker", 20*time.Second)
	out := p.stdout()
	if a, w := strings.Index(out, "agent says ready"), strings.Index(out, "worker 0 up"); a < 0 || w < a {
		t.Fatalf("a worker started before the agent was ready:\n%s", out)
	}
	if !strings.Contains(out, "agent up, role agent") {
		t.Fatalf("the agent does not know its role:\n%s", out)
	}
	p.waitLine(`agent got {"from":0,"data":{"from":0}}`, 10*time.Second)
	p.waitLine(`agent got {"from":1,"data":{"from":1}}`, 10*time.Second)
	p.waitLine(`worker 0 got {"from":"agent","data":{"seq":`, 10*time.Second)
	p.waitLine(`worker 1 got {"from":"agent","data":{"seq":`, 10*time.Second)
	p.waitLine(`agent got {"from":"goinit","data":{"event":"worker-ready","id":1`, 10*time.Second)

	// Kill the agent: it is restarted, the workers are not, and they hear it.
	agent := pidOf(t, p.errText(), `agent started" prog=goinit role=agent pid=(\d+)`)
	syscall.Kill(hostPid(t, p.cmd.Process.Pid, agent), syscall.SIGKILL)
	waitLogN(t, p, "agent started", 2, 10*time.Second)
	p.waitLine(`worker 0 got {"from":"goinit","data":{"event":"agent-exit"`, 10*time.Second)
	waitLogN(t, p, "worker 0 started", 1, time.Second)
	if strings.Count(p.errText(), "worker 0 started") != 1 || strings.Count(p.errText(), "worker 1 started") != 1 {
		t.Fatalf("a worker restarted with the agent:\n%s", p.errText())
	}

	// Two TERMs, as `timeout` or a runtime may send: the agent still
	// stops only once the workers are gone.
	p.signal(syscall.SIGTERM)
	p.waitLine("worker 0 got TERM", 10*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := strings.Count(p.errText(), "agent started"); n != 2 {
		t.Fatalf("the agent started %d times, want 2 (first, after the SIGKILL): a stop signal reached it before its turn:\n%s", n, p.errText())
	}
	out = p.stdout()
	agentTerm := strings.Index(out, "agent got TERM")
	for _, w := range []string{"worker 0 exiting", "worker 1 exiting"} {
		if i := strings.Index(out, w); i < 0 || agentTerm < i {
			t.Fatalf("the agent got TERM before %q:\n%s", w, out)
		}
	}
}

// pidOf finds the last pid matched by re (one group) in s: the current
// process of a worker that restarted.
func pidOf(t *testing.T, s, re string) int {
	t.Helper()
	all := regexp.MustCompile(re).FindAllStringSubmatch(s, -1)
	if all == nil {
		t.Fatalf("no %q in:\n%s", re, s)
	}
	n, _ := strconv.Atoi(all[len(all)-1][1])
	return n
}

// TestAgentCrashLoop checks that an agent that keeps failing ends goinit
// with its status, as a worker's crash loop does, and that the workers,
// which wait for it, never start.
func TestAgentCrashLoop(t *testing.T) {
	requireRoot(t)
	code, stderr := runToEnd(t, runOpts{pid1: true}, "--workers=2", "--agent=sh -c 'exit 7'", "--agent-ready=message",
		"--max-restarts=2", "--restart-delay=10ms", "--", "sleep", "1000")
	if code != 7 || !strings.Contains(stderr, "agent is crash-looping") {
		t.Fatalf("exit %d, want 7 with a crash-loop line:\n%s", code, stderr)
	}
	if strings.Contains(stderr, "worker 0 started") {
		t.Fatalf("workers started without a ready agent:\n%s", stderr)
	}
}

// TestAgentMessagesWhileWorkersRestart has the agent send numbered
// messages to worker ids in turn while workers are SIGKILLed and
// restarted: a worker only ever gets messages addressed to its id, and
// never the same one twice.
func TestAgentMessagesWhileWorkersRestart(t *testing.T) {
	requireRoot(t)
	app := nodeScript(t, `const role = process.env.GOINIT_ROLE, id = process.env.GOINIT_WORKER_ID;
if (role === 'agent') {
  process.send('ready');
  let seq = 0;
  setInterval(() => { seq++; const to = seq % 3; process.send({to, data: {seq, to}}); if (seq % 7 === 0) process.send({to: 'random', data: {seq, to: 'random'}}); }, 5);
} else {
  process.send('ready');
  process.on('message', m => { if (m.from === 'agent') console.log('W' + id + ' pid ' + process.pid + ' seq ' + m.data.seq + ' for ' + m.data.to); });
}
setInterval(() => {}, 1000);
`)
	p := start(t, runOpts{pid1: true}, "--workers=3", "--ready=message", "--agent=node "+app, "--restart-delay=20ms", "--", "node", app)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("W2 pid", 20*time.Second)
	for i := range 3 {
		// Kill worker 1's current process once it is ready and the
		// agent's messages reach it, then wait for its restart.
		eventually(t, 20*time.Second, "worker 1 ready", func() bool {
			return strings.Count(p.errText(), "worker 1 (pid") >= 2*i+1 && strings.Count(p.errText(), "is ready") >= 4+i
		})
		w := pidOf(t, p.errText(), `worker 1 started" prog=goinit worker=1 pid=(\d+)`)
		var host int
		eventually(t, 10*time.Second, "worker 1's process", func() bool { host = hostPidOrZero(p.cmd.Process.Pid, w); return host > 0 })
		// Let messages reach this process before it is killed.
		mine := fmt.Sprintf("W1 pid %d seq", w)
		eventually(t, 10*time.Second, "messages to worker 1", func() bool { return strings.Count(p.stdout(), mine) >= 3 })
		syscall.Kill(host, syscall.SIGKILL)
		waitLogN(t, p, "worker 1 started", i+2, 20*time.Second)
	}
	re := regexp.MustCompile(`^W(\d) pid (\d+) seq (\d+) for (\w+)$`)
	delivered := func() int {
		n := 0
		for _, line := range strings.Split(p.stdout(), "\n") {
			if re.MatchString(line) {
				n++
			}
		}
		return n
	}
	// However slow the machine, a few hundred messages arrive in time.
	eventually(t, 20*time.Second, "100 messages delivered", func() bool { return delivered() >= 100 })
	seen := map[string]bool{}
	n := 0
	for _, line := range strings.Split(p.stdout(), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		if m[4] != m[1] && m[4] != "random" {
			t.Errorf("worker %s got a message for %s: %q", m[1], m[4], line)
		}
		key := m[3] + " " + m[4]
		if seen[key] {
			t.Errorf("message %s delivered twice: %q", key, line)
		}
		seen[key] = true
	}
	if n < 100 {
		t.Fatalf("only %d messages delivered:\n%s", n, p.errText())
	}
	if starts := strings.Count(p.errText(), "worker 1 started"); starts != 4 {
		t.Fatalf("worker 1 started %d times, want 4 (3 kills)", starts)
	}
	t.Logf("%d messages delivered while worker 1 was killed 3 times", n)
}

// TestAgentBadInput checks --agent's one-line errors.
func TestAgentBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--workers=2", "--agent=node 'unclosed", "--", "true"}, "--agent"},
		{[]string{"--agent=sleep 1", "--", "true"}, "add --workers"},
		{[]string{"--workers=2", "--agent-ready=exec", "--", "true"}, "there is no --agent"},
		{[]string{"--workers=2", "--agent=sleep 1", "--agent-ready=listen", "--", "true"}, "never listens on a shared port"},
		{[]string{"--workers=2", "--agent=/no/such/agent", "--", "true"}, "--agent: cannot run"},
		{[]string{"--workers=2", "--agent-memory-limit=64Mi", "--", "true"}, "there is no --agent"},
		{[]string{"--workers=2", "--agent=sleep 1", "--agent-cpu-limit=lots", "--", "true"}, "--agent-cpu-limit"},
	} {
		code, stderr := runToEnd(t, runOpts{}, c.args...)
		want := 2
		if strings.Contains(c.want, "cannot run") {
			want = 127
		}
		if code != want || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want %d and one line with %q", c.args, code, stderr, want, c.want)
		}
	}
}

// TestAgentLimits checks the --agent-*-limit flags: the agent runs in a
// cgroup of its own with its CPU and pids limits, its OOM kill is reported
// as such, counted in `goinit status`, and it is restarted, while the
// workers, under their own limit, keep running.
func TestAgentLimits(t *testing.T) {
	requireCgroupV1(t)
	testbin.Tool(t, "python3")
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	// The first agent outgrows its limit; its restart does not.
	agent := `python3 -c 'import os, sys, time; f = sys.argv[1]; first = not os.path.exists(f); open(f, "w").close(); time.sleep(0.5); b = bytearray((64 if first else 1) << 20); time.sleep(1000)' ` +
		filepath.Join(dir, "started")
	p := start(t, runOpts{pid1: true}, "--workers=2", "--memory-limit=128Mi", "--agent="+agent, "--agent-memory-limit=32Mi",
		"--agent-cpu-limit=0.5", "--agent-pids-limit=16", "--control="+sock,
		"--agent-ready=exec", "--restart-delay=50ms", "--", "sleep", "1000")
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	waitLogN(t, p, "agent limits: memory 32MiB", 1, 10*time.Second)
	var agentPid int
	eventually(t, 10*time.Second, "the agent process", func() bool {
		for k := range descendants(p.cmd.Process.Pid) {
			// Not goinit's shim, whose argv ends in the agent's.
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); strings.HasSuffix(strings.Split(string(b), "\x00")[0], "python3") {
				agentPid = k
				return true
			}
		}
		return false
	})
	cpuDir, pidsDir := v1Dir(t, agentPid, "cpu"), v1Dir(t, agentPid, "pids")
	if !strings.HasSuffix(cpuDir, "/agent") {
		t.Errorf("the agent's cpu cgroup is %s, want one named agent", cpuDir)
	}
	if q := readInt(t, cpuDir+"/cpu.cfs_quota_us"); q != 50000 {
		t.Errorf("agent cpu.cfs_quota_us = %d, want 50000 for --agent-cpu-limit=0.5", q)
	}
	if n := readInt(t, pidsDir+"/pids.max"); n != 16 {
		t.Errorf("agent pids.max = %d, want 16", n)
	}
	waitLogN(t, p, "killed by the OOM killer (memory limit 32MiB)", 1, 20*time.Second)
	waitLogN(t, p, "agent started", 2, 10*time.Second)
	if strings.Count(p.errText(), "worker 0 started") != 1 {
		t.Fatalf("a worker restarted with the agent:\n%s", p.errText())
	}
	if !strings.Contains(p.errText(), `msg="agent (pid`) {
		t.Fatalf("the OOM line does not name the agent:\n%s", p.errText())
	}
	eventually(t, 15*time.Second, "the agent's OOM kill, OOM restart and memory in goinit status", func() bool {
		for _, pr := range status(t, sock).Processes {
			// Memory while it runs again; its restarts counted as OOM.
			if pr.Role == state.RoleAgent {
				return pr.HasCgroup && pr.OOMKills == 1 && pr.Restarts.OOM == 1 && pr.MemoryBytes > 0
			}
		}
		return false
	})
}

// TestAgentGoneBeforeReady checks that goinit ends, with the agent's
// status, when the agent exits for good before it was ever ready: the
// workers, which wait for it, will never start.
func TestAgentGoneBeforeReady(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--workers=2", "--restart=never", "--agent=sh -c 'exit 3'", "--agent-ready=message", "--", "sleep", "1000")
	if code := p.wait(20 * time.Second); code != 3 {
		t.Fatalf("exit %d, want the agent's 3:\n%s", code, p.errText())
	}
	if strings.Contains(p.errText(), "worker 0 started") {
		t.Fatalf("a worker started:\n%s", p.errText())
	}
}
