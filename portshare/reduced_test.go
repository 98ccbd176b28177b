package portshare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/testbin"
)

// refuseGetfd installs, on every thread of the test process, a seccomp
// filter that fails pidfd_getfd with EPERM and allows everything else:
// the rule of Docker's default profile for a container without
// CAP_SYS_PTRACE. The test process then is goinit in such a container,
// and its workers inherit the rule as they would there.
func refuseGetfd() error {
	a, err := nativeArch()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: a.audit, SkipTrue: 2},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_PIDFD_GETFD, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	})
	if err != nil {
		return err
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC: Go's runtime has started threads already; all must have it.
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	return nil
}

// inReducedMode runs the calling top-level test again in a child test
// process where pidfd_getfd fails with EPERM (refuseGetfd), and reports
// whether the caller is that child, which then runs the test's body. The
// parent passes or fails with the child, and checks that it, without the
// filter, has full fidelity.
func inReducedMode(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envNoGetfd) == "1" {
		if err := FullFidelity(); !errors.Is(err, ErrReduced) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("FullFidelity() = %v under the EPERM rule, want ErrReduced with EPERM", err)
		}
		return true
	}
	requireRoot(t)
	if err := FullFidelity(); err != nil {
		t.Fatalf("FullFidelity() = %v without the EPERM rule, want nil", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envNoGetfd+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("under the EPERM rule for pidfd_getfd:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ")) {
		t.Fatalf("%s failed under the EPERM rule for pidfd_getfd: %v", t.Name(), err)
	}
	return false
}

