package health

import (
	"container/list"
	"context"
	"net"
	"sync"
	"time"
)

// slots caps the connections served at once and chooses which to evict
// when a new one arrives and every slot is taken: the one that has waited
// longest without completing its request head. A probe or a scrape sends
// its head as soon as it connects, so the connections still without one
// when the slots run out are idle or trickling, and the oldest of them has
// had the most time. A connection being answered is never evicted: its
// client did its part, and cutting it would lose the answer.
//
// One goroutine (the accept loop) calls admit; the connections' own
// goroutines call answering and release.
type slots struct {
	max   int
	freed chan struct{} // capacity 1: a slot was released since admit last looked

	mu      sync.Mutex
	used    int       // slots taken, by evicted connections too until they release
	reading list.List // of *slot still reading their head, oldest first
	evicted int       // slots evicted and not yet released
}

// slot is one admitted connection.
type slot struct {
	c        net.Conn
	admitted time.Time
	elem     *list.Element // in slots.reading while the head is read; nil after
	evicted  bool
}

func newSlots(n int) *slots {
	return &slots{max: n, freed: make(chan struct{}, 1)}
}

// admit returns a slot for c, reading its head. When every slot is taken
// it evicts the oldest connection still reading its head (closing it makes
// that connection's read fail at once) and waits for its goroutine to
// release the slot, so that there are never more than max goroutines; if
// every slot is answering, it waits for one to finish. It returns nil if
// ctx ends first.
func (s *slots) admit(ctx context.Context, c net.Conn) *slot {
	for {
		s.mu.Lock()
		if s.used < s.max {
			s.used++
			sl := &slot{c: c, admitted: time.Now()}
			sl.elem = s.reading.PushBack(sl)
			s.mu.Unlock()
			return sl
		}
		// One eviction at a time: the wake-up below may be for a slot
		// released before this call, and must not evict a second one for
		// the same new connection.
		var victim *slot
		if s.evicted == 0 {
			if e := s.reading.Front(); e != nil {
				victim = s.reading.Remove(e).(*slot)
				victim.elem, victim.evicted = nil, true
				s.evicted++
			}
		}
		s.mu.Unlock()
		if victim != nil {
			victim.c.Close()
		}
		select {
		case <-s.freed:
		case <-ctx.Done():
			return nil
		}
	}
}

// answering marks sl's head as read, whatever it held: from now on sl is
// answered and never evicted. It returns false if sl was evicted first
// (even if its head arrived in the instant it was chosen); its connection
// is closed then, and gets no answer.
func (s *slots) answering(sl *slot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl.evicted {
		return false
	}
	if sl.elem != nil {
		s.reading.Remove(sl.elem)
		sl.elem = nil
	}
	return true
}

// release gives sl's slot back once its connection is closed.
func (s *slots) release(sl *slot) {
	s.mu.Lock()
	if sl.elem != nil {
		s.reading.Remove(sl.elem)
		sl.elem = nil
	}
	if sl.evicted {
		s.evicted--
	}
	s.used--
	s.mu.Unlock()
	select {
	case s.freed <- struct{}{}:
	default: // a wake-up is already pending
	}
}
