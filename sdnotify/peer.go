package sdnotify

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
)

// maxDepth bounds the walk from a sender up to the process: deeper trees
// than this are not worth a /proc read per level per message.
const maxDepth = 64

// errGone: the sender had exited (and was reaped) before it was checked.
var errGone = errors.New("sender exited before it could be checked")

// descends reports whether pid is one of roots or a descendant of one,
// walking parents in /proc. It returns errGone when pid (or a process on
// the way up) no longer exists.
func descends(pid int, roots ...int) (bool, error) {
	for range maxDepth {
		for _, r := range roots {
			if r > 0 && pid == r {
				return true, nil
			}
		}
		if pid <= 1 {
			return false, nil
		}
		ppid, err := parent(pid)
		if err != nil {
			return false, err
		}
		pid = ppid
	}
	return false, nil
}

// parent returns pid's parent from /proc/pid/stat. A zombie still has its
// parent there, so a sender that exited but is not yet reaped is found.
func parent(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return 0, errGone
	}
	if err != nil {
		return 0, fmt.Errorf("parent of %d: %w", pid, err)
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses,
	// so the fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parent of %d: unexpected /proc/%d/stat", pid, pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("parent of %d: unexpected /proc/%d/stat", pid, pid)
	}
	return strconv.Atoi(string(f[1]))
}
