package portshare

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The structures below mirror include/uapi/linux/seccomp.h. x/sys/unix has
// the ioctl numbers but not these types. Their size is part of the ABI: the
// ioctl numbers encode it (RECV is _IOWR('!', 0, struct seccomp_notif), 0x50
// = 80 bytes; SEND and ADDFD carry 0x18 = 24), and the kernel rejects a RECV
// whose buffer is not zeroed, so every field and every padding byte is
// spelled out. TestABISizes checks the sizes against the ioctl numbers and
// against SECCOMP_GET_NOTIF_SIZES of the running kernel.

// seccompData is struct seccomp_data: what the filter and the notification
// see of a system call. Args hold full registers; an int argument is the
// low 32 bits.
type seccompData struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// seccompNotif is struct seccomp_notif, filled by SECCOMP_IOCTL_NOTIF_RECV.
// Pid is the thread id of the caller, in goinit's PID namespace.
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

// seccompNotifResp is struct seccomp_notif_resp, for SECCOMP_IOCTL_NOTIF_SEND.
// Error is a negative errno (the kernel returns Error if non-zero, else
// Val); with the CONTINUE flag both must be zero.
type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// seccompNotifAddfd is struct seccomp_notif_addfd, for
// SECCOMP_IOCTL_NOTIF_ADDFD: install goinit's SrcFD in the caller's table
// at NewFD (with the SETFD flag), with NewFDFlags (only O_CLOEXEC).
type seccompNotifAddfd struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// seccompNotifSizes is struct seccomp_notif_sizes (SECCOMP_GET_NOTIF_SIZES).
type seccompNotifSizes struct {
	Notif     uint16
	NotifResp uint16
	Data      uint16
}

// Offsets into seccomp_data for the filter's loads. The filter compares the
// low 32 bits of an argument, at the lower address on little-endian
// machines, which are the only ones the filter supports (see archInfo).
const (
	offNr      = uint32(unsafe.Offsetof(seccompData{}.Nr))
	offArch    = uint32(unsafe.Offsetof(seccompData{}.Arch))
	offArgs    = uint32(unsafe.Offsetof(seccompData{}.Args))
	offArg1Low = offArgs + 8
)

func ioctlPtr(fd int, req uint, p unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p))
	if e != 0 {
		return e
	}
	return nil
}

// notifRecv receives the next notification into n, which it zeroes first:
// the kernel refuses (EINVAL) a buffer with anything left in it.
func notifRecv(fd int, n *seccompNotif) error {
	*n = seccompNotif{}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// notifIDValid reports, as an error, whether the caller of notification id
// is still waiting in the same system call. Anything read from the caller's
// memory is only trusted after this check: the thread may have died and
// its id been reused, or (for a multi-threaded caller) the memory changed.
func notifIDValid(fd int, id uint64) error {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
}

// notifContinue lets the kernel run the system call as if goinit did not
// exist.
func notifContinue(fd int, id uint64) error {
	r := seccompNotifResp{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
}

// notifReturn makes the system call return val (errno 0) or fail with errno.
func notifReturn(fd int, id uint64, val int64, errno unix.Errno) error {
	r := seccompNotifResp{ID: id, Val: val, Error: -int32(errno)}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
}

// notifAddFD installs src in the caller's descriptor table at exactly
// target, replacing (and closing) what was there, as dup3 would. It does
// not use SECCOMP_ADDFD_FLAG_SEND: that would make bind() return the new
// descriptor number instead of 0.
func notifAddFD(fd int, id uint64, src, target int, cloexec bool) error {
	a := seccompNotifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, SrcFD: uint32(src), NewFD: uint32(target)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
}

// getNotifSizes asks the kernel for its structure sizes.
func getNotifSizes() (seccompNotifSizes, error) {
	var s seccompNotifSizes
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s)))
	if e != 0 {
		return s, e
	}
	return s, nil
}
