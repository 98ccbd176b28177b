package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/signals"
)

// TestEveryForwardableSignalArrives sends goinit, as PID 1, every signal it
// forwards and checks that the child receives each one.
func TestEveryForwardableSignalArrives(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--", sigrecord(t), "-ignore-stop")
	p.waitLine("ready", 10*time.Second)
	// Without SIGURG: the recorder is a Go program, whose runtime sends
	// itself SIGURG (TestSIGURG covers it).
	for _, s := range signals.Forwardable(false) {
		sig := s.(unix.Signal)
		if signals.IsJobControl(sig) {
			continue // turned into SIGSTOP: TestJobControl
		}
		p.signal(sig)
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		if name == "" {
			name = fmt.Sprint(int(sig))
		}
		p.waitLine("got "+name, 5*time.Second)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
}

// TestSIGURG checks that goinit forwards SIGURG exactly when its Go runtime
// does not use SIGURG for preemption: the release build does (its linker
// flags turn asynchronous preemption off) unless GODEBUG turns it back on,
// and a plain build does not unless GODEBUG turns it off.
func TestSIGURG(t *testing.T) {
	requireRoot(t)
	script := `trap 'echo got-urg' URG; trap 'echo got-vtalrm' VTALRM; trap 'exit 0' TERM
echo ready; while :; do sleep 0.05; done`
	for _, c := range []struct {
		name    string
		plain   bool
		godebug string
		want    bool
	}{
		{"release", false, "", true},
		{"release subreaper", false, "", true},
		{"release GODEBUG=asyncpreemptoff=0", false, "asyncpreemptoff=0", false},
		{"plain", true, "", false},
		{"plain GODEBUG=asyncpreemptoff=1", true, "asyncpreemptoff=1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := runOpts{pid1: !strings.Contains(c.name, "subreaper"), env: []string{"GODEBUG=" + c.godebug}}
			if c.plain {
				opts.bin = testbin.GoinitPlain(t)
			}
			p := start(t, opts, "--signal-scope=child", "--", "sh", "-c", script)
			p.waitLine("ready", 10*time.Second)
			for range 20 {
				p.signal(syscall.SIGURG)
			}
			// Pending standard signals arrive lowest number first: once
			// VTALRM (26), sent after the URGs (23), has arrived, so would
			// a URG.
			p.signal(syscall.SIGVTALRM)
			p.waitLine("got-vtalrm", 5*time.Second)
			if c.want {
				p.waitLine("got-urg", 5*time.Second)
			} else if p.hasLine("got-urg") {
				t.Fatal("SIGURG reached the child")
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(10 * time.Second); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestSignalScope checks that group scope reaches the child's whole process
// group and child scope the child alone.
func TestSignalScope(t *testing.T) {
	requireRoot(t)
	// The child is a shell whose own job (the recorder) is in its process
	// group; the shell itself is the only one that reports USR1 as "sh-usr1".
	script := fmt.Sprintf(`trap 'echo sh-usr1' USR1; %s -ignore-stop & wait; wait; wait`, sigrecord(t))
	for _, c := range []struct {
		scope         string
		grandchildGet bool
	}{{"group", true}, {"child", false}} {
		t.Run(c.scope, func(t *testing.T) {
			p := start(t, runOpts{pid1: true}, "--signal-scope="+c.scope, "--stop-timeout=1s", "--", "sh", "-c", script)
			p.waitLine("ready", 10*time.Second)
			p.signal(syscall.SIGUSR1)
			p.waitLine("sh-usr1", 5*time.Second)
			// HUP is a marker the recorder reports in both modes only
			// via the group; with child scope send USR2 directly after.
			p.signal(syscall.SIGUSR2)
			if c.grandchildGet {
				p.waitLine("got USR1", 5*time.Second)
			} else {
				// The shell ignores nothing and dies of USR2; the
				// recorder, never signalled, is then cleaned up.
				p.wait(10 * time.Second)
				if p.hasLine("got USR1") {
					t.Fatal("grandchild got USR1 with --signal-scope=child")
				}
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true},
		"--rewrite=USR1:USR2", "--rewrite=WINCH:NONE", "--rewrite=15:3", "--rewrite=28:0", "--rewrite=HUP:RTMIN+2", "--", sigrecord(t))
	p.waitLine("ready", 10*time.Second)
	p.signal(syscall.SIGUSR1)
	p.waitLine("got USR2", 5*time.Second)
	p.signal(syscall.SIGWINCH)
	p.signal(syscall.SIGHUP)
	p.waitLine("got 36", 5*time.Second) // RTMIN+2
	if p.hasLine("got WINCH") || p.hasLine("got USR1") {
		t.Fatalf("a dropped or rewritten signal arrived as itself:\n%s", p.stdout())
	}
	p.signal(syscall.SIGTERM) // rewritten to QUIT, which stops the recorder
	p.waitLine("got QUIT", 5*time.Second)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if p.hasLine("got TERM") {
		t.Fatal("TERM arrived despite TERM:QUIT")
	}
}

// TestRewriteFromVariable checks GOINIT_REWRITE with several rules.
func TestRewriteFromVariable(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true, env: []string{"GOINIT_REWRITE=USR1:USR2,HUP:NONE"}}, "--", sigrecord(t))
	p.waitLine("ready", 10*time.Second)
	p.signal(syscall.SIGHUP)
	p.signal(syscall.SIGUSR1)
	p.waitLine("got USR2", 5*time.Second)
	if p.hasLine("got HUP") {
		t.Fatal("HUP arrived despite HUP:NONE")
	}
}

// TestChildSignalMask checks that the child starts with no blocked and no
// ignored signal, even when goinit itself was started with some ignored
// (tini's sigconf test): a server must be able to count on default
// dispositions.
func TestChildSignalMask(t *testing.T) {
	// nohup-style: goinit's parent ignores HUP, INT and the real-time
	// signals 32 and 34, which the Go runtime leaves alone.
	script := fmt.Sprintf(`trap '' HUP INT 32 34 35; exec %s -- grep -E '^Sig(Blk|Ign)' /proc/self/status`, goinitBin(t))
	p := start(t, runOpts{}, "--", "sh", "-c", script)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.errText())
	}
	for _, line := range strings.Split(p.stdout(), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.Trim(f[1], "0") != "" {
			t.Errorf("child %q: want no blocked or ignored signal", line)
		}
	}
}

// TestChildStartsUnblocked starts goinit with every signal blocked and
// checks that the command starts with none blocked: as a single command (PID
// 1 and subreaper) and as workers, which start through goinit's shim. The
// shim execs the command, so the command's mask is the shim's.
func TestChildStartsUnblocked(t *testing.T) {
	for _, c := range []struct {
		name string
		pid1 bool
		args []string
	}{
		{"pid1", true, nil},
		{"subreaper", false, nil},
		{"workers", true, []string{"--workers=2", "--restart=never", "--listen=127.0.0.1:0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(c.args, "--", "grep", "-E", "^SigBlk", "/proc/self/status")
			p := start(t, runOpts{pid1: c.pid1, blockAll: true}, args...)
			if code := p.wait(10 * time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, p.errText())
			}
			lines := strings.Fields(strings.ReplaceAll(p.stdout(), "SigBlk:", ""))
			want := 1
			if c.name == "workers" {
				want = 2
			}
			if len(lines) != want {
				t.Fatalf("got %q, want %d SigBlk lines", p.stdout(), want)
			}
			for _, mask := range lines {
				if strings.Trim(mask, "0") != "" {
					t.Errorf("command started with blocked signals %s, want none", mask)
				}
			}
		})
	}
}

// TestSIGPIPENotForwarded checks that SIGPIPE never reaches the child: the
// kernel raises it in goinit whenever goinit writes to a socket whose peer
// is gone, here control clients that hang up at once, and a SIGPIPE sent
// to goinit itself is ignored like those.
func TestSIGPIPENotForwarded(t *testing.T) {
	requireRoot(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	// The fence is VTALRM (26): pending standard signals arrive lowest
	// number first, so once it has arrived a forwarded PIPE (13) would have.
	script := `trap 'echo got-pipe' PIPE; trap 'echo got-vtalrm' VTALRM; trap 'exit 0' TERM
echo ready; while :; do sleep 0.05; done`
	p := start(t, runOpts{pid1: true}, "--signal-scope=child", "--control="+sock, "--", "sh", "-c", script)
	p.waitLine("ready", 10*time.Second)
	for range 20 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Write([]byte("garbage that is not a request\n"))
			c.Close() // goinit's error answer then meets a closed socket
		}
	}
	p.signal(syscall.SIGPIPE)
	p.signal(syscall.SIGVTALRM)
	p.waitLine("got-vtalrm", 5*time.Second)
	if p.hasLine("got-pipe") {
		t.Fatal("SIGPIPE reached the child")
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
