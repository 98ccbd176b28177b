package examples_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/goinit/goinit/internal/testbin"
)

// TestNodeAppSharedPort runs the unmodified Node app, which binds its own
// port, as `goinit --workers=2 -- node app.js` with goinit as PID 1 of a
// new PID namespace with its own /proc, as in a container, and no --listen.
// Without goinit's port sharing the second worker would die with
// EADDRINUSE; with it both answer on the one port, over IPv4 and IPv6
// loopback (listen(port) binds a dual-stack [::]), from one listening
// socket that goinit holds and each worker has at its own descriptor.
// SIGTERM drains both and goinit exits 0.
func TestNodeAppSharedPort(t *testing.T) {
	// nodeScript looks in examples/nodeserver; the app is its sibling.
	node := nodeScript(t, filepath.Join("..", "nodeapp", "app.js"))
	port := testbin.FreePort(t) // free on 0.0.0.0 and [::], as listen(port) needs
	cmd := goinitPID1(t, []string{"PORT=" + strconv.Itoa(port)}, append([]string{"--workers=2", "--log-level=debug", "--"}, node...)...)
	p := start(t, cmd)

	want := map[string]bool{} // "worker ID pid PID" of each worker
	pids := map[string]bool{}
	for range 2 {
		m := p.waitLine(t, servingOn)
		if m[3] != "[::]:"+strconv.Itoa(port) {
			t.Errorf("worker %q reports its address as %s, want [::]:%d", m[1], m[3], port)
		}
		want[fmt.Sprintf("worker %s pid %s", m[1], m[2])] = true
		pids[m[2]] = true
	}
	if len(want) != 2 || len(pids) != 2 {
		t.Fatalf("serving workers %v: want two workers with distinct pids", want)
	}
	// goinit logs this before the first worker's bind returns, so before
	// any worker's line above.
	p.mu.Lock()
	logged := p.log.String()
	p.mu.Unlock()
	if shared := fmt.Sprintf(`msg="sharing [::]:%d between the workers; goinit holds it"`, port); strings.Count(logged, shared) != 1 {
		t.Errorf("goinit's log has not exactly one %s", shared)
	}

	for _, host := range []string{"127.0.0.1", "::1"} {
		answersFrom(t, net.JoinHostPort(host, strconv.Itoa(port)), want)
	}
	checkOneHeldSocket(t, port, cmd.Process.Pid)

	p.stop(t)
	p.mu.Lock()
	drained := strings.Count(p.log.String(), ") drained, exiting")
	p.mu.Unlock()
	if drained != 2 {
		t.Errorf("%d workers logged that they drained, want 2", drained)
	}
}

// answersFrom asks addr over new connections until every reply in want has
// come back. The asks go in small concurrent bursts: with one shared
// socket, an idle worker that wins one accept tends to win every sequential
// one. A reply that is not in want fails the test at once.
func answersFrom(t *testing.T, addr string, want map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	inBursts(t, "http://"+addr+"/", func(body []byte) {
		reply := strings.TrimSpace(string(body))
		if !want[reply] {
			t.Fatalf("GET http://%s/ = %q, not one of the workers %v", addr, reply, want)
		}
		seen[reply] = true
	}, func() bool { return len(seen) == len(want) })
	if len(seen) < len(want) {
		t.Fatalf("on %s only %v answered within 200 requests; want all of %v", addr, seen, want)
	}
}

// checkOneHeldSocket checks that exactly one socket listens on port, a
// dual-stack [::] one, and that goinit (host pid sup) and each of its worker
// processes have it open: the workers accept from goinit's socket, not
// from sockets of their own.
func checkOneHeldSocket(t *testing.T, port, sup int) {
	t.Helper()
	var inodes []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			if _, hexPort, _ := strings.Cut(fs[1], ":"); hexPort == fmt.Sprintf("%04X", port) {
				inodes = append(inodes, f+" "+fs[9])
			}
		}
	}
	if len(inodes) != 1 || !strings.HasPrefix(inodes[0], "/proc/net/tcp6 ") {
		t.Fatalf("listening sockets on port %d: %v, want exactly one in /proc/net/tcp6", port, inodes)
	}
	socket := "socket:[" + strings.Fields(inodes[0])[1] + "]"
	holders := append([]int{sup}, childrenOf(t, sup)...)
	if len(holders) != 3 {
		t.Fatalf("goinit (pid %d) has children %v, want 2 workers", sup, holders[1:])
	}
	for _, pid := range holders {
		if !hasFD(t, pid, socket) {
			t.Errorf("pid %d does not have the listening %s open (pid %d is goinit)", pid, socket, sup)
		}
	}
}

// hasFD reports whether process pid has a descriptor whose link is target.
func hasFD(t *testing.T, pid int, target string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == target {
			return true
		}
	}
	return false
}

// childrenOf returns the host pids of pid's children. Go forks from
// whichever thread runs the goroutine, so every thread's list is read.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of pid %d in /proc (%v)", pid, err)
	}
	var kids []int
	for _, f := range tasks {
		b, _ := os.ReadFile(f) // a thread that just ended has no list
		for _, field := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(field); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}
