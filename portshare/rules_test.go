package portshare

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/testbin"
)

func server(mode, host string, port int, opts ...string) []string {
	return append([]string{"python3", testdata("server.py"), mode, host, strconv.Itoa(port)}, opts...)
}

// boundPid returns the pid a server.py "bound ..." line names.
func boundPid(t *testing.T, line string) int {
	t.Helper()
	f := strings.Fields(line)
	for i := range f[:len(f)-1] {
		if f[i] == "pid" {
			pid, err := strconv.Atoi(f[i+1])
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no pid in %q", line)
	return 0
}

// Python's http.server on ("0.0.0.0", P) asks for a backlog of 5: the
// workers share an AF_INET held socket whose queue stays at goinit's.
func TestPythonHTTPServerBacklogNotShrunk(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "python3")
	port := testbin.FreePort(t)
	s := newSharer(t, Policy{Mode: List, Ports: []uint16{uint16(port)}})
	pythonHTTPWorkers(t, s, port, 2)
}

// pythonHTTPWorkers starts n workers of Python's http.server on
// ("0.0.0.0", port), checks that each answers from one AF_INET held
// socket whose queue is goinit's backlog, and returns it and their pids.
func pythonHTTPWorkers(t *testing.T, s *Sharer, port, n int) (*held, []int) {
	t.Helper()
	var pids []int
	for id := range n {
		w := startWorker(t, s, id, -1, nil, server("http", "0.0.0.0", port)...)
		w.line("bound " + strconv.Itoa(port))
		waitEvent(t, s, Listening, id)
		pids = append(pids, w.cmd.Process.Pid)
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
	h := onlyHeld(t, s)
	if h.key.family != unix.AF_INET {
		t.Fatalf("held socket %s is not AF_INET", h.key)
	}
	// For a listening socket TCP_INFO reports the accept queue's limit
	// (sk_max_ack_backlog) in tcpi_sacked.
	info, err := unix.GetsockoptTCPInfo(h.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultBacklog(); int(info.Sacked) != want {
		t.Fatalf("held socket's backlog is %d after Python's listen(5), want %d", info.Sacked, want)
	}
	return h, pids
}

func onlyHeld(t *testing.T, s *Sharer) *held {
	t.Helper()
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	if len(s.table.byKey) != 1 {
		t.Fatalf("goinit holds %d sockets, want 1", len(s.table.byKey))
	}
	for _, h := range s.table.byKey {
		return h
	}
	return nil
}

// The family rules: an AF_INET bind never gets a dual-stack socket, and
// conflicts are the kernel's own.
func TestFamilyRules(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "python3")
	s := newSharer(t, Policy{Mode: Auto})
	t.Run("inet after dual-stack is EADDRINUSE", func(t *testing.T) {
		port := testbin.FreePort(t)
		startWorker(t, s, 0, -1, nil, server("dual", "::", port)...).line("bound")
		got := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", port)...).line("")
		if !strings.HasPrefix(got, "error "+strconv.Itoa(int(unix.EADDRINUSE))) {
			t.Fatalf("AF_INET 0.0.0.0:%d next to a dual-stack [::]:%d: %q, want EADDRINUSE", port, port, got)
		}
	})
	t.Run("inet and v6only are two held sockets", func(t *testing.T) {
		inetBesideV6only(t, s, 2, "inet", "v6only", "inet")
	})
	t.Run("dual-stack after v6only is EADDRINUSE", func(t *testing.T) {
		port := testbin.FreePort(t)
		startWorker(t, s, 5, -1, nil, server("v6only", "::", port)...).line("bound")
		got := startWorker(t, s, 6, -1, nil, server("dual", "::", port)...).line("")
		if !strings.HasPrefix(got, "error "+strconv.Itoa(int(unix.EADDRINUSE))) {
			t.Fatalf("dual-stack [::]:%d next to a v6only [::]:%d: %q, want EADDRINUSE", port, port, got)
		}
	})
}

// inetBesideV6only starts, from worker id first on, one server.py worker
// per mode ("inet" on 0.0.0.0, "v6only" on [::]) on one port, and checks
// that goinit holds two new sockets for them, each answering its own
// family, and that an AF_INET worker reads IPv4 client addresses.
func inetBesideV6only(t *testing.T, s *Sharer, first int, modes ...string) {
	t.Helper()
	port := testbin.FreePort(t)
	before := heldCount(s)
	var inet, inet6 []int
	for i, mode := range modes {
		host := map[string]string{"inet": "0.0.0.0", "v6only": "::"}[mode]
		l := startWorker(t, s, first+i, -1, nil, server(mode, host, port)...).line("bound")
		if mode == "inet" {
			if !strings.Contains(l, "family "+strconv.Itoa(unix.AF_INET)+" ") {
				t.Fatalf("AF_INET worker got %q", l)
			}
			inet = append(inet, boundPid(t, l))
		} else {
			inet6 = append(inet6, boundPid(t, l))
		}
	}
	if n := heldCount(s) - before; n != 2 {
		t.Fatalf("goinit holds %d new sockets, want 2", n)
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, inet...)
	pidsAnswering(t, "[::1]:"+strconv.Itoa(port), port, inet6...)
	if body, _ := ask("127.0.0.1:" + strconv.Itoa(port)); !strings.HasSuffix(body, "peer 127.0.0.1") {
		t.Fatalf("AF_INET worker reads its client as %q, want peer 127.0.0.1", body)
	}
}

// Binds goinit does not share are the kernel's: a second bind of an
// unlisted port, of UDP, of port 0 are decided as without goinit.
func TestUnsharedBindsAreTheKernels(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "python3")
	listed, other := testbin.FreePort(t), testbin.FreePort(t)
	s := newSharer(t, Policy{Mode: List, Ports: []uint16{uint16(listed)}})
	eaddrinuse := "error " + strconv.Itoa(int(unix.EADDRINUSE))
	t.Run("port not in the list", func(t *testing.T) {
		startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", other, "--once")...).line("bound")
		if got := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", other, "--once")...).line(""); !strings.HasPrefix(got, eaddrinuse) {
			t.Fatalf("second bind of unlisted port %d: %q, want EADDRINUSE", other, got)
		}
	})
	t.Run("udp", func(t *testing.T) {
		startWorker(t, s, 2, -1, nil, server("udp", "0.0.0.0", listed)...).line("bound")
		if got := startWorker(t, s, 3, -1, nil, server("udp", "0.0.0.0", listed)...).line(""); !strings.HasPrefix(got, eaddrinuse) {
			t.Fatalf("second UDP bind of %d: %q, want EADDRINUSE", listed, got)
		}
	})
	s2 := newSharer(t, Policy{Mode: Auto})
	t.Run("port 0", func(t *testing.T) {
		a := startWorker(t, s2, 0, -1, nil, server("inet", "0.0.0.0", 0, "--once")...).line("bound")
		b := startWorker(t, s2, 1, -1, nil, server("inet", "0.0.0.0", 0, "--once")...).line("bound")
		if strings.Fields(a)[1] == strings.Fields(b)[1] || strings.Fields(a)[1] == "0" {
			t.Fatalf("port 0 binds got %q and %q, want two kernel-chosen ports", a, b)
		}
	})
	if n := heldCount(s) + heldCount(s2); n != 0 {
		t.Fatalf("goinit holds %d sockets, want none", n)
	}
}

