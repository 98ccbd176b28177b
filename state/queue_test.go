package state

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenTCP makes a listening socket with an explicit backlog, as listen.Open
// does, and returns it with its inode.
func listenTCP(t *testing.T, family int, backlog int) (int, uint64, *os.File) {
	t.Helper()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("socket family %d: %v", family, err)
	}
	var sa syscall.Sockaddr = &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if family == syscall.AF_INET6 {
		sa = &syscall.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		if family == syscall.AF_INET6 {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	ino, err := SocketInode(f)
	if err != nil {
		t.Fatal(err)
	}
	sa, err = syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		port = a.Port
	case *syscall.SockaddrInet6:
		port = a.Port
	}
	return port, ino, f
}

// TestListenQueues checks on this kernel that a LISTEN row's rx_queue is the
// number of connections waiting to be accepted, and tx_queue the backlog.
func TestListenQueues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		host   string
	}{{"tcp4", syscall.AF_INET, "127.0.0.1"}, {"tcp6", syscall.AF_INET6, "::1"}} {
		t.Run(tc.name, func(t *testing.T) {
			port, ino, _ := listenTCP(t, tc.family, 7)
			q := queueOf(t, ino)
			if q != 0 {
				t.Fatalf("fresh listener: accept queue %d, want 0", q)
			}
			const conns = 3
			for range conns {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(tc.host, itoa(port)), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
			}
			// The handshake completes in softirq context, possibly just
			// after connect returns: wait for the count, with a deadline.
			deadline := time.Now().Add(5 * time.Second)
			for q = queueOf(t, ino); q != conns; q = queueOf(t, ino) {
				if time.Now().After(deadline) {
					t.Fatalf("after %d connects nobody accepted: accept queue %d, want %d", conns, q, conns)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func queueOf(t *testing.T, ino uint64) uint64 {
	t.Helper()
	qs, err := ListenQueues()
	if err != nil {
		t.Fatal(err)
	}
	q, ok := qs[ino]
	if !ok {
		t.Fatalf("socket inode %d not among %d listening sockets", ino, len(qs))
	}
	return q
}

func TestSocketInodeNotSocket(t *testing.T) {
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := SocketInode(f); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("SocketInode(file) = %v, want a 'not a socket' error", err)
	}
}

func TestParseTCPBadInput(t *testing.T) {
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for _, in := range []string{
		hdr + "   0: 0100007F:1F90 00000000:0000 0A 00000000\n",
		hdr + "   0: 0100007F:1F90 00000000:0000 0A 00000000:0000000Z 00:00000000 00000000     0        0 123 1\n",
	} {
		if err := parseTCP(strings.NewReader(in), map[uint64]uint64{}); err == nil {
			t.Errorf("parseTCP(%q) accepted bad input", in)
		}
	}
	out := map[uint64]uint64{}
	ok := hdr + "   0: 0100007F:1F90 00000000:0000 0A 00000080:00000003 00:00000000 00000000     0        0 4242 1\n" +
		"   1: 0100007F:1F90 0100007F:9999 01 00000000:00000010 00:00000000 00000000     0        0 4343 1\n"
	if err := parseTCP(strings.NewReader(ok), out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[4242] != 3 {
		t.Fatalf("parsed %v, want only inode 4242 with 3", out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
