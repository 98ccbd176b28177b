package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/netns"
	"github.com/goinit/goinit/internal/testbin"
)

// requireRoot skips a test that needs root, except in CI where every test
// must run.
func requireRoot(t *testing.T) { t.Helper(); testbin.RequireRoot(t, "network namespaces") }

func mustOpenSets(t *testing.T, n int, reusePort bool, addrs ...string) *Sets {
	t.Helper()
	as := make([]Addr, len(addrs))
	for i, s := range addrs {
		as[i] = mustParse(t, s)
	}
	s, err := OpenSets(context.Background(), as, n, reusePort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// inode is the socket's inode: two files with one inode are one socket.
func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatalf("fstat %s: %v", f.Name(), err)
	}
	return st.Ino
}

// isClosed reports whether f's descriptor was closed through f.
func isClosed(t *testing.T, f *os.File) bool {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc.Control(func(uintptr) {}) != nil
}

// answering dials addr until each of the TCP listeners ls (one
// SO_REUSEPORT group) has accepted a connection, or 500 dials, and returns
// the indexes of those that did: the kernel hashes each connection to one
// of the group.
func answering(t *testing.T, addr string, ls ...*os.File) map[int]bool {
	t.Helper()
	for i, f := range ls {
		l, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprint(c, i)
				c.Close()
			}
		}()
	}
	seen := map[int]bool{}
	for n := 0; n < 500 && len(seen) < len(ls); n++ {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		var i int
		if _, scanErr := fmt.Sscan(string(b), &i); err != nil || scanErr != nil {
			t.Fatalf("answer %q: %v %v", b, err, scanErr)
		}
		seen[i] = true
	}
	return seen
}

func TestSetsShared(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	s := mustOpenSets(t, 1, false, "tcp4://127.0.0.1:0", "unix://"+sock)
	if s.Len() != 1 || s.PerSlotTCP() {
		t.Fatalf("Len %d, PerSlotTCP %v; want 1, false", s.Len(), s.PerSlotTCP())
	}
	f := s.Files(0)
	if len(f) != 2 || f[0].Name() != "tcp4://127.0.0.1:0" || f[1].Name() != "unix://"+sock {
		t.Fatalf("Files(0) = %v", f)
	}
	for _, file := range f {
		checkPassable(t, file)
	}
	if g := s.Files(5); g[0] != f[0] {
		t.Errorf("Files(5) is not set 0: every worker shares the one set")
	}
	if closed := s.CloseUnused(nil); closed != nil {
		t.Errorf("CloseUnused closed %v; set 0 is never closed", closed)
	}
	roundTrip(t, f[0], "tcp4", fmt.Sprintf("127.0.0.1:%d", boundPort(t, f[0])))
	roundTrip(t, f[1], "unix", sock)
	s.Close()
	if !isClosed(t, f[0]) || !isClosed(t, f[1]) {
		t.Errorf("Close left a socket open")
	}
}

func TestSetsReusePort(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	s := mustOpenSets(t, 3, true, "tcp4://127.0.0.1:0", "udp4://127.0.0.1:0", "unix://"+sock)
	if s.Len() != 3 || !s.PerSlotTCP() {
		t.Fatalf("Len %d, PerSlotTCP %v; want 3, true", s.Len(), s.PerSlotTCP())
	}
	first := s.Files(0)
	tcpPort, udpPort := boundPort(t, first[0]), boundPort(t, first[1])
	seen := map[uint64]bool{}
	for id := range 3 {
		f := s.Files(id)
		if boundPort(t, f[0]) != tcpPort || boundPort(t, f[1]) != udpPort {
			t.Errorf("set %d is not on the ports of set 0 (%d, %d)", id, tcpPort, udpPort)
		}
		for _, file := range f[:2] {
			if seen[inode(t, file)] {
				t.Errorf("set %d shares an IP socket with another set", id)
			}
			seen[inode(t, file)] = true
		}
		if f[2] != first[2] {
			t.Errorf("set %d has a Unix socket of its own; one path is one socket", id)
		}
	}
	if got := answering(t, fmt.Sprintf("127.0.0.1:%d", tcpPort), first[0], s.Files(1)[0], s.Files(2)[0]); len(got) != 3 {
		t.Errorf("only sets %v got connections, want all 3", got)
	}
	if s.Files(4)[0] != s.Files(1)[0] {
		t.Errorf("worker 4 does not use set 4 %% 3 = 1")
	}
}

