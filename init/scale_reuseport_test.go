package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/netns"
)

// reuseportAddr is the --listen address of the scaling tests. They run in a
// network namespace of their own, where nothing else listens.
const reuseportAddr = "127.0.0.1:8080"

// startReuseport starts goinit as PID 1 of new PID and network namespaces,
// with the sysctls set there, running 3 bindservers with one SO_REUSEPORT
// socket each and a control socket; it waits until all 3 answer and
// returns the thread that dials into goinit's namespace.
func startReuseport(t *testing.T, sysctls ...string) (p *proc, sock string, th *netns.Thread) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "control.sock")
	p = start(t, runOpts{pid1: true, netns: true, sysctls: sysctls},
		"--workers=3", "--balance=reuseport", "--listen="+reuseportAddr, "--control="+sock, "--", bindServer(t))
	th, err := netns.Join(fmt.Sprintf("/proc/%d/ns/net", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(th.Close)
	waitWorkersAnswer(t, th, 3)
	return p, sock, th
}

// ask does one request on a new connection dialled in th's namespace and
// returns the worker id that answered; dialErr tells a connection that
// could not be opened (refused) from one that got no complete answer.
func ask(th *netns.Thread, timeout time.Duration) (worker string, dialErr, err error) {
	c, err := th.Dial("tcp", reuseportAddr, timeout)
	if err != nil {
		return "", err, nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "", nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", nil, fmt.Errorf("%w after %q", err, b)
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	var a answer
	if !strings.HasPrefix(string(b), "HTTP/1.0 200") || !ok || json.Unmarshal([]byte(body), &a) != nil {
		return "", nil, fmt.Errorf("bad answer %q", b)
	}
	return a.Worker, nil, nil
}

// waitWorkersAnswer sends bounded bursts of requests until want distinct
// workers answered, and fails if another one does.
func waitWorkersAnswer(t *testing.T, th *netns.Thread, want int) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; len(seen) < want; i++ {
		if i == 2000 || time.Now().After(deadline) {
			t.Fatalf("workers %v answered in %d requests, want %d distinct", seen, i, want)
		}
		if w, _, _ := ask(th, 2*time.Second); w != "" {
			seen[w] = true // errors: not all are listening yet
		}
	}
	for w := range seen {
		if n, err := strconv.Atoi(w); err != nil || n >= want {
			t.Fatalf("worker %q answered, want ids below %d", w, want)
		}
	}
}

// listeners counts the TCP sockets listening on reuseportAddr in the
// network namespace of process pid, and how many of them pid holds (a
// socket once, whatever its number of descriptors: the port sharer holds a
// second one of set 0's).
func listeners(t *testing.T, pid int) (inNetns, held int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inodes := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fl := strings.Fields(sc.Text())
		if len(fl) > 9 && fl[1] == "0100007F:1F90" && fl[3] == "0A" { // 127.0.0.1:8080, LISTEN
			inodes["socket:["+fl[9]+"]"] = true
		}
	}
	holds := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[l] {
			holds[l] = true
		}
	}
	return len(inodes), len(holds)
}

