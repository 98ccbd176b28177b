// Package vmtest boots a real Linux kernel in qemu so that tests can exercise
// cgroup v2 with every controller, which the CI machines (cgroup v1 hosts)
// cannot offer directly.
//
// # What it owns
//
// vmtest owns the cache directory .cache/vmtest (downloaded packages and
// the kernel extracted from them) and the qemu processes it starts. It never
// installs host packages; it only runs apt-cache, apt-get download, dpkg-deb
// and xz, and qemu-system-x86_64 (Debian package qemu-system-x86, see
// HostPackages).
//
// # The image
//
// Prepare resolves, once per test process, what every VM boots:
//
//   - the kernel of the Debian package that linux-image-amd64 depends on,
//     downloaded with apt-get download into the cache and extracted from the
//     .deb, keyed by package version so a later run finds it and downloads
//     nothing. Everything the VM needs is built into Debian's kernel: the
//     8250 serial console, initramfs support, devtmpfs, cgroup v2 with the
//     cpu, cpuset, io, memory, hugetlb, pids, rdma and misc controllers. No
//     module is loaded. The bzImage's XZ payload is also unpacked once into
//     an ELF vmlinux, which qemu boots through its PVH entry point, skipping
//     the firmware and the emulated decompressor (about 2.5 s per boot);
//   - busybox from the busybox-static package, fetched the same way.
//
// VMTEST_KERNEL and VMTEST_BUSYBOX replace either with a local file.
//
// # One boot
//
// Run writes a fresh initramfs (an uncompressed newc cpio archive) holding
//
//	/init              a busybox sh script, PID 1 (initScript)
//	/bin/busybox       its applets are linked into /bin, /sbin, /usr/bin and /usr/sbin at boot
//	/dev/console       the node the kernel opens as PID 1's stdin, stdout and stderr
//	/vmtest/lib.sh     shell helpers: verdict, pass, fail, check
//	/vmtest/script.sh  Config.Script
//	...                every Config.Files entry, permission bits kept
//
// and boots it with qemu: no disk, no network device, the console on the
// first serial port (ttyS0), which qemu connects to its stdout. /init mounts
// proc, sysfs, devtmpfs, devpts, tmpfs on /tmp, /run and /dev/shm, and
// cgroup2 on /sys/fs/cgroup (no cgroup v1 hierarchy exists, so every
// controller is available to v2; none is enabled in the root's
// cgroup.subtree_control), brings up lo, then runs the script as root in a
// subshell with stdin from /dev/null.
//
// # The console protocol
//
// The host reads the console line by line and recognises three markers:
//
//	==vmtest== setup failed: REASON   /init could not set up; the VM powers off
//	==vmtest== start                  the script starts now
//	==vmtest== exit N                 the script exited with status N
//
// The script's own lines come back in Result.Output. A scenario reports its
// result with a line
//
//	VERDICT NAME PASS|FAIL DETAIL...
//
// which the verdict, pass, fail and check helpers print; Result.Verdicts parses
// them and Result.Report makes each a subtest, so one boot (about 2 s under
// software emulation) can run many scenarios. After the exit marker /init
// waits for the serial buffer to drain and powers the VM off; qemu then exits.
//
// The kernel runs with quiet loglevel=1 so its messages cannot split a
// verdict line; scripts that want the kernel log (an OOM report, say) read
// dmesg. A kernel panic or oops makes qemu exit at once (panic=-1, oops=panic,
// -no-reboot), so a crash ends the test instead of waiting for the timeout.
//
// # Failure policy
//
// If qemu, apt, the packages or the boot itself are unavailable (no start
// marker), the test is skipped with the reason, or failed when CI=true,
// because CI must prove the cgroup v2 suite ran. Once the script has started,
// anything that goes wrong (timeout, VM death before the exit marker) is an
// error returned by Run, with the console so far in the Result. Whenever the
// test fails, the full console is logged; VMTEST_VERBOSE=1 streams it as it
// arrives.
//
// # Acceleration
//
// qemu runs with TCG, software emulation, unless VMTEST_ACCEL=kvm; see
// EnvAccel for why KVM is not detected automatically.
package vmtest
