package portshare

import (
	"strconv"
	"testing"

	"github.com/goinit/goinit/internal/testbin"
)

const nodeServer = `const s = require('http').createServer((q, r) => r.end('pid ' + process.pid + ' port ' + s.address().port + '\n'));
s.listen(+process.argv[1], () => console.log('bound ' + s.address().port));`

// Node's http.createServer().listen(P) binds a dual-stack [::]:P: three
// workers share it, over IPv4 and IPv6, and each reports port P.
func TestNodeWorkersShareDualStack(t *testing.T) {
	requireRoot(t)
	node := testbin.Tool(t, "node")
	s := newSharer(t, Policy{Mode: Auto})
	port := testbin.FreePort(t)
	var pids []int
	for id := range 3 {
		w := startWorker(t, s, id, -1, nil, node, "-e", nodeServer, strconv.Itoa(port))
		w.line("bound " + strconv.Itoa(port))
		pids = append(pids, w.cmd.Process.Pid)
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
	pidsAnswering(t, "[::1]:"+strconv.Itoa(port), port, pids...)
	if n := heldCount(s); n != 1 {
		t.Fatalf("goinit holds %d sockets, want 1 ([::]:%d)", n, port)
	}
}

// A Go server's net.Listen("tcp", ":P") (MPTCP where the kernel has it)
// gets a held socket of its own protocol.
func TestGoWorkersShareMPTCP(t *testing.T) {
	requireRoot(t)
	s := newSharer(t, Policy{Mode: Auto})
	goWorkers(t, s, testbin.FreePort(t), 2)
}

// goWorkers starts n Go servers on ":port" and checks that each answers
// and uses the protocol of the one socket goinit holds.
func goWorkers(t *testing.T, s *Sharer, port, n int) *held {
	t.Helper()
	var pids []int
	var line string
	for id := range n {
		w := startWorker(t, s, id, -1, []string{envGoServer + "=" + strconv.Itoa(port)}, "/proc/self/exe")
		line = w.line("bound ")
		pids = append(pids, w.cmd.Process.Pid)
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
	h := onlyHeld(t, s)
	if line != "bound "+strconv.Itoa(port)+" protocol "+strconv.Itoa(h.key.proto) {
		t.Fatalf("worker says %q; goinit holds %s with protocol %d", line, h.key, h.key.proto)
	}
	return h
}
