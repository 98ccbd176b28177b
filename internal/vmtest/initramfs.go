package vmtest

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// Markers the VM's /init prints on the console around the test script. The
// host finds them at the start of a line.
const (
	markerStart = "==vmtest== start"
	markerExit  = "==vmtest== exit "
	markerSetup = "==vmtest== setup failed: "
)

// initScript is the VM's PID 1. It must not depend on anything but busybox.
const initScript = `#!/bin/busybox sh
# /init of a vmtest VM; see the vmtest package documentation for the protocol.
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
cd /

die() {
	echo "` + markerSetup + `$*"
	poweroff -f
}
mount -t proc proc /proc || die "mount proc"
mount -t sysfs sysfs /sys || die "mount sysfs"
mount -t devtmpfs devtmpfs /dev || die "mount devtmpfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts || die "mount devpts"
mount -t tmpfs tmpfs /dev/shm || die "mount /dev/shm"
mount -t tmpfs tmpfs /tmp || die "mount /tmp"
mount -t tmpfs tmpfs /run || die "mount /run"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || die "mount cgroup2 on /sys/fs/cgroup"
hostname vmtest
ip link set lo up || die "bring up lo"

echo "` + markerStart + `"
(. /vmtest/lib.sh; . /vmtest/script.sh) </dev/null
rc=$?
echo "` + markerExit + `$rc"
# The serial driver sends output from a buffer as the UART drains it, and a
# power-off drops what is still queued. stty applies its setting with
# TCSADRAIN, which waits until the buffer is empty.
stty -F /dev/console onlcr
poweroff -f
`

// libScript is sourced before the test script; it holds the verdict helpers.
const libScript = `# vmtest helpers, sourced before the test script.

# verdict NAME PASS|FAIL [DETAIL...]: report one scenario to the host.
# NAME must not contain blanks.
verdict() {
	_vt_name=$1 _vt_status=$2
	shift 2
	echo "VERDICT $_vt_name $_vt_status $*"
}

# pass NAME [DETAIL...] and fail NAME [DETAIL...]: verdict shorthands.
pass() { _vt_n=$1; shift; verdict "$_vt_n" PASS "$@"; }
fail() { _vt_n=$1; shift; verdict "$_vt_n" FAIL "$@"; }

# check NAME COMMAND [ARG...]: run COMMAND with its output captured; PASS if it
# exits 0, else FAIL with the status and the last lines of its output.
check() {
	_vt_n=$1
	shift
	if _vt_out=$("$@" 2>&1); then
		pass "$_vt_n"
	else
		_vt_rc=$?
		fail "$_vt_n" "exit $_vt_rc: $(echo "$_vt_out" | tail -n 3 | tr '\n' ' ')"
	fi
}
`

// reserved reports whether name (a clean absolute path) belongs to the
// harness, so a test cannot replace it by accident.
func reserved(name string) bool {
	for _, p := range []string{"/init", "/bin/busybox", "/vmtest", "/dev", "/proc", "/sys"} {
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}

// writeInitramfs writes the VM's initramfs, an uncompressed newc cpio
// archive, to dst. Uncompressed because the kernel unpacks it faster than it
// would decompress it under emulation, and the file lives only in a test's
// temporary directory.
func writeInitramfs(dst, busybox string, cfg Config) error {
	names := make([]string, 0, len(cfg.Files))
	for name := range cfg.Files {
		clean := path.Clean(name)
		if !path.IsAbs(name) || clean != name {
			return fmt.Errorf("vmtest: file path %q inside the VM must be absolute and clean", name)
		}
		if reserved(clean) {
			return fmt.Errorf("vmtest: file path %q is reserved by the harness", name)
		}
		names = append(names, name)
	}
	sort.Strings(names) // reproducible archives

	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	c := newCPIOWriter(f)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "bin", "sbin", "usr/bin", "usr/sbin", "etc"} {
		c.mkdirAll(d)
	}
	// The kernel opens /dev/console for PID 1's stdin, stdout and stderr
	// before devtmpfs is mounted, so the node must be in the archive.
	c.charDev("dev/console", 0o600, 5, 1)
	c.hostFile("bin/busybox", busybox)
	c.blob("init", 0o755, []byte(initScript))
	c.blob("vmtest/lib.sh", 0o644, []byte(libScript))
	c.blob("vmtest/script.sh", 0o644, []byte(cfg.Script))
	for _, name := range names {
		c.hostFile(name, cfg.Files[name])
	}
	err = c.close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vmtest: write initramfs: %w", err)
	}
	return nil
}
