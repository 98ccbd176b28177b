// Package netns is for tests that need a network namespace of their own, as
// a container has: a fresh one for a test's sockets, or a running goinit's to
// connect into, and the set-up a container runtime does in a new one (the
// loopback interface up, namespaced sysctls). A new namespace is what lets a
// test set a sysctl such as net.ipv4.tcp_migrate_req without touching the
// host's. Everything here needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
package netns

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Thread runs functions on one OS thread that is in another network
// namespace. A socket belongs to the namespace of the thread that created
// it, so only the creation (a dial, a listen) must happen in [Thread.Do];
// any goroutine may use the socket afterwards.
type Thread struct {
	do chan func()
}

// New starts a thread in a new network namespace with its loopback
// interface up.
func New() (*Thread, error) {
	return start(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare a network namespace: %w", err)
		}
		return LoopbackUp()
	})
}

// Join starts a thread in the network namespace at path, such as
// /proc/PID/ns/net.
func Join(path string) (*Thread, error) {
	return start(func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter the network namespace %s: %w", path, err)
		}
		return nil
	})
}

// start runs enter on a goroutine locked to its thread, which then runs
// what Do sends it.
func start(enter func() error) (*Thread, error) {
	t := &Thread{do: make(chan func())}
	entered := make(chan error, 1)
	go func() {
		// Never unlocked: the thread's namespace differs from every
		// other thread's, so no other goroutine may ever run on it. The
		// runtime ends a thread whose goroutine returns while locked.
		runtime.LockOSThread()
		if err := enter(); err != nil {
			entered <- err
			return
		}
		entered <- nil
		for f := range t.do {
			f()
		}
	}()
	if err := <-entered; err != nil {
		return nil, err
	}
	return t, nil
}

// Do runs f on the thread and waits for it. Calls from several goroutines
// run one at a time.
func (t *Thread) Do(f func()) {
	ran := make(chan struct{})
	t.do <- func() {
		defer close(ran)
		f()
	}
	<-ran
}

// Dial connects from the thread's namespace, as net.DialTimeout does.
func (t *Thread) Dial(network, address string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	t.Do(func() { c, err = net.DialTimeout(network, address, timeout) })
	return c, err
}

// Close ends the thread, once no Do is running or will be called.
func (t *Thread) Close() { close(t.do) }

// LoopbackUp sets lo up in the calling thread's network namespace: a new
// namespace has it down, so nothing could connect to 127.0.0.1.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// WriteSysctl sets a sysctl given as NAME=VALUE (for example
// net.ipv4.tcp_migrate_req=1) through /proc/sys; a network sysctl is set in
// the calling thread's network namespace.
func WriteSysctl(setting string) error {
	name, value, ok := strings.Cut(setting, "=")
	if !ok || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("sysctl %q: want NAME=VALUE, e.g. net.ipv4.tcp_migrate_req=1", setting)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s: %w", setting, err)
	}
	return nil
}
