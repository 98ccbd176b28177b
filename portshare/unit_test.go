package portshare

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"auto", "auto"}, {"AUTO", "auto"}, {"off", "off"},
		{"3000", "3000"}, {"8443,3000,tcp:3000", "3000,8443"}, {" tcp:80 , 81", "80,81"}, {"TCP:1", "1"},
	} {
		p, err := ParsePolicy(tc.in)
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "65536", "udp:53", "3000,", "x", "tcp:", "-1", "30 00"} {
		_, err := ParsePolicy(bad)
		var pe *PolicyError
		if !errors.As(err, &pe) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParsePolicy(%q) = %v, want a one-line *PolicyError", bad, err)
		}
	}
	p, _ := ParsePolicy("3000,8443")
	if !p.Shares(3000) || !p.Shares(8443) || p.Shares(3001) || p.Shares(0) {
		t.Errorf("list %v shares the wrong ports", p)
	}
	if a := (Policy{Mode: Auto}); !a.Shares(1) || a.Shares(0) {
		t.Error("auto must share every port but 0")
	}
	if (Policy{}).Shares(3000) {
		t.Error("off shares a port")
	}
}

// The filter's decisions, run in x/net/bpf's interpreter. It loads words
// in network byte order, so seccomp_data is encoded big-endian here.
func TestFilterDecisions(t *testing.T) {
	a, err := nativeArch()
	if err != nil {
		t.Skip(err)
	}
	prog, err := filterProgram(a)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	run := func(arch uint32, nr int, arg1 uint64) uint32 {
		b := make([]byte, unsafe.Sizeof(seccompData{}))
		binary.BigEndian.PutUint32(b[offNr:], uint32(nr))
		binary.BigEndian.PutUint32(b[offArch:], arch)
		binary.BigEndian.PutUint32(b[offArg1Low:], uint32(arg1))
		v, err := vm.Run(b)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(v)
	}
	const allow, notify = unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_USER_NOTIF
	for _, tc := range []struct {
		name string
		arch uint32
		nr   int
		arg1 uint64
		want uint32
	}{
		{"bind", a.audit, unix.SYS_BIND, 0, notify},
		{"listen", a.audit, unix.SYS_LISTEN, 511, notify},
		{"shutdown SHUT_RD", a.audit, unix.SYS_SHUTDOWN, unix.SHUT_RD, notify},
		{"shutdown SHUT_RDWR", a.audit, unix.SYS_SHUTDOWN, unix.SHUT_RDWR, notify},
		{"shutdown SHUT_WR", a.audit, unix.SYS_SHUTDOWN, unix.SHUT_WR, allow},
		{"accept4", a.audit, unix.SYS_ACCEPT4, 0, allow},
		{"read", a.audit, unix.SYS_READ, 0, allow},
		{"foreign arch bind", unix.AUDIT_ARCH_I386, unix.SYS_BIND, 0, allow},
	} {
		if got := run(tc.arch, tc.nr, tc.arg1); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
	}
	if a.x32 != 0 {
		if got := run(a.audit, int(a.x32)|unix.SYS_BIND, 0); got != allow {
			t.Errorf("x32 bind: %#x, want allow", got)
		}
	}
}

// The structures' sizes are the kernel's: the ioctl numbers encode them,
// and the running kernel reports its own.
func TestABISizes(t *testing.T) {
	size := func(ioctl uint) uintptr { return uintptr(ioctl>>16) & 0x3fff }
	if got, want := unsafe.Sizeof(seccompNotif{}), size(unix.SECCOMP_IOCTL_NOTIF_RECV); got != want {
		t.Errorf("seccomp_notif is %d bytes, the ioctl says %d", got, want)
	}
	if got, want := unsafe.Sizeof(seccompNotifResp{}), size(unix.SECCOMP_IOCTL_NOTIF_SEND); got != want {
		t.Errorf("seccomp_notif_resp is %d bytes, the ioctl says %d", got, want)
	}
	if got, want := unsafe.Sizeof(seccompNotifAddfd{}), size(unix.SECCOMP_IOCTL_NOTIF_ADDFD); got != want {
		t.Errorf("seccomp_notif_addfd is %d bytes, the ioctl says %d", got, want)
	}
	k, err := getNotifSizes()
	if err != nil {
		t.Skipf("SECCOMP_GET_NOTIF_SIZES: %v", err)
	}
	if int(k.Notif) != int(unsafe.Sizeof(seccompNotif{})) || int(k.NotifResp) != int(unsafe.Sizeof(seccompNotifResp{})) || int(k.Data) != int(unsafe.Sizeof(seccompData{})) {
		t.Errorf("kernel sizes %+v differ from goinit's", k)
	}
}

func TestParseSockaddr(t *testing.T) {
	in4 := make([]byte, 16)
	binary.NativeEndian.PutUint16(in4, unix.AF_INET)
	binary.BigEndian.PutUint16(in4[2:], 3000)
	copy(in4[4:], []byte{127, 0, 0, 1})
	if f, ap, _, ok := parseSockaddr(in4); !ok || f != unix.AF_INET || ap.String() != "127.0.0.1:3000" {
		t.Errorf("AF_INET: %d %s %v", f, ap, ok)
	}
	in6 := make([]byte, 28)
	binary.NativeEndian.PutUint16(in6, unix.AF_INET6)
	binary.BigEndian.PutUint16(in6[2:], 8443)
	if f, ap, _, ok := parseSockaddr(in6); !ok || f != unix.AF_INET6 || ap.String() != "[::]:8443" {
		t.Errorf("AF_INET6: %d %s %v", f, ap, ok)
	}
	if _, _, _, ok := parseSockaddr(in4[:8]); ok {
		t.Error("a short sockaddr_in was accepted")
	}
	un := make([]byte, 16)
	binary.NativeEndian.PutUint16(un, unix.AF_UNIX)
	if _, _, _, ok := parseSockaddr(un); ok {
		t.Error("AF_UNIX was accepted")
	}
}
