package reaper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Descendants lists every process below the calling one (children, their
// children, and so on), read from /proc. It works whichever PID namespace
// /proc belongs to, because it starts from /proc/self.
func Descendants() ([]int, error) {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return nil, fmt.Errorf("find own pid in /proc: %w", err)
	}
	me, err := strconv.Atoi(self)
	if err != nil {
		return nil, fmt.Errorf("find own pid in /proc: %q is not a pid", self)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, ok := parentOf(pid)
		if ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{me}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out, nil
}

// parentOf reads the parent pid from /proc/PID/stat. The command name may
// hold spaces and parentheses, so the fields are counted from the last ')'.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// SignalAll sends sig to every process below the caller. As PID 1 of a PID
// namespace that is kill(-1), which the kernel applies to every process in
// the namespace but the caller, atomically with respect to new forks. Any
// other process walks its descendants in /proc; a process that forks during
// the walk may escape one round, which is why callers repeat until no child
// is left. It returns how many processes were signalled (-1 when unknown).
func SignalAll(sig unix.Signal) (int, error) {
	if os.Getpid() == 1 {
		err := unix.Kill(-1, sig)
		if errors.Is(err, unix.ESRCH) {
			return 0, nil
		}
		return -1, err
	}
	pids, err := Descendants()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pids {
		if err := unix.Kill(p, sig); err == nil {
			n++
		}
	}
	return n, nil
}
