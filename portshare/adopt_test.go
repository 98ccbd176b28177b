package portshare

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/testbin"
)

// autoSharer is a Sharer of every port, for python3 workers, and a free
// port for them.
func autoSharer(t *testing.T) (*Sharer, int) {
	t.Helper()
	requireRoot(t)
	testbin.Tool(t, "python3")
	return newSharer(t, Policy{Mode: Auto}), testbin.FreePort(t)
}

// A client that binds a fixed local port of a shared port number before
// connect() connects from it, as without goinit: only a socket that
// listens is held.
func TestClientBindIsTheKernels(t *testing.T) {
	s, port := autoSharer(t)
	dst, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	to := strconv.Itoa(dst.Addr().(*net.TCPAddr).Port)
	got := startWorker(t, s, 0, -1, nil, server("client", "127.0.0.1", port, "--to", to)...).line("")
	if want := "connected from " + strconv.Itoa(port); got != want {
		t.Fatalf("a client bound to port %d: %q, want %q", port, got, want)
	}
	c, err := dst.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if from := c.RemoteAddr().(*net.TCPAddr).Port; from != port {
		t.Fatalf("the client connected from port %d, want %d", from, port)
	}
	if n := heldCount(s); n != 0 {
		t.Fatalf("goinit holds %d sockets for a client's bind, want none", n)
	}
}

// A bind-and-close probe of whether a port is free (what port-finding
// helpers do) leaves the port free.
func TestBindProbeLeavesThePortFree(t *testing.T) {
	s, port := autoSharer(t)
	startWorker(t, s, 0, -1, nil, server("probe", "0.0.0.0", port)...).line("probed")
	l, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d after a worker's bind-and-close: %v, want it free", port, err)
	}
	l.Close()
	if n := heldCount(s); n != 0 {
		t.Fatalf("goinit holds %d sockets after a probe, want none", n)
	}
}

// The held socket is the first listener's own: every option it set before
// bind is kept (IP_TOS here, which goinit does not know of).
func TestFirstListenersOptionsAreKept(t *testing.T) {
	s, port := autoSharer(t)
	w := startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", port, "--tos")...)
	w.line("bound")
	h := onlyHeld(t, s)
	if tos, err := unix.GetsockoptInt(h.fd, unix.IPPROTO_IP, unix.IP_TOS); err != nil || tos != 0x10 {
		t.Fatalf("held socket's IP_TOS = %#x (%v), want the worker's 0x10", tos, err)
	}
	if fd, _ := fdFlags(t, w.cmd.Process.Pid, h.ino); fd < 0 {
		t.Fatal("the worker does not have the held socket")
	}
}

// A second worker's bind while the first one's own socket is bound but
// not listening yet (which the kernel would refuse without SO_REUSEADDR)
// gets that socket: goinit holds it from then on, and both serve.
func TestSecondBindSharesTheFirstBoundSocket(t *testing.T) {
	s, port := autoSharer(t)
	trigger := filepath.Join(t.TempDir(), "listen")
	first := startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", port, "--listen-after", trigger)...)
	first.line("bound-only")
	if n := heldCount(s); n != 0 {
		t.Fatalf("goinit holds %d sockets before anyone listens, want none", n)
	}
	second := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", port)...)
	l := second.line("")
	if !strings.HasPrefix(l, "bound ") {
		t.Fatalf("second bind of port %d while the first socket is bound: %q", port, l)
	}
	h := onlyHeld(t, s)
	fdFlags(t, first.cmd.Process.Pid, h.ino) // the first worker's own socket
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	first.line("bound ")
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, first.cmd.Process.Pid, second.cmd.Process.Pid)
	if n := heldCount(s); n != 1 {
		t.Fatalf("goinit holds %d sockets, want 1", n)
	}
}

// A noted socket whose bind has not happened yet (two workers binding at
// once) is kept, not forgotten, so that its listen() still makes it the
// held socket; once bound it is the one a second bind shares, and once
// closed it is dropped.
func TestNotedSocketBeforeItsBind(t *testing.T) {
	requireRoot(t)
	tb := newTable(DefaultBacklog())
	defer tb.close()
	port := testbin.FreePort(t)
	k := key{family: unix.AF_INET, addr: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)), proto: unix.IPPROTO_TCP}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "noted") // closes fd once, whichever comes first
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	tb.expect(k, st.Ino, os.Getpid(), fd)
	if dup, _, ok := tb.bound(k, 0); ok {
		unix.Close(dup)
		t.Fatal("a socket not bound yet was offered for sharing")
	}
	if _, ok := tb.expectationOf(st.Ino); !ok {
		t.Fatal("a socket not bound yet was forgotten")
	}
	if err := unix.Bind(fd, k.sockaddr()); err != nil {
		t.Fatal(err)
	}
	dup, ino, ok := tb.bound(k, 0)
	if !ok || ino != st.Ino {
		t.Fatalf("the bound socket was not offered: %v %d", ok, ino)
	}
	unix.Close(dup)
	if _, _, ok := tb.bound(k, st.Ino); ok {
		t.Fatal("a socket was offered to its own second bind")
	}
	f.Close()
	if _, _, ok := tb.bound(k, 0); ok {
		t.Fatal("a closed socket was offered")
	}
	if _, ok := tb.expectationOf(st.Ino); ok {
		t.Fatal("a closed socket is still noted")
	}
}
