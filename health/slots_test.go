package health

import (
	"context"
	"net"
	"testing"
	"time"
)

// accepted returns the server ends of n loopback connections, in order.
func accepted(t *testing.T, n int) []net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out []net.Conn
	for range n {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// TestSlotsOneEviction: a new connection evicts one connection, the oldest
// still reading its head, even when admit is woken by a release from
// before it was called; and a connection being answered is passed over.
func TestSlotsOneEviction(t *testing.T) {
	conns := accepted(t, 6)
	s := newSlots(3)
	ctx := context.Background()
	answered := s.admit(ctx, conns[0])
	if !s.answering(answered) {
		t.Fatal("a connection nobody evicted cannot be answered")
	}
	oldest := s.admit(ctx, conns[1])
	s.release(s.admit(ctx, conns[2])) // a wake-up nobody waits for
	younger := s.admit(ctx, conns[3])

	// oldest's own goroutine: its read fails once it is evicted; it
	// releases its slot only after admit has taken the stale wake-up, so
	// that admit has had the chance to evict again.
	released := make(chan bool, 1)
	go func() {
		oldest.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		oldest.c.Read(make([]byte, 1))
		poll := time.NewTicker(time.Millisecond)
		defer poll.Stop()
		for deadline := time.Now().Add(5 * time.Second); len(s.freed) > 0 && time.Now().Before(deadline); {
			<-poll.C
		}
		ok := s.answering(oldest)
		s.release(oldest)
		released <- ok
	}()
	admitted := make(chan *slot, 1)
	go func() { admitted <- s.admit(ctx, conns[4]) }()
	var sl *slot
	select {
	case sl = <-admitted:
	case <-time.After(5 * time.Second):
		t.Fatal("admit did not evict the oldest connection reading its head")
	}
	if sl == nil {
		t.Fatal("admit = nil without a cancelled context")
	}
	if ok := <-released; ok || !oldest.evicted {
		t.Errorf("the oldest connection reading its head: answering = %v, evicted = %v; want it evicted", ok, oldest.evicted)
	}
	if answered.evicted || younger.evicted {
		t.Errorf("evicted too: the answered connection %v, the younger one %v", answered.evicted, younger.evicted)
	}

	// With every slot answering, admit waits, until ctx ends.
	for _, sl := range []*slot{younger, sl} {
		s.answering(sl)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if got := s.admit(cctx, conns[5]); got != nil || answered.evicted || younger.evicted || sl.evicted {
		t.Errorf("admit with every slot answering = %v, evicted %v %v %v; want nil and none", got, answered.evicted, younger.evicted, sl.evicted)
	}
}
