// Package signals names, parses and rewrites Unix signals for goinit, and
// knows which signals a supervisor may forward to its children.
//
// It owns no process state: it never installs handlers nor sends signals. The
// supervisor decides who receives what; this package only answers "which
// signal is that" and "what should it become".
package signals

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// None is the rewrite target that drops a signal instead of forwarding it.
const None = unix.Signal(0)

// maxSignal is the highest signal number on Linux (SIGRTMAX).
const maxSignal = 64

// Parse reads a signal given by name ("TERM", "SIGTERM", case-insensitive),
// by real-time offset ("RTMIN+3") or by number ("15"). The zero signal is
// never returned: use ParseTarget where "drop" is allowed.
func Parse(s string) (unix.Signal, error) {
	sig, err := parse(s)
	if err != nil {
		return 0, err
	}
	if sig == None {
		return 0, fmt.Errorf("signal %q: 0 is not a signal here; use a name like TERM or a number from 1 to %d", s, maxSignal)
	}
	return sig, nil
}

// ParseTarget is Parse that also accepts "NONE" or "0", meaning "drop the
// signal", as the right-hand side of a rewrite.
func ParseTarget(s string) (unix.Signal, error) {
	if strings.EqualFold(s, "NONE") {
		return None, nil
	}
	return parse(s)
}

func parse(s string) (unix.Signal, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty signal; use a name like TERM or a number from 1 to %d", maxSignal)
	}
	if n, err := strconv.Atoi(t); err == nil {
		if n < 0 || n > maxSignal {
			return 0, fmt.Errorf("signal %q out of range; use a number from 1 to %d or a name like TERM", s, maxSignal)
		}
		return unix.Signal(n), nil
	}
	t = strings.TrimPrefix(t, "SIG")
	if rest, ok := strings.CutPrefix(t, "RTMIN"); ok {
		return rt(s, int(sigRTMIN()), rest, 1)
	}
	if rest, ok := strings.CutPrefix(t, "RTMAX"); ok {
		return rt(s, maxSignal, rest, -1)
	}
	if sig := unix.SignalNum("SIG" + t); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q; use a name like TERM, HUP, USR1 or a number from 1 to %d", s, maxSignal)
}

// rt parses the "+N"/"-N" suffix of RTMIN/RTMAX.
func rt(orig string, base int, rest string, sign int) (unix.Signal, error) {
	if rest == "" {
		return unix.Signal(base), nil
	}
	want := "+"
	if sign < 0 {
		want = "-"
	}
	n, err := strconv.Atoi(strings.TrimPrefix(rest, want))
	if !strings.HasPrefix(rest, want) || err != nil || n < 0 {
		return 0, fmt.Errorf("signal %q: expected RTMIN+N or RTMAX-N", orig)
	}
	v := base + sign*n
	if v < int(sigRTMIN()) || v > maxSignal {
		return 0, fmt.Errorf("signal %q is outside RTMIN..RTMAX", orig)
	}
	return unix.Signal(v), nil
}

// sigRTMIN is the first real-time signal a program may use. glibc reserves
// 32 and 33 for itself, and so does the Go runtime, so user programs start
// at 34.
func sigRTMIN() unix.Signal { return 34 }

// Name returns the conventional name of sig without the SIG prefix ("TERM"),
// "RTMIN+N" for real-time signals, or the number for anything else.
func Name(sig unix.Signal) string {
	if sig == None {
		return "NONE"
	}
	if n := unix.SignalName(sig); n != "" {
		return strings.TrimPrefix(n, "SIG")
	}
	if sig >= sigRTMIN() && sig <= maxSignal {
		return fmt.Sprintf("RTMIN+%d", int(sig-sigRTMIN()))
	}
	return strconv.Itoa(int(sig))
}

