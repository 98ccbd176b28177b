package health

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

// probeBound is how long a probe may take while other clients hold every
// slot: the kubelet's default probe timeout is 1 s, and the tests' head
// timeout is 30 s, so a probe that waits for a slot to time out fails.
const probeBound = 2 * time.Second

// probe sends the kubelet's request for /healthz on a fresh connection and
// returns the answer, failing the test if it takes longer than probeBound.
func probe(t *testing.T, addr, why string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(probeBound))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("a probe %s was not answered within %s: %v (got %q)", why, time.Since(start).Round(time.Millisecond), err, b)
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) {
		t.Fatalf("a probe %s: %q, want a 200", why, b)
	}
	return b
}

// closedByServer waits up to 5 s for the server to close c: a read then
// ends in EOF, or in a reset if the server closed it with bytes unread.
func closedByServer(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// TestEvictsHeadless: clients that connect and send nothing, or trickle a
// head that never ends, cannot make a probe wait for their head timeout.
// With every slot held by them, each new connection (two more of theirs,
// then a probe) evicts the one that has waited longest, which the server
// closes; the others keep their connections, and the probe is answered at
// once.
func TestEvictsHeadless(t *testing.T) {
	const maxConns, extra = 8, 2
	for _, tc := range []struct {
		name string
		// hold starts what the client on c sends, until c is closed.
		hold func(c net.Conn)
	}{
		{"idle", func(net.Conn) {}},
		{"trickling", func(c net.Conn) {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				return
			}
			go func() {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for range tick.C {
					if _, err := c.Write([]byte{'s'}); err != nil {
						return // evicted, or closed by the test
					}
				}
			}()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, pub := serve(t, Options{MaxConns: maxConns, ReadHeaderTimeout: 30 * time.Second})
			pub.Publish(statetest.Sample(time.Now()))
			addr := strings.TrimPrefix(base, "http://")
			// The accept queue is first in, first out: the server takes
			// these in this order, and all of them before the probe.
			held := make([]net.Conn, maxConns+extra)
			for i := range held {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tc.hold(c)
				held[i] = c
			}
			start := time.Now()
			probe(t, addr, "while "+tc.name+" clients held every slot")
			t.Logf("probe answered in %s", time.Since(start).Round(time.Microsecond))
			evicted := extra + 1
			for i := range evicted {
				if err := closedByServer(held[i]); err != nil {
					t.Fatalf("connection %d, one of the %d held longest, was not closed by the server: %v", i, evicted, err)
				}
			}
			// The server closed the evicted ones before it answered the
			// probe that evicted the last of them, so any other it had
			// closed would be closed by now too; this can only miss a wrong
			// eviction, never report one that did not happen.
			still := time.Now().Add(50 * time.Millisecond)
			for i := evicted; i < len(held); i++ {
				held[i].SetReadDeadline(still)
				if _, err := held[i].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("connection %d, younger than the %d evicted, was closed too: %v", i, evicted, err)
				}
			}
			// Later probes are as prompt, taking the slot the first one
			// left or, if its connection is not released yet, evicting
			// again.
			for range 3 {
				probe(t, addr, "after an eviction")
			}
		})
	}
}

// listenerInode returns the socket inode of ln, the key of
// [state.ListenQueues].
func listenerInode(t *testing.T, ln net.Listener) uint64 {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatalf("fstat of the listener: %v %v", err, serr)
	}
	return st.Ino
}

// TestAnsweringNotEvicted: a connection being answered keeps its slot.
// With MaxConns 1 and the only slot answering a scrape (held inside
// Queues), a probe is accepted and waits; the scrape gets its whole answer
// and then the probe is served.
func TestAnsweringNotEvicted(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inode := listenerInode(t, ln)
	base, pub, stop := startOn(t, ln, Options{MaxConns: 1, ReadHeaderTimeout: 30 * time.Second,
		Queues: func() (map[uint64]uint64, error) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
			return nil, nil
		}})
	defer func() {
		if err := stop(5 * time.Second); err != nil {
			t.Error(err)
		}
	}()
	pub.Publish(statetest.Sample(time.Now()))
	addr := strings.TrimPrefix(base, "http://")

	send := func(raw string) <-chan []byte {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			c.Close()
			t.Fatal(err)
		}
		answer := make(chan []byte, 1)
		go func() {
			defer c.Close()
			b, _ := io.ReadAll(c)
			answer <- b
		}()
		return answer
	}
	scrape := send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the scrape did not reach Queues")
	}
	probed := send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	// The probe is in the server's hands once the kernel's accept queue is
	// empty again.
	deadline := time.Now().Add(5 * time.Second)
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		q, err := state.ListenQueues()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q[inode]; !ok {
			t.Fatalf("listener inode %d not in /proc/net/tcp", inode)
		}
		if q[inode] == 0 {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("the server did not accept the probe while its only slot was answering")
		}
		<-poll.C
	}
	select {
	case b := <-probed:
		t.Fatalf("a probe was answered (%q) while the only slot was answering a scrape", b)
	default:
	}
	close(release)

	b := <-scrape
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("the scrape's answer is not HTTP: %v\n%q", err, b)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "goinit_ready_workers 2\n") {
		t.Fatalf("the scrape the probe waited for: %d, %v, %d bytes, want 200 and the whole body:\n%s", resp.StatusCode, err, len(body), body)
	}
	if b := <-probed; !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) {
		t.Fatalf("the probe, once the scrape was answered: %q, want a 200", b)
	}
}
