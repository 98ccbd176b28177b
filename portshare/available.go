package portshare

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Available reports, as a nil error, whether workers' binds can be
// intercepted on this machine, without installing anything in goinit
// itself. An error wraps [ErrUnavailable] and names the cause: the
// architecture has no filter, seccomp(2) is missing or forbidden (a
// container's seccomp profile), the kernel lacks user notification or
// SECCOMP_IOCTL_NOTIF_ADDFD (5.9). Each probe is a system call that has
// no effect on goinit. A refused pidfd_getfd (Docker's default seccomp
// profile without CAP_SYS_PTRACE) is not a reason: sharing then runs in
// reduced mode, which [FullFidelity] reports and [New] logs once.
func Available() error {
	if _, err := nativeArch(); err != nil {
		return err
	}
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action))); e != 0 {
		return fmt.Errorf("%w: seccomp(SECCOMP_GET_ACTION_AVAIL, USER_NOTIF): %w (kernel older than 5.0 or a seccomp profile forbids seccomp)", ErrUnavailable, e)
	}
	sizes, err := getNotifSizes()
	if err != nil {
		return fmt.Errorf("%w: seccomp(SECCOMP_GET_NOTIF_SIZES): %w", ErrUnavailable, err)
	}
	if int(sizes.Notif) < int(unsafe.Sizeof(seccompNotif{})) || int(sizes.NotifResp) < int(unsafe.Sizeof(seccompNotifResp{})) {
		return fmt.Errorf("%w: kernel notification sizes %+v are smaller than goinit's", ErrUnavailable, sizes)
	}
	// ADDFD and POLLHUP on a listener without users both came in 5.9.
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		if maj, min, ok := kernelVersion(unix.ByteSliceToString(uts.Release[:])); ok && (maj < 5 || maj == 5 && min < 9) {
			return fmt.Errorf("%w: kernel %d.%d is older than 5.9 (SECCOMP_IOCTL_NOTIF_ADDFD)", ErrUnavailable, maj, min)
		}
	}
	return nil
}

// kernelVersion parses the major and minor numbers of a release such as
// "6.18.44-fc".
func kernelVersion(release string) (major, minor int, ok bool) {
	n, err := fmt.Sscanf(release, "%d.%d", &major, &minor)
	return major, minor, err == nil && n == 2
}
