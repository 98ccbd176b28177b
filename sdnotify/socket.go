package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// warnEvery limits rejected-sender warnings per socket, so a process
// flooding a socket cannot flood goinit's log.
const warnEvery = time.Second

// Socket is the notify socket of one start of one process. Its methods may
// be called from any goroutine and return at once.
type Socket[K comparable] struct {
	key  K
	hub  *Hub[K]
	addr string
	conn *net.UnixConn

	pidOnce sync.Once
	pid     int           // set once, before started is closed
	started chan struct{} // closed by SetPID
	done    chan struct{} // closed by Close
	once    sync.Once
	wg      sync.WaitGroup

	// Owned by the reader goroutine.
	mainPID  int
	lastWarn time.Time
	quiet    int // rejections not logged at warning level since lastWarn
	stats    counters
}

// Addr returns the socket's address, "@goinit-..." ('@' for the abstract
// namespace, as sd_notify(3) reads it).
func (s *Socket[K]) Addr() string { return s.addr }

// Env returns the NOTIFY_SOCKET entry for the process's environment.
func (s *Socket[K]) Env() string { return EnvSocket + "=" + s.addr }

// Key returns the name the socket was opened with.
func (s *Socket[K]) Key() K { return s.key }

// Stats returns this socket's counters.
func (s *Socket[K]) Stats() Stats { return s.stats.load() }

// SetPID names the process that was started with this socket, and starts
// reading: datagrams sent before wait in the kernel until then. Only the
// first call counts.
func (s *Socket[K]) SetPID(pid int) {
	s.pidOnce.Do(func() {
		s.pid = pid
		close(s.started)
	})
}

// Close closes the socket and ends its reader. Datagrams not yet read are
// discarded by the kernel, with the descriptors they carried. It is safe to
// call more than once.
func (s *Socket[K]) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.conn.Close()
		s.wg.Wait()
	})
	return err
}

func (s *Socket[K]) count(st stat) {
	s.stats[st].Add(1)
	s.hub.total[st].Add(1)
}

// read is the reader goroutine: one datagram at a time, each handled in full
// before the next is read (see the package doc on barriers).
func (s *Socket[K]) read() {
	defer s.wg.Done()
	select {
	case <-s.started:
	case <-s.done:
		return
	}
	buf := make([]byte, MaxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*maxFDs))
	for {
		n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			select {
			case <-s.done:
			default:
				s.hub.log.Error(fmt.Sprintf("notify socket of %v: cannot read, ignoring it from now on: %v", s.key, err))
			}
			return
		}
		if !s.datagram(buf[:n], oob[:oobn], flags) {
			return
		}
	}
}

// datagram handles one datagram; it returns false once Close was called.
// The descriptors that came with it are closed last: a sender waiting on a
// barrier is thereby still alive for the peer check of what it sent before.
func (s *Socket[K]) datagram(msg, oob []byte, flags int) bool {
	s.count(statReceived)
	cred, fds := control(oob)
	defer func() {
		for _, fd := range fds {
			s.count(statFDs) // before: the close lets the sender go on
			unix.Close(fd)
		}
	}()
	if flags&unix.MSG_CTRUNC != 0 {
		s.hub.log.Debug(fmt.Sprintf("notify socket of %v: a datagram brought more than %d descriptors; the kernel closed the rest", s.key, maxFDs))
	}
	if flags&unix.MSG_TRUNC != 0 {
		s.count(statTruncated)
		s.hub.log.Debug(fmt.Sprintf("notify socket of %v: dropped a datagram longer than %d bytes", s.key, MaxDatagram))
		return true
	}
	var pid int
	if cred != nil {
		pid = int(cred.Pid)
	}
	if ok, why := s.check(pid); !ok {
		s.reject(pid, why)
		return true
	}
	s.count(statAccepted)
	f := parse(string(msg))
	if f.barrier {
		s.count(statBarriers)
	}
	if f.mainPID != 0 {
		if ok, _ := descends(f.mainPID, s.pid, s.mainPID); ok {
			s.mainPID = f.mainPID
		} else {
			s.hub.log.Warn(fmt.Sprintf("notify socket of %v: ignoring MAINPID=%d, which is not pid %d or one of its descendants", s.key, f.mainPID, s.pid))
			f.mainPID = 0
		}
	}
	if !f.event() {
		return true
	}
	ev := Event[K]{
		Key: s.key, PID: pid,
		Ready: f.ready, Reloading: f.reloading, Stopping: f.stopping,
		Watchdog: f.watchdog, WatchdogTrigger: f.trigger,
		Status: f.status, StatusSet: f.statusSet,
		MainPID: f.mainPID, Errno: f.errno, ErrnoSet: f.errnoSet,
	}
	select {
	case s.hub.events <- ev:
		return true
	case <-s.done:
		return false
	}
}

// check reports whether pid may speak for the process, and if not, why.
func (s *Socket[K]) check(pid int) (bool, error) {
	if pid <= 0 {
		return false, errors.New("no sender pid (sent from outside goinit's pid namespace?)")
	}
	ok, err := descends(pid, s.pid, s.mainPID)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("not pid %d or one of its descendants", s.pid)
	}
	return true, nil
}

// reject counts and logs a datagram from a sender that may not speak for
// the process: at warning level at most once per warnEvery.
func (s *Socket[K]) reject(pid int, why error) {
	s.count(statRejected)
	hint := "only the process and its children may send to its NOTIFY_SOCKET"
	if errors.Is(why, errGone) {
		s.count(statGone)
		hint = "send from the process itself, or use systemd-notify without --no-block, which waits until goinit has read the message"
	}
	line := fmt.Sprintf("notify socket of %v: rejected a message from pid %d: %v; %s", s.key, pid, why, hint)
	now := time.Now()
	if now.Sub(s.lastWarn) < warnEvery {
		s.quiet++
		s.hub.log.Debug(line)
		return
	}
	if s.quiet > 0 {
		line += fmt.Sprintf(" (%d more rejected since the last warning)", s.quiet)
	}
	s.lastWarn, s.quiet = now, 0
	s.hub.log.Warn(line)
}

// control returns the sender's credentials and the descriptors passed with
// a datagram. Everything that looks like descriptors is returned, so that
// the caller closes all of them even if another message is malformed.
func control(oob []byte) (*unix.Ucred, []int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, nil
	}
	var cred *unix.Ucred
	var fds []int
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if c, err := unix.ParseUnixCredentials(m); err == nil {
				cred = c
			}
		case unix.SCM_RIGHTS:
			if r, err := unix.ParseUnixRights(m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	return cred, fds
}