// A worker's descendants inherit its filter: a forked child's bind gets
// the held socket too.
func TestForkedChildGetsHeldSocket(t *testing.T) {
	s, port := autoSharer(t)
	a := startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", port)...)
	b := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", port, "--fork")...)
	child := boundPid(t, b.line("bound"))
	if child == b.cmd.Process.Pid {
		t.Fatalf("the forked child has the worker's pid")
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, boundPid(t, a.line("bound")), child)
	if e := waitEvent(t, s, Bound, 1); e.Pid != child {
		t.Fatalf("bound event names pid %d, want the child %d", e.Pid, child)
	}
}

// shutdown(SHUT_RD) of the listener in one worker would stop it for all:
// goinit swallows it on held sockets.
func TestShutdownOfHeldSocketIsSwallowed(t *testing.T) {
	s, port := autoSharer(t)
	a := startWorker(t, s, 0, -1, nil, server("inet", "127.0.0.1", port)...)
	pid := boundPid(t, a.line("bound"))
	b := startWorker(t, s, 1, -1, nil, server("inet", "127.0.0.1", port, "--shutdown-rd")...)
	b.line("bound")
	if got := b.line("shutdown"); got != "shutdown ok" {
		t.Fatalf("shutdown: %q", got)
	}
	h := onlyHeld(t, s)
	if acc, _ := unix.GetsockoptInt(h.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
		t.Fatal("the held socket stopped listening")
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pid)
}

// A worker that dropped to another user before the filter (no_new_privs
// is what lets it install one) shares too.
func TestNonRootWorker(t *testing.T) {
	s, port := autoSharer(t)
	var pids []int
	for id := range 2 {
		w := startWorker(t, s, id, 65534, nil, server("dual", "::", port)...)
		pids = append(pids, boundPid(t, w.line("bound")))
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
	st, err := os.Stat("/proc/" + strconv.Itoa(pids[0]))
	if err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("worker is not running as uid 65534: %v", err)
	}
	// A privileged port stays privileged: goinit is root, the worker not.
	if got := startWorker(t, s, 3, 65534, nil, server("inet", "127.0.0.1", 81)...).line(""); !strings.HasPrefix(got, "error "+strconv.Itoa(int(unix.EACCES))) {
		t.Fatalf("non-root bind of port 81: %q, want EACCES", got)
	}
}

// When the last process of a worker is gone its loop ends with Detached.
func TestDetachedWhenWorkerExits(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "python3")
	s := newSharer(t, Policy{Mode: Auto})
	w := startWorker(t, s, 7, -1, nil, server("inet", "127.0.0.1", testbin.FreePort(t))...)
	w.line("bound")
	w.stop()
	start := time.Now()
	if e := waitEvent(t, s, Detached, 7); e.Err != nil {
		t.Fatalf("detached with %v", e.Err)
	}
	t.Logf("detached %v after the kill", time.Since(start))
}

// Close ends every loop at once, with a worker still running, and frees
// the held ports.
func TestCloseReleasesEverything(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "python3")
	s, err := New(Config{Policy: Policy{Mode: Auto}})
	if err != nil {
		t.Fatal(err)
	}
	port := testbin.FreePort(t)
	startWorker(t, s, 0, -1, nil, server("inet", "127.0.0.1", port, "--once")...).line("bound")
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if heldCount(s) != 0 {
		t.Fatal("held sockets left after Close")
	}
}

// A shim that exits without sending its descriptor is reported, not
// waited for.
func TestHandoffWithoutDescriptor(t *testing.T) {
	requireRoot(t)
	s := newSharer(t, Policy{Mode: Auto})
	h, err := NewHandoff()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	cmd.ExtraFiles = []*os.File{h.Child()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.AttachHandoff(3, cmd.Process.Pid, h, 0)
	cmd.Wait()
	if e := waitEvent(t, s, Detached, 3); e.Err == nil {
		t.Fatal("no error for a shim that sent nothing")
	} else {
		t.Log(e)
	}
}