func TestSetsCloseUnusedAndReopen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	s := mustOpenSets(t, 3, true, "tcp4://127.0.0.1:0", "unix://"+sock)
	port := boundPort(t, s.Files(0)[0])
	set1, set2 := s.Files(1), s.Files(2)

	// Workers 0 and 4 (set 1) remain: only set 2 has nobody.
	if closed := s.CloseUnused([]int{0, 4}); len(closed) != 1 || closed[0] != 2 {
		t.Fatalf("CloseUnused([0 4]) closed %v, want [2]", closed)
	}
	if !isClosed(t, set2[0]) || isClosed(t, set1[0]) || s.IsOpen(2) || !s.IsOpen(4) {
		t.Fatalf("after closing set 2: its TCP socket closed %v, set 1's %v; IsOpen(2) %v", isClosed(t, set2[0]), isClosed(t, set1[0]), s.IsOpen(2))
	}
	if isClosed(t, set2[1]) {
		t.Fatalf("closing set 2 closed the Unix socket every set shares")
	}
	roundTrip(t, s.Files(0)[1], "unix", sock)
	if s.Files(2)[0] != s.Files(0)[0] {
		t.Errorf("Files of a closed set are not set 0's")
	}

	// Worker 5 is in set 2: re-opened on set 0's port, in its group.
	if err := s.Reopen(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	again := s.Files(2)
	if !s.IsOpen(2) || again[0] == s.Files(0)[0] || boundPort(t, again[0]) != port || again[1] != s.Files(0)[1] {
		t.Fatalf("re-opened set 2 = %v, want its own socket on port %d and set 0's Unix socket", again, port)
	}
	checkPassable(t, again[0])
	if got := answering(t, fmt.Sprintf("127.0.0.1:%d", port), s.Files(0)[0], s.Files(1)[0], again[0]); !got[2] {
		t.Errorf("the re-opened set got no connection (sets %v did): it is not in set 0's group", got)
	}
	if err := s.Reopen(context.Background(), 2); err != nil || s.Files(2)[0] != again[0] {
		t.Errorf("Reopen of an open set: %v, or it bound a new socket", err)
	}

	if closed := s.CloseUnused(nil); len(closed) != 2 || closed[0] != 1 || closed[1] != 2 {
		t.Errorf("CloseUnused(nil) closed %v, want [1 2]: never set 0", closed)
	}
	if isClosed(t, s.Files(0)[0]) || isClosed(t, s.Files(0)[1]) {
		t.Errorf("set 0 was closed")
	}
}

func TestSetsReopenError(t *testing.T) {
	s := mustOpenSets(t, 2, true, "tcp4://127.0.0.1:0")
	s.CloseUnused([]int{0})
	// No descriptor above 2 may be allocated: the re-bind's socket fails.
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = 3
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	err := s.Reopen(context.Background(), 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	var oe *OpenError
	if err == nil || !errors.As(err, &oe) || !errors.Is(err, syscall.EMFILE) || s.IsOpen(1) {
		t.Fatalf("Reopen without descriptors: %v (IsOpen %v); want an OpenError wrapping EMFILE, set closed", err, s.IsOpen(1))
	}
	if want := "re-open socket set 1: cannot listen on tcp4://"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	if err := s.Reopen(context.Background(), 1); err != nil || !s.IsOpen(1) {
		t.Fatalf("Reopen once descriptors are back: %v", err)
	}
}

func TestOpenSetsErrors(t *testing.T) {
	// A failed second set leaves nothing open: its port can be bound again.
	busy := mustOpen(t, "tcp4://127.0.0.1:0", false)
	free := mustOpen(t, "tcp4://127.0.0.1:0", false)
	freePort := boundPort(t, free)
	free.Close()
	addrs := []Addr{
		mustParse(t, fmt.Sprintf("tcp4://127.0.0.1:%d", freePort)),
		mustParse(t, fmt.Sprintf("tcp4://127.0.0.1:%d", boundPort(t, busy))),
	}
	s, err := OpenSets(context.Background(), addrs, 2, true)
	var oe *OpenError
	if s != nil || !errors.As(err, &oe) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("OpenSets on a busy port: %v, %v; want an OpenError wrapping EADDRINUSE", s, err)
	}
	mustOpen(t, addrs[0].String(), false)

	if _, err := OpenSets(context.Background(), addrs[:1], 2, false); err == nil {
		t.Errorf("OpenSets of 2 sets without SO_REUSEPORT: no error")
	}
	if _, err := OpenSets(context.Background(), addrs[:1], 0, true); err == nil {
		t.Errorf("OpenSets of 0 sets: no error")
	}
}

