package portshare

import (
	"encoding/binary"
	"errors"
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

// bindShared decides the binds of one address one after the other: the
// first binds the worker's own socket (goinit binds it, as the kernel
// would), a second while that one is not listening yet is given it, which
// goinit then holds, and a later one gets the held socket. A noted socket
// that was closed is dropped, and a bind the kernel would refuse fails
// with its errno.
func TestBindSharedOrdersBinds(t *testing.T) {
	requireRoot(t)
	tb := newTable(DefaultBacklog())
	defer tb.close()
	port := testbin.FreePort(t)
	k := key{family: unix.AF_INET, addr: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)), proto: unix.IPPROTO_TCP}
	raw := sockaddr4(port)
	// bind runs bindShared for a new socket of the test process.
	bind := func() (*held, *os.File, error) {
		t.Helper()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "worker's socket")
		t.Cleanup(func() { f.Close() })
		peer, err := inspectPeer(os.Getpid(), os.Getpid(), fd)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.release()
		h, _, err := tb.bindShared(k, peer, raw, os.Getpid(), fd)
		return h, f, err
	}
	inode := func(f *os.File) uint64 {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}

	h, first, err := bind()
	if h != nil || err != nil {
		t.Fatalf("first bind: held %v, %v; want the worker's own socket bound", h, err)
	}
	if sa, err := unix.Getsockname(int(first.Fd())); err != nil || sockaddrPort(sa) != port {
		t.Fatalf("first socket is bound to %v (%v), want port %d", sa, err, port)
	}
	h, _, err = bind()
	if err != nil || h == nil || h.ino != inode(first) {
		t.Fatalf("second bind: held %+v, %v; want the first socket", h, err)
	}
	if acc, _ := unix.GetsockoptInt(int(first.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
		t.Fatal("the first socket, now held, is not listening")
	}
	// Its owner's listen, racing the promotion, finds it held.
	if got, _, noted := tb.listenState(inode(first)); got != h || noted {
		t.Fatalf("listenState of the promoted socket: held %p, noted %v; want held %p", got, noted, h)
	}
	if again, _, err := bind(); err != nil || again != h {
		t.Fatalf("third bind: held %+v, %v; want the held socket", again, err)
	}

	// Another address: a noted socket that was closed is dropped, and the
	// next bind is the worker's own again.
	k.addr = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(testbin.FreePort(t)))
	raw = sockaddr4(int(k.addr.Port()))
	_, gone, _ := bind()
	gone.Close()
	if h, _, err := bind(); h != nil || err != nil {
		t.Fatalf("bind after the noted socket was closed: held %v, %v; want its own", h, err)
	}

	// A port someone else listens on: the kernel's EADDRINUSE.
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	k.addr = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(taken))
	raw = sockaddr4(taken)
	if _, _, err := bind(); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("bind of a port another process listens on: %v, want EADDRINUSE", err)
	}
}

// sockaddr4 is struct sockaddr_in for 0.0.0.0:port, as a worker passes it
// to bind: the family in host order, the port in network order.
func sockaddr4(port int) []byte {
	b := make([]byte, unix.SizeofSockaddrInet4)
	binary.NativeEndian.PutUint16(b, unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], uint16(port))
	return b
}

// Two workers whose sockets both have SO_REUSEADDR may both bind the
// address (the kernel allows it while neither listens): neither is made to
// listen early, and the second to listen is given the first's socket.
func TestReuseAddrBindsAreBothTheirOwn(t *testing.T) {
	s, port := autoSharer(t)
	trigger := filepath.Join(t.TempDir(), "listen")
	first := startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", port, "--reuseaddr", "--listen-after", trigger)...)
	first.line("bound-only")
	second := startWorker(t, s, 1, -1, nil, server("inet", "0.0.0.0", port, "--reuseaddr", "--listen-after", trigger)...)
	second.line("bound-only")
	if n := heldCount(s); n != 0 {
		t.Fatalf("goinit holds %d sockets before anyone listens, want none", n)
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	first.line("bound ")
	second.line("bound ")
	h := onlyHeld(t, s)
	fdFlags(t, first.cmd.Process.Pid, h.ino)
	fdFlags(t, second.cmd.Process.Pid, h.ino)
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, first.cmd.Process.Pid, second.cmd.Process.Pid)
}

// A bind of a socket that goinit bound for the worker, to the same
// address, succeeds: it is what a bind restarted by a signal looks like
// (kernels before 5.19 restart it after goinit has done it).
func TestRestartedBindOfOwnSocket(t *testing.T) {
	s, port := autoSharer(t)
	w := startWorker(t, s, 0, -1, nil, server("inet", "0.0.0.0", port, "--bind-twice")...)
	if got := w.line("rebind"); got != "rebind ok" {
		t.Fatalf("second bind of the worker's socket: %q, want ok", got)
	}
	w.line("bound ")
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, w.cmd.Process.Pid)
}

// Workers that bind one address at the same moment, without SO_REUSEADDR
// (Python's socketserver default), all get it: their binds are decided
// one after the other, the first binding its own socket, the others given
// it, never left to race in the kernel.
func TestSimultaneousBinds(t *testing.T) {
	s, port := autoSharer(t)
	trigger := filepath.Join(t.TempDir(), "bind")
	var ws []*worker
	for id := range 6 {
		w := startWorker(t, s, id, -1, nil, server("inet", "0.0.0.0", port, "--bind-after", trigger)...)
		w.line("waiting")
		ws = append(ws, w)
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for id, w := range ws {
		l := w.line("")
		if !strings.HasPrefix(l, "bound ") {
			t.Fatalf("worker %d of 6 binding at once: %q", id, l)
		}
		pids = append(pids, w.cmd.Process.Pid)
	}
	pidsAnswering(t, "127.0.0.1:"+strconv.Itoa(port), port, pids...)
}
