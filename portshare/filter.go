package portshare

import (
	"fmt"
	"runtime"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// archInfo is what the filter needs to know about the machine it runs on.
type archInfo struct {
	audit uint32 // AUDIT_ARCH_* the kernel reports for native system calls
	// x32 is set on amd64, where the x32 ABI shares AUDIT_ARCH_X86_64 and
	// marks its system call numbers with this bit.
	x32 uint32
}

// nativeArch returns the running architecture's filter facts. Only
// little-endian 64-bit machines are listed: the filter reads an int
// argument as the low half of its 64-bit slot at the lower address.
func nativeArch() (archInfo, error) {
	switch runtime.GOARCH {
	case "amd64":
		return archInfo{audit: unix.AUDIT_ARCH_X86_64, x32: 0x40000000}, nil
	case "arm64":
		return archInfo{audit: unix.AUDIT_ARCH_AARCH64}, nil
	case "riscv64":
		return archInfo{audit: unix.AUDIT_ARCH_RISCV64}, nil
	case "loong64":
		return archInfo{audit: unix.AUDIT_ARCH_LOONGARCH64}, nil
	case "ppc64le":
		return archInfo{audit: unix.AUDIT_ARCH_PPC64LE}, nil
	}
	return archInfo{}, fmt.Errorf("%w: no seccomp filter for %s", ErrUnavailable, runtime.GOARCH)
}

// filterProgram is the classic BPF program installed in every worker:
//
//   - a system call of another ABI than the native one (i386 or x32 on
//     amd64, arm32 on arm64) is allowed: the filter exists to share ports,
//     not to confine, so it never kills a program the kernel would run,
//     and such a bind is simply not shared (the kernel decides, as
//     without goinit);
//   - bind and listen go to goinit;
//   - shutdown goes to goinit unless how is SHUT_WR, the only value
//     servers use on connections, so the hot path never leaves the kernel;
//   - everything else is allowed.
func filterProgram(a archInfo) ([]bpf.Instruction, error) {
	const (
		allow  = unix.SECCOMP_RET_ALLOW
		notify = unix.SECCOMP_RET_USER_NOTIF
	)
	// Jumps are counted in instructions skipped; the labels below keep them
	// honest: ret* are the indexes of the return instructions.
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offArch, Size: 4},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: a.audit, SkipTrue: retAllow - 2},
		/* 2 */ bpf.LoadAbsolute{Off: offNr, Size: 4},
		/* 3 */ x32Check(a),
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_BIND, SkipTrue: retNotify - 5},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_LISTEN, SkipTrue: retNotify - 6},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.SYS_SHUTDOWN, SkipTrue: retAllow - 7},
		/* 7 */ bpf.LoadAbsolute{Off: offArg1Low, Size: 4},
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.SHUT_WR, SkipTrue: retNotify - 9},
		/* 9 */ bpf.RetConstant{Val: allow},
		/* 10 */ bpf.RetConstant{Val: notify},
	}
	if len(prog) != retNotify+1 {
		return nil, fmt.Errorf("portshare: filter program has %d instructions, labels assume %d", len(prog), retNotify+1)
	}
	return prog, nil
}

// Indexes of the filter's two return instructions.
const (
	retAllow  = 9
	retNotify = 10
)

// x32Check allows x32 system calls on amd64 (numbers with the x32 bit set
// are >= the bit); elsewhere it is a jump that skips nothing.
func x32Check(a archInfo) bpf.Instruction {
	if a.x32 == 0 {
		return bpf.Jump{Skip: 0}
	}
	return bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: a.x32, SkipTrue: retAllow - 4}
}

// assembleFilter returns the program in the kernel's sock_filter form.
func assembleFilter() ([]unix.SockFilter, error) {
	a, err := nativeArch()
	if err != nil {
		return nil, err
	}
	prog, err := filterProgram(a)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("portshare: assemble filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
