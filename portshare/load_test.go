package portshare

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// loadCounts are the outcomes of a bounded loopback load.
type loadCounts struct {
	ok, refused, other atomic.Int64
	done               chan struct{} // closed when every client has returned
}

// load runs clients goroutines asking addr, each request on a new
// connection (like wrk -H 'Connection: close'), until stop is closed. A
// refused connection on loopback may surface at connect or at the first
// write: both are counted as refused.
func load(addr string, clients int, stop <-chan struct{}) *loadCounts {
	c := &loadCounts{done: make(chan struct{})}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := ask(addr)
				switch {
				case err == nil:
					c.ok.Add(1)
				case errors.Is(err, syscall.ECONNREFUSED):
					c.refused.Add(1)
				default:
					// A reset or EOF: a request the killed process had
					// already accepted. Not a refusal.
					c.other.Add(1)
				}
			}
		})
	}
	go func() { wg.Wait(); close(c.done) }()
	return c
}

// answered waits until the load has had n requests answered.
func (c *loadCounts) answered(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for c.ok.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests answered within 20s (%d refused)", c.ok.Load(), n, c.refused.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SIGKILL of a worker under load refuses no connection: the held socket's
// queue outlives it, and its replacement's bind gets the same socket.
func TestKillUnderLoadRefusesNothing(t *testing.T) {
	requireRoot(t)
	node := testbin.Tool(t, "node")
	for _, workers := range []int{2, 1} {
		t.Run(strconv.Itoa(workers)+" workers", func(t *testing.T) {
			s := newSharer(t, Policy{Mode: Auto})
			port := testbin.FreePort(t)
			addr := "127.0.0.1:" + strconv.Itoa(port)
			start := func(id int) *worker {
				w := startWorker(t, s, id, -1, nil, node, "-e", nodeServer, strconv.Itoa(port))
				w.line("bound")
				return w
			}
			var ws []*worker
			for id := range workers {
				ws = append(ws, start(id))
			}
			stop := make(chan struct{})
			c := load(addr, 8, stop)
			c.answered(t, 200) // traffic before the kill
			held := onlyHeld(t, s)
			ws[0].stop()
			// A restart delay like goinit's first backoff: with one
			// worker, clients wait in the queue meanwhile.
			time.Sleep(200 * time.Millisecond)
			repl := start(workers)
			pidsAnswering(t, addr, port, repl.cmd.Process.Pid)
			c.answered(t, c.ok.Load()+200) // traffic through the replacement
			close(stop)
			select {
			case <-c.done:
			case <-time.After(20 * time.Second):
				t.Fatal("load did not stop")
			}
			t.Logf("%d answered, %d refused, %d lost in the killed worker", c.ok.Load(), c.refused.Load(), c.other.Load())
			if c.refused.Load() != 0 {
				t.Fatalf("%d connections refused", c.refused.Load())
			}
			if c.ok.Load() < 100 {
				t.Fatalf("only %d requests answered: the load did not run", c.ok.Load())
			}
			if h := onlyHeld(t, s); h != held {
				t.Fatal("the replacement got a new held socket")
			}
			// The replacement's listening descriptor is the held socket
			// itself. Which number Node gives it depends on what the
			// environment left open, so every descriptor is searched.
			fdFlags(t, repl.cmd.Process.Pid, held.ino)
		})
	}
}

// A socket goinit bound itself (--listen) is the one a worker's own bind
// of that address gets, whatever the protocol: Node (TCP) binds the
// address of a Go (MPTCP) listener.
func TestHeldListenSocketIsGivenToWorkers(t *testing.T) {
	requireRoot(t)
	node := testbin.Tool(t, "node")
	s := newSharer(t, Policy{Mode: Auto})
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	port := l.Addr().(*net.TCPAddr).Port
	w := startWorker(t, s, 0, -1, nil, node, "-e", nodeServer, strconv.Itoa(port))
	w.line("bound")
	pidsAnswering(t, "[::1]:"+strconv.Itoa(port), port, w.cmd.Process.Pid)
	if e := waitEvent(t, s, Shared, 0); e.Addr.Port() != uint16(port) {
		t.Fatalf("shared event for %s, want port %d", e.Addr, port)
	}
	if n := heldCount(s); n != 1 {
		t.Fatalf("goinit holds %d sockets, want the one from --listen", n)
	}
}