func TestReadMigrateReq(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		want    bool
		err     bool
	}{{"1\n", true, false}, {"0\n", false, false}, {"2\n", false, true}} {
		path := filepath.Join(dir, "v")
		if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := readMigrateReq(path); got != c.want || (err != nil) != c.err {
			t.Errorf("%q: %v, %v; want %v, error %v", c.content, got, err, c.want, c.err)
		}
	}
	if got, err := readMigrateReq(filepath.Join(dir, "missing")); got || err == nil {
		t.Errorf("missing file: %v, %v; want false and an error naming Linux 5.14", got, err)
	}
}

// TestSetsCloseMigratesQueuedConnections is why goinit may close a slot's
// set only with net.ipv4.tcp_migrate_req=1: connections wait, not accepted,
// in the queues of two sets; set 1 is closed. With the sysctl every one of
// them is then accepted on set 0; without it the ones queued on set 1 are
// reset. A network namespace of the test's own holds the sysctl.
func TestSetsCloseMigratesQueuedConnections(t *testing.T) {
	requireRoot(t)
	for _, migrate := range []bool{true, false} {
		t.Run(fmt.Sprintf("tcp_migrate_req=%v", migrate), func(t *testing.T) {
			th, err := netns.New()
			if err != nil {
				t.Fatal(err)
			}
			defer th.Close()
			value := map[bool]string{true: "1", false: "0"}[migrate]
			addrs := []Addr{mustParse(t, "tcp4://127.0.0.1:0")}
			var s *Sets
			var got bool
			th.Do(func() {
				if err = netns.WriteSysctl("net.ipv4.tcp_migrate_req=" + value); err != nil {
					return
				}
				if got, err = TCPMigrateReq(); err != nil {
					return
				}
				s, err = OpenSets(context.Background(), addrs, 2, true)
			})
			if err != nil || got != migrate {
				t.Fatalf("set up: %v; TCPMigrateReq %v, want %v", err, got, migrate)
			}
			defer s.Close()
			addr := fmt.Sprintf("127.0.0.1:%d", boundPort(t, s.Files(0)[0]))

			const n = 64
			conns := make([]net.Conn, n)
			for i := range conns {
				if conns[i], err = th.Dial("tcp4", addr, 5*time.Second); err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				defer conns[i].Close()
			}
			if closed := s.CloseUnused([]int{0}); len(closed) != 1 {
				t.Fatalf("CloseUnused closed %v, want set 1", closed)
			}
			l, err := net.FileListener(s.Files(0)[0])
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go serveOK(l)

			ok, reset := 0, 0
			for i, c := range conns {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b, err := io.ReadAll(c)
				switch {
				case err == nil && string(b) == "ok":
					ok++
				case errors.Is(err, syscall.ECONNRESET):
					reset++
				default:
					t.Fatalf("connection %d: %q, %v; want ok or a reset", i, b, err)
				}
			}
			t.Logf("%d answered on set 0, %d reset", ok, reset)
			if migrate && reset != 0 {
				t.Fatalf("%d connections reset, want all %d moved to set 0", reset, n)
			}
			if !migrate && (reset == 0 || ok == 0) {
				t.Fatalf("%d reset and %d answered: want the ones queued on the closed set reset", reset, ok)
			}
		})
	}
}

// serveOK answers "ok" on every connection l accepts, until it is closed.
func serveOK(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("ok"))
		c.Close()
	}
}