// logBuffer collects a Sharer's log lines, and shows them in the test log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// newReducedSharer is newSharer, checking that the Sharer runs in reduced
// mode and logged why once, at once.
func newReducedSharer(t *testing.T, p Policy) (*Sharer, *logBuffer) {
	t.Helper()
	log := &logBuffer{t: t}
	s, err := New(Config{Policy: p, Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Reduced(); !errors.Is(err, ErrReduced) {
		t.Fatalf("Reduced() = %v, want ErrReduced", err)
	}
	if n := log.count("level=WARN msg=\"" + ErrReduced.Error()); n != 1 {
		t.Fatalf("%d reduced-mode warnings at New, want 1", n)
	}
	return s, log
}

// fdFlags returns the descriptor of process pid that is the socket ino,
// and its fdinfo flags.
func fdFlags(t *testing.T, pid int, ino uint64) (int, uint64) {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		if got, ok := socketInode(pid, fd); ok && got == ino {
			fl, ok := fdinfoFlags(pid, fd)
			if !ok {
				t.Fatalf("no flags in /proc/%d/fdinfo/%d", pid, fd)
			}
			return fd, fl
		}
	}
	t.Fatalf("process %d has no descriptor of the held socket socket:[%d]", pid, ino)
	return -1, 0
}

// checkFlags fails unless pid's descriptor of the held socket h has the
// O_NONBLOCK and close-on-exec flags the worker's own socket had.
func checkFlags(t *testing.T, who string, pid int, h *held, nonblock, cloexec bool) {
	t.Helper()
	fd, fl := fdFlags(t, pid, h.ino)
	if got := fl&unix.O_NONBLOCK != 0; got != nonblock {
		t.Errorf("%s (pid %d) fd %d: O_NONBLOCK %v, want %v (flags %o)", who, pid, fd, got, nonblock, fl)
	}
	if got := fl&unix.O_CLOEXEC != 0; got != cloexec {
		t.Errorf("%s (pid %d) fd %d: close-on-exec %v, want %v (flags %o)", who, pid, fd, got, cloexec, fl)
	}
}

// Under Docker's rule (pidfd_getfd refused) Node's dual-stack [::]:P and a
// Go server's ":P" (MPTCP) still share one held socket: both 127.0.0.1
// and ::1 reach every worker, and each keeps its non-blocking,
// close-on-exec descriptor.
func TestReducedModeNodeAndGo(t *testing.T) {
	if !inReducedMode(t) {
		return
	}
	requireRoot(t)
	node := testbin.Tool(t, "node")
	s, log := newReducedSharer(t, Policy{Mode: Auto})
	port := testbin.FreePort(t)
	var pids []int
	for id := range 2 {
		w := startWorker(t, s, id, -1, nil, node, "-e", nodeServer, strconv.Itoa(port))
		w.line("bound " + strconv.Itoa(port))
		pids = append(pids, w.cmd.Process.Pid)
	}
	g := startWorker(t, s, 2, -1, []string{envGoServer + "=" + strconv.Itoa(port)}, "/proc/self/exe")
	g.line("bound " + strconv.Itoa(port) + " ")
	pids = append(pids, g.cmd.Process.Pid)
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
	pidsAnswering(t, "[::1]:"+strconv.Itoa(port), port, pids...)
	h := onlyHeld(t, s)
	if h.key.family != unix.AF_INET6 || h.key.v6only || h.key.proto != unix.IPPROTO_TCP {
		t.Fatalf("held socket %s (family %d, protocol %d), want a dual-stack TCP [::]:%d like Node's", h.key, h.key.family, h.key.proto, port)
	}
	for i, pid := range pids {
		checkFlags(t, "worker "+strconv.Itoa(i), pid, h, true, true)
	}
	if e := waitEvent(t, s, Bound, 2); !e.Reduced || !strings.Contains(e.String(), "reduced mode") {
		t.Fatalf("bound event %q does not say reduced mode", e)
	}
	if n := log.count(ErrReduced.Error()); n != 1 {
		t.Fatalf("the reduced-mode warning was logged %d times, want once", n)
	}
}

// Under Docker's rule a Go server alone gets a held socket of its own
// protocol (MPTCP since Go 1.24, where the kernel has it): the protocol
// is read from the socket's sockfs name, not from a copy.
func TestReducedModeGoProtocol(t *testing.T) {
	if !inReducedMode(t) {
		return
	}
	requireRoot(t)
	s, _ := newReducedSharer(t, Policy{Mode: Auto})
	if h := goWorkers(t, s, testbin.FreePort(t), 2); h.key.v6only || h.key.family != unix.AF_INET6 {
		t.Fatalf("goinit holds %s for Go's \":P\", want a dual-stack AF_INET6 socket", h.key)
	}
}

// Under Docker's rule Python's http.server on ("0.0.0.0", P) gets an
// AF_INET held socket whose queue stays at goinit's backlog, with
// Python's blocking, close-on-exec descriptor; a socket made non-blocking
// and inheritable before bind keeps those flags too.
func TestReducedModePython(t *testing.T) {
	if !inReducedMode(t) {
		return
	}
	requireRoot(t)
	testbin.Tool(t, "python3")
	s, _ := newReducedSharer(t, Policy{Mode: Auto})
	h, pids := pythonHTTPWorkers(t, s, testbin.FreePort(t), 2)
	for i, pid := range pids {
		checkFlags(t, "worker "+strconv.Itoa(i), pid, h, false, true)
	}
	if v, _ := unix.GetsockoptInt(h.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("held socket's SO_REUSEADDR is %d, want 1 (the reduced-mode default)", v)
	}

	other := testbin.FreePort(t)
	w := startWorker(t, s, 5, -1, nil, server("inet", "127.0.0.1", other, "--once", "--nonblock", "--inheritable")...)
	pid := boundPid(t, w.line("bound"))
	e := waitEvent(t, s, Bound, 5)
	s.table.mu.Lock()
	var h2 *held
	for k, x := range s.table.byKey {
		if k.addr == e.Addr {
			h2 = x
		}
	}
	s.table.mu.Unlock()
	checkFlags(t, "non-blocking inheritable worker", pid, h2, true, false)
}

// The family rules under Docker's rule: an AF_INET bind never gets an
// AF_INET6 socket; 0.0.0.0:P beside a dual-stack [::]:P is EADDRINUSE as
// without goinit; 0.0.0.0:P then [::]:P (nginx's "listen 80; listen
// [::]:80", v6only) are two held sockets, the second v6only; a lone
// [::]:P takes net.ipv6.bindv6only's value, whatever the worker set
// (the documented loss); UDP stays the kernel's.
func TestReducedModeFamilyRules(t *testing.T) {
	if !inReducedMode(t) {
		return
	}
	requireRoot(t)
	testbin.Tool(t, "python3")
	s, _ := newReducedSharer(t, Policy{Mode: Auto})
	eaddrinuse := "error " + strconv.Itoa(int(unix.EADDRINUSE))
	t.Run("inet after dual-stack is EADDRINUSE", func(t *testing.T) {
		port := testbin.FreePort(t)
		startWorker(t, s, 0, -1, nil, server("dual", "::", port)...).line("bound")
		if got := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", port)...).line(""); !strings.HasPrefix(got, eaddrinuse) {
			t.Fatalf("AF_INET 0.0.0.0:%d next to a dual-stack [::]:%d: %q, want EADDRINUSE", port, port, got)
		}
	})
	t.Run("inet then v6only are two held sockets", func(t *testing.T) {
		inetBesideV6only(t, s, 2, "inet", "v6only", "inet", "v6only")
	})
	t.Run("lone v6only takes the system default", func(t *testing.T) {
		port := testbin.FreePort(t)
		w := startWorker(t, s, 6, -1, nil, server("v6only", "::", port, "--once")...)
		w.line("bound")
		e := waitEvent(t, s, Bound, 6)
		if want := bindV6Only() == 1; e.V6Only != want || !e.Reduced {
			t.Fatalf("bound event %q: v6only %v, want net.ipv6.bindv6only's %v in reduced mode", e, e.V6Only, want)
		}
	})
	t.Run("udp is the kernel's", func(t *testing.T) {
		port := testbin.FreePort(t)
		before := heldCount(s)
		startWorker(t, s, 7, -1, nil, server("udp", "0.0.0.0", port)...).line("bound")
		if got := startWorker(t, s, 8, -1, nil, server("udp", "0.0.0.0", port)...).line(""); !strings.HasPrefix(got, eaddrinuse) {
			t.Fatalf("second UDP bind of %d: %q, want EADDRINUSE", port, got)
		}
		if heldCount(s) != before {
			t.Fatal("goinit holds a socket for UDP")
		}
	})
}
