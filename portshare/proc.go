package portshare

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// readMemory reads n bytes at addr of thread tid's memory. /proc/TID/mem
// takes a thread id as is; it needs the right to ptrace the thread.
func readMemory(tid int, addr uint64, n int) ([]byte, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(tid) + "/mem")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, err
	}
	return b, nil
}

// status is what goinit needs of /proc/TID/status.
type status struct {
	tgid   int
	capEff uint64
}

// readStatus reads the thread group id (the notification names a thread)
// and the effective capabilities of thread tid.
func readStatus(tid int) (status, error) {
	var st status
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return st, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Tgid":
			st.tgid, err = strconv.Atoi(v)
		case "CapEff":
			st.capEff, err = strconv.ParseUint(v, 16, 64)
		}
		if err != nil {
			return st, err
		}
	}
	if st.tgid == 0 {
		st.tgid = tid
	}
	// Capabilities held in a user namespace of the thread's own do not
	// reach goinit's network namespace, which the kernel checks
	// CAP_NET_BIND_SERVICE against: only those of goinit's user namespace
	// count.
	if !sameUserns(tid) {
		st.capEff = 0
	}
	return st, nil
}

// sameUserns reports whether thread tid is in goinit's user namespace.
func sameUserns(tid int) bool {
	var own, its unix.Stat_t
	if unix.Stat("/proc/self/ns/user", &own) != nil || unix.Stat("/proc/"+strconv.Itoa(tid)+"/ns/user", &its) != nil {
		return false
	}
	return own.Ino == its.Ino && own.Dev == its.Dev
}

// mayBind reports whether the thread could bind port itself: ports below
// net.ipv4.ip_unprivileged_port_start need CAP_NET_BIND_SERVICE.
func (st status) mayBind(port uint16) bool {
	if st.capEff&(1<<unix.CAP_NET_BIND_SERVICE) != 0 {
		return true
	}
	start := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	return int(port) >= start
}

// netnsInode returns the inode of the network namespace of /proc/WHO.
func netnsInode(who string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+who+"/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
