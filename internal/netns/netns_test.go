package netns

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) { t.Helper(); testbin.RequireRoot(t, "network namespaces") }

func readSysctl(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A new namespace has its own loopback, up, and its own sysctls; a thread
// that joins it by path reaches its sockets.
func TestNewAndJoin(t *testing.T) {
	requireRoot(t)
	const sysctl = "net.ipv4.tcp_migrate_req"
	host := readSysctl(t, sysctl)
	th, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var l net.Listener
	var path, inside string
	th.Do(func() {
		path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if l, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return
		}
		if err = WriteSysctl(sysctl + "=1"); err != nil {
			return
		}
		inside = readSysctl(t, sysctl)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if inside != "1" || readSysctl(t, sysctl) != host {
		t.Fatalf("%s is %s inside and %s outside (was %s): want 1 inside only", sysctl, inside, readSysctl(t, sysctl), host)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()

	joined, err := Join(path)
	if err != nil {
		t.Fatal(err)
	}
	defer joined.Close()
	c, err := joined.Dial("tcp4", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial the namespace's listener from a joined thread: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v; want hi", b, err)
	}
}

func TestWriteSysctlErrors(t *testing.T) {
	for _, s := range []string{"net.ipv4.tcp_migrate_req", "=1", "../x=1"} {
		if err := WriteSysctl(s); err == nil {
			t.Errorf("WriteSysctl(%q): no error", s)
		}
	}
}
