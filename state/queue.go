package state

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// tcpListen is TCP_LISTEN in the st column of /proc/net/tcp.
const tcpListen = "0A"

// ListenQueues reads the accept queue of every listening TCP socket in
// goinit's network namespace from /proc/net/tcp and /proc/net/tcp6: the
// number of connections the kernel has completed and no worker has accepted
// yet (sk_ack_backlog), keyed by socket inode. For a LISTEN row the kernel
// prints that number as rx_queue (get_tcp4_sock() in net/ipv4/tcp_ipv4.c);
// tx_queue is not the backlog there (it is 0: only sock_diag, as used by
// `ss -lnt`, reports the capacity). A missing tcp6 file (IPv6 disabled) is
// not an error. Unix sockets are not in these files; they have no entry.
func ListenQueues() (map[uint64]uint64, error) {
	out := map[uint64]uint64{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) && name != "/proc/net/tcp" {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read accept queues: %w", err)
		}
		err = parseTCP(f, out)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read accept queues from %s: %w", name, err)
		}
	}
	return out, nil
}

// parseTCP adds the LISTEN rows of one /proc/net/tcp* table to out.
func parseTCP(r io.Reader, out map[uint64]uint64) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] != tcpListen {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return fmt.Errorf("bad queue field %q", f[4])
		}
		length, err1 := strconv.ParseUint(rx, 16, 64)
		inode, err2 := strconv.ParseUint(f[9], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("bad line %q: %w", sc.Text(), err)
		}
		out[inode] = length
	}
	return sc.Err()
}

// SocketInode returns the inode that identifies the socket f in
// /proc/net/tcp* (and as socket:[INODE] in /proc/PID/fd).
func SocketInode(f *os.File) (uint64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("socket inode: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&fs.ModeSocket == 0 {
		return 0, fmt.Errorf("socket inode: %s is not a socket", f.Name())
	}
	return st.Ino, nil
}