// waitListeners waits until want sockets listen on reuseportAddr in
// goinit's namespace, each of them held by goinit.
func waitListeners(t *testing.T, p *proc, want int) {
	t.Helper()
	var n, held int
	deadline := time.Now().Add(20 * time.Second)
	for n, held = listeners(t, p.cmd.Process.Pid); n != want || held != want; n, held = listeners(t, p.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets listen on %s, %d of them held by goinit; want %d", n, reuseportAddr, held, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// netnsLoad keeps 8 clients sending requests, each on a new connection
// dialled in a network namespace, until stop, 20000 requests or 60 s,
// and counts what became of them.
type netnsLoad struct {
	mu       sync.Mutex
	issued   int
	answered int
	refused  []string // could not connect
	failed   []string // connected, but no complete answer
	stopc    chan struct{}
	wg       sync.WaitGroup
}

func startNetnsLoad(th *netns.Thread) *netnsLoad {
	l := &netnsLoad{stopc: make(chan struct{})}
	deadline := time.Now().Add(60 * time.Second)
	for range 8 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for l.next(deadline) {
				_, dialErr, err := ask(th, 5*time.Second)
				l.mu.Lock()
				switch {
				case dialErr != nil:
					l.refused = append(l.refused, dialErr.Error())
				case err != nil:
					l.failed = append(l.failed, err.Error())
				default:
					l.answered++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// next takes one request of the budget, unless the load is over.
func (l *netnsLoad) next(deadline time.Time) bool {
	select {
	case <-l.stopc:
		return false
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.issued == 20000 || time.Now().After(deadline) {
		return false
	}
	l.issued++
	return true
}

// count is how many requests were answered so far.
func (l *netnsLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answered
}

// stop ends the load and fails the test if any request was refused or
// failed.
func (l *netnsLoad) stop(t *testing.T) {
	t.Helper()
	close(l.stopc)
	l.wg.Wait()
	t.Logf("load: %d answered, %d refused, %d failed", l.answered, len(l.refused), len(l.failed))
	if len(l.refused) > 0 || len(l.failed) > 0 {
		t.Fatalf("%d requests refused %q, %d failed %q", len(l.refused), first(l.refused), len(l.failed), first(l.failed))
	}
}

// first is the start of a long list of errors.
func first(errs []string) []string { return errs[:min(len(errs), 5)] }

// TestReuseportScaleDownMigrates scales 3 reuseport workers down to 1 under
// a steady load, in a network namespace where net.ipv4.tcp_migrate_req=1:
// goinit closes the scaled-away slots' sockets once their workers are gone,
// the kernel moves the connections queued on them to worker 0's socket,
// and not one request is refused or fails. Scaling back to 3 binds their
// sockets again and all 3 workers serve.
func TestReuseportScaleDownMigrates(t *testing.T) {
	requireRoot(t)
	p, sock, th := startReuseport(t, "net.ipv4.tcp_migrate_req=1")
	waitListeners(t, p, 3)

	load := startNetnsLoad(th)
	eventually(t, 20*time.Second, "200 answers before the scale-down", func() bool { return load.count() >= 200 })
	if code, out := cli(t, sock, "scale", "1"); code != 0 {
		t.Fatalf("goinit scale 1: exit %d %q", code, out)
	}
	waitListeners(t, p, 1)
	// The load goes on past the close, so that connections hashed to the
	// closed sockets just before it had to be migrated.
	after := load.count() + 300
	deadline := time.Now().Add(20 * time.Second)
	for load.count() < after && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	load.stop(t) // first: a stalled load is explained by its failures
	if load.count() < after {
		t.Fatalf("fewer than 300 answers within 20 s of the close")
	}
	if !strings.Contains(p.errText(), "closed the --balance=reuseport socket(s) of worker 2") {
		t.Errorf("no log line for the closed socket of worker 2")
	}
	waitWorkersAnswer(t, th, 1)

	if code, out := cli(t, sock, "scale", "3"); code != 0 {
		t.Fatalf("goinit scale 3: exit %d %q", code, out)
	}
	waitListeners(t, p, 3)
	waitWorkersAnswer(t, th, 3)
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestReuseportScaleDownRefusedWithoutMigrate: with net.ipv4.tcp_migrate_req=0
// closing a slot's socket would reset the connections queued on it, so
// scaling below the starting count is refused, by the control socket and
// by SIGTTOU, with a message that names the sysctl, and goinit keeps its 3
// workers and sockets.
func TestReuseportScaleDownRefusedWithoutMigrate(t *testing.T) {
	requireRoot(t)
	p, sock, th := startReuseport(t, "net.ipv4.tcp_migrate_req=0")
	const why = "not scaling below 3 workers with --balance=reuseport: the removed worker's socket would drop the connections queued on it; " +
		"set net.ipv4.tcp_migrate_req=1 in the container"
	code, out := cli(t, sock, "scale", "1")
	if code == 0 || !strings.Contains(out, why) || !strings.Contains(out, "--balance=shared") {
		t.Fatalf("goinit scale 1: exit %d %q; want non-zero and %q", code, out, why)
	}
	p.signal(syscall.SIGTTOU)
	eventually(t, 10*time.Second, "the SIGTTOU refusal in the log", func() bool { return strings.Contains(p.errText(), why) })
	if s := status(t, sock); s.Pool.Workers != 3 {
		t.Fatalf("%d workers after the refused scale-downs, want 3", s.Pool.Workers)
	}
	waitListeners(t, p, 3)
	waitWorkersAnswer(t, th, 3)
}