// Forwardable lists every signal a supervisor should catch and pass on:
// all catchable signals except SIGCHLD (it reports our own children) and the
// ones the Go runtime keeps for itself. SIGURG is the runtime's goroutine
// preemption signal: unless the runtime's asynchronous preemption is off
// (urg true; see AsyncPreemptOff), forwarding it would spray the child with
// signals it never asked for, a known bug of Go inits. SIGPROF is consumed by
// the runtime's profiler and never reaches os/signal. 32 and 33 are reserved
// by the runtime and glibc, and 34 (glibc's SIGRTMIN) by the runtime for musl
// (golang/go#39343): a Go program cannot catch it, so neither can goinit.
// SIGPIPE is left out too: the kernel raises it in goinit itself whenever
// goinit writes to a socket whose peer is gone (a control client that hung
// up, a worker that died with messages queued), and os/signal cannot tell
// those from one sent by kill; forwarding them would kill every worker that
// does not ignore SIGPIPE. Not caught, it is ignored by the Go runtime.
func Forwardable(urg bool) []os.Signal {
	var out []os.Signal
	for n := 1; n <= maxSignal; n++ {
		sig := unix.Signal(n)
		switch sig {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGPROF, unix.SIGPIPE, 32, 33, 34:
			continue
		case unix.SIGURG:
			if !urg {
				continue
			}
		}
		out = append(out, sig)
	}
	return out
}

// IsStop reports whether sig asks the supervisor to shut down.
func IsStop(sig unix.Signal) bool {
	return sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT
}

// IsJobControl reports whether sig is a terminal stop request (Ctrl-Z and
// background terminal access), after which a supervisor stops itself, as a
// shell user expects; see Rewrite.ApplyJobControl for what its children get.
func IsJobControl(sig unix.Signal) bool {
	return sig == unix.SIGTSTP || sig == unix.SIGTTIN || sig == unix.SIGTTOU
}

// Rewrite maps a received signal to the one forwarded; a signal that maps to
// None is dropped. The zero value forwards everything unchanged.
type Rewrite map[unix.Signal]unix.Signal

// ParseRule reads one "FROM:TO" rule, such as "TERM:QUIT", "15:3",
// "WINCH:NONE" or "WINCH:0", and adds it to r.
func (r Rewrite) ParseRule(rule string) error {
	from, to, ok := strings.Cut(rule, ":")
	if !ok {
		return fmt.Errorf("rewrite %q: expected FROM:TO, like TERM:QUIT or WINCH:NONE", rule)
	}
	f, err := Parse(from)
	if err != nil {
		return fmt.Errorf("rewrite %q: %w", rule, err)
	}
	t, err := ParseTarget(to)
	if err != nil {
		return fmt.Errorf("rewrite %q: %w", rule, err)
	}
	if f == unix.SIGKILL || f == unix.SIGSTOP {
		return fmt.Errorf("rewrite %q: %s cannot be caught, so it cannot be rewritten", rule, Name(f))
	}
	r[f] = t
	return nil
}

// Apply returns what sig becomes: the rewritten signal, or sig itself when no
// rule names it. None means "drop".
func (r Rewrite) Apply(sig unix.Signal) unix.Signal {
	if to, ok := r[sig]; ok {
		return to
	}
	return sig
}

// ApplyJobControl returns what a job-control signal (IsJobControl) becomes,
// dumb-init's rules: a rule for it wins; without one, a signal sent to the
// child's whole process group becomes SIGSTOP, because the programs in a
// group that never asked for job control would otherwise ignore or die of
// it, and a signal sent to the child alone is passed as it is, because a
// program run that way (an editor) catches SIGTSTP to restore the terminal
// before stopping itself.
func (r Rewrite) ApplyJobControl(sig unix.Signal, group bool) unix.Signal {
	if to, ok := r[sig]; ok {
		return to
	}
	if group {
		return unix.SIGSTOP
	}
	return sig
}

// String renders the rules in a stable order, e.g. "TERM:QUIT,WINCH:NONE".
func (r Rewrite) String() string {
	keys := make([]int, 0, len(r))
	for k := range r {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = Name(unix.Signal(k)) + ":" + Name(r[unix.Signal(k)])
	}
	return strings.Join(parts, ",")
}
