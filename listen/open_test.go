package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustParse(t *testing.T, s string) Addr {
	t.Helper()
	a, err := ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustOpen(t *testing.T, s string, reusePort bool) *os.File {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := Open(ctx, mustParse(t, s), reusePort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// checkPassable checks what a parent needs before handing f to a child:
// close-on-exec (no accidental leaks), blocking mode, not stdio.
func checkPassable(t *testing.T, f *os.File) {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if fd < 3 {
			t.Errorf("descriptor %d, want >= 3", fd)
		}
		if fl, err := unix.FcntlInt(fd, unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("close-on-exec not set (flags %#x, %v)", fl, err)
		}
		if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("socket is non-blocking (flags %#x, %v)", fl, err)
		}
	})
}

// boundPort returns the port f is bound to.
func boundPort(t *testing.T, f *os.File) int {
	t.Helper()
	a, err := BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	t.Fatalf("BoundAddr = %T %v, want an IP address", a, a)
	return 0
}

// roundTrip accepts one connection on the listening socket f, dialled at
// network/address, and checks data flows.
func roundTrip(t *testing.T, f *os.File, network, address string) {
	t.Helper()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("hello"))
	}()
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello", b, err)
	}
}

func TestOpenTCP4(t *testing.T) {
	f := mustOpen(t, "tcp4://127.0.0.1:0", false)
	checkPassable(t, f)
	if f.Name() != "tcp4://127.0.0.1:0" {
		t.Errorf("Name() = %q", f.Name())
	}
	a, err := BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) || ta.Port == 0 {
		t.Fatalf("BoundAddr = %#v, want 127.0.0.1 and a real port", a)
	}
	roundTrip(t, f, "tcp", ta.String())
}

func TestOpenTCPDefaultNetwork(t *testing.T) {
	f := mustOpen(t, "127.0.0.1:0", false)
	roundTrip(t, f, "tcp", fmt.Sprintf("127.0.0.1:%d", boundPort(t, f)))
}

func haveIPv6Loopback(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 on loopback: %v", err)
	}
	l.Close()
}

func TestOpenTCP6(t *testing.T) {
	haveIPv6Loopback(t)
	f := mustOpen(t, "tcp6://[::1]:0", false)
	checkPassable(t, f)
	a, err := BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.Equal(net.IPv6loopback) || ta.Port == 0 {
		t.Fatalf("BoundAddr = %#v, want [::1] and a real port", a)
	}
	roundTrip(t, f, "tcp6", ta.String())
}

func TestOpenUDP(t *testing.T) {
	for _, addr := range []string{"udp4://127.0.0.1:0", "udp6://[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if strings.Contains(addr, "::1") {
				haveIPv6Loopback(t)
			}
			f := mustOpen(t, addr, false)
			checkPassable(t, f)
			a, err := BoundAddr(f)
			if err != nil {
				t.Fatal(err)
			}
			ua, ok := a.(*net.UDPAddr)
			if !ok || ua.Port == 0 {
				t.Fatalf("BoundAddr = %#v, want a UDP address with a real port", a)
			}
			pc, err := net.FilePacketConn(f)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			c, err := net.Dial("udp", ua.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, _, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("read %q, %v; want ping", buf[:n], err)
			}
		})
	}
}

func TestOpenUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	f := mustOpen(t, "unix://"+path, false)
	checkPassable(t, f)
	a, err := BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	if ua, ok := a.(*net.UnixAddr); !ok || ua.Name != path || ua.Net != "unix" {
		t.Fatalf("BoundAddr = %#v, want unix %s", a, path)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket file: %v, %v", fi, err)
	}
	roundTrip(t, f, "unix", path)
}

func TestOpenUnixAbstract(t *testing.T) {
	name := fmt.Sprintf("@goinit-listen-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	f := mustOpen(t, "unix://"+name, false)
	a, err := BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != name {
		t.Fatalf("BoundAddr = %q, want %q", a, name)
	}
	roundTrip(t, f, "unix", name)
}

func TestOpenUnixRemovesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: a crashed server's leftover
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, "unix://"+path, false)
	roundTrip(t, f, "unix", path)
}

func TestOpenUnixRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Open(context.Background(), mustParse(t, "unix://"+path), false)
	want := fmt.Sprintf("cannot listen on unix://%s: address already in use (a process is accepting connections on %s)", path, path)
	if err == nil || err.Error() != want {
		t.Fatalf("Open error = %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("errors.Is(%v, EADDRINUSE) = false", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("live socket file removed: %v", err)
	}
}

func TestOpenUnixErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "data")
	if err := os.WriteFile(regular, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr      string
		reusePort bool
		want      string
	}{
		{"unix://" + regular, false, "cannot listen on unix://" + regular + ": " + regular + " exists and is not a socket; not removing it"},
		{"unix://" + dir + "/missing/app.sock", false, "cannot listen on unix://" + dir + "/missing/app.sock: directory " + dir + "/missing does not exist"},
		{"unix://" + regular + "/app.sock", false, "cannot listen on unix://" + regular + "/app.sock: " + regular + " is not a directory"},
		{"unix://" + dir + "/app.sock", true, "SO_REUSEPORT does not apply to Unix sockets"},
	}
	for _, tt := range tests {
		_, err := Open(context.Background(), mustParse(t, tt.addr), tt.reusePort)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%s) error = %v, want %q", tt.addr, err, tt.want)
		}
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
}

func TestOpenAddressInUse(t *testing.T) {
	f := mustOpen(t, "tcp4://127.0.0.1:0", false)
	port := boundPort(t, f)
	addr := fmt.Sprintf("tcp4://127.0.0.1:%d", port)
	_, err := Open(context.Background(), mustParse(t, addr), false)
	want := "cannot listen on " + addr + ": address already in use"
	if err == nil || err.Error() != want {
		t.Fatalf("Open error = %v, want %q", err, want)
	}
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %#v: want an *OpenError wrapping EADDRINUSE", err)
	}
	// SO_REUSEPORT on the second socket alone is not enough: every socket
	// sharing the port must have it.
	if _, err := Open(context.Background(), mustParse(t, addr), true); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Open with reusePort next to a plain socket: %v, want EADDRINUSE", err)
	}
}

func TestOpenReusePort(t *testing.T) {
	for _, network := range []string{"tcp4", "udp4"} {
		t.Run(network, func(t *testing.T) {
			first := mustOpen(t, network+"://127.0.0.1:0", true)
			addr := fmt.Sprintf("%s://127.0.0.1:%d", network, boundPort(t, first))
			second := mustOpen(t, addr, true)
			if p, q := boundPort(t, first), boundPort(t, second); p != q {
				t.Fatalf("ports %d and %d differ", p, q)
			}
			if _, err := Open(context.Background(), mustParse(t, addr), false); !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("Open without reusePort on a shared port: %v, want EADDRINUSE", err)
			}
		})
	}
}

func TestOpenAddressNotAvailable(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1: never a local address, and bind sends no packet.
	_, err := Open(context.Background(), mustParse(t, "tcp4://192.0.2.1:0"), false)
	want := "cannot listen on tcp4://192.0.2.1:0: cannot assign requested address (no local interface has this address)"
	if err == nil || err.Error() != want {
		t.Fatalf("Open error = %v, want %q", err, want)
	}
}

func TestOpenErrorHints(t *testing.T) {
	bindErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	tests := []struct {
		addr  string
		errno syscall.Errno
		want  string
	}{
		{":80", syscall.EACCES, "cannot listen on tcp://:80: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"},
		{":8080", syscall.EACCES, "cannot listen on tcp://:8080: permission denied"},
		{"unix:///run/app.sock", syscall.EACCES, "cannot listen on unix:///run/app.sock: permission denied (cannot create the socket file in /run)"},
		{"tcp6://[::1]:8080", syscall.EAFNOSUPPORT, "cannot listen on tcp6://[::1]:8080: address family not supported by protocol (this address family is disabled on this host)"},
	}
	for _, tt := range tests {
		err := openError(mustParse(t, tt.addr), bindErr(tt.errno))
		if err.Error() != tt.want {
			t.Errorf("%s, %v: %q, want %q", tt.addr, tt.errno, err, tt.want)
		}
		if !errors.Is(err, tt.errno) {
			t.Errorf("errors.Is(%v, %v) = false", err, tt.errno)
		}
	}
}

func TestOpenUnknownNetwork(t *testing.T) {
	_, err := Open(context.Background(), Addr{Network: "sctp", Address: ":1"}, false)
	if err == nil || !strings.Contains(err.Error(), `unsupported network "sctp"`) {
		t.Fatalf("Open error = %v", err)
	}
}
