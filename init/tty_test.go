package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestTerminalCtrlC runs goinit the way `docker run -it` does: PID 1 of a
// new PID namespace, session leader, with a pseudo-terminal as controlling
// terminal. The child must get the terminal (foreground, able to read it),
// and Ctrl-C must reach it and end goinit with 130.
func TestTerminalCtrlC(t *testing.T) {
	requireRoot(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	script := `awk '{print ($5==$8) ? "foreground" : "background"}' /proc/self/stat; echo ready; read line; echo "read $line"; exec sleep 1000`
	cmd := exec.Command(goinitBin(t), "--", "sh", "-c", script)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	done := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		done <- cmd.ProcessState.ExitCode()
	}()
	defer cmd.Process.Kill()

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(ptmx)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("terminal closed before %q", want)
				}
				if l == want {
					return
				}
				if l == "background" {
					t.Fatal("the child is not the terminal's foreground process group")
				}
			case <-deadline:
				t.Fatalf("no %q on the terminal", want)
			}
		}
	}
	expect("foreground")
	expect("ready")
	fmt.Fprintf(ptmx, "hello\n")
	expect("read hello")
	eventually(t, 10*time.Second, "sleep to run", func() bool {
		for pid := range descendants(cmd.Process.Pid) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "sleep" {
				return true
			}
		}
		return false
	})
	ptmx.Write([]byte{3}) // Ctrl-C
	select {
	case code := <-done:
		if code != 130 {
			t.Fatalf("exit %d, want 130", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-C did not end goinit")
	}
}

// TestJobControl checks dumb-init's shell job control: SIGTSTP to goinit
// (Ctrl-Z at a shell) stops the child and goinit itself, so the shell sees
// the job stop; SIGCONT (fg or bg) resumes both.
func TestJobControl(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		t.Run(sig.String(), func(t *testing.T) {
			p := start(t, runOpts{}, "--", "sh", "-c", "echo ready; exec sleep 1000")
			p.waitLine("ready", 10*time.Second)
			waitForExec(t, p, "sleep")
			goinitPid := p.cmd.Process.Pid
			var child int
			for pid := range descendants(goinitPid) {
				child = pid
			}
			p.signal(sig)
			eventually(t, 10*time.Second, "child and goinit to stop", func() bool {
				return procState(goinitPid) == "T" && procState(child) == "T"
			})
			p.signal(syscall.SIGCONT)
			eventually(t, 10*time.Second, "child and goinit to resume", func() bool {
				return procState(goinitPid) != "T" && procState(child) != "T"
			})
			p.signal(syscall.SIGTERM)
			if code := p.wait(10 * time.Second); code != 143 {
				t.Fatalf("exit %d, want 143", code)
			}
		})
	}
}

// TestJobControlRewrite checks dumb-init's rules for TSTP, TTIN and TTOU
// beyond the default: a --rewrite rule is applied to them like to any
// signal, and goinit still stops itself afterwards; with child scope they
// reach the child as they are; a rule to NONE drops them and goinit keeps
// running.
func TestJobControlRewrite(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		send syscall.Signal
		want string // what the child reports; "" for nothing
	}{
		{"TTIN:TERM", []string{"--rewrite=TTIN:TERM"}, syscall.SIGTTIN, "got TERM"},
		{"TSTP:HUP", []string{"--rewrite=TSTP:HUP"}, syscall.SIGTSTP, "got HUP"},
		{"TTOU:USR1", []string{"--rewrite=TTOU:USR1"}, syscall.SIGTTOU, "got USR1"},
		{"child scope", []string{"--signal-scope=child"}, syscall.SIGTSTP, "got TSTP"},
		{"NONE", []string{"--rewrite=TSTP:NONE"}, syscall.SIGTSTP, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(c.args, "--", sigrecord(t), "-ignore-stop")
			p := start(t, runOpts{}, args...)
			p.waitLine("ready", 10*time.Second)
			goinitPid := p.cmd.Process.Pid
			defer func() {
				// goinit is not PID 1 here: its child, which ignores
				// stop signals, would outlive it.
				for pid := range descendants(goinitPid) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				p.cmd.Process.Signal(syscall.SIGKILL)
			}()
			p.signal(c.send)
			if c.want == "" {
				// A real-time signal, numbered above every standard
				// one, arrives after a forwarded TSTP would have.
				p.signal(syscall.Signal(40))
				p.waitLine("got 40", 5*time.Second)
				if p.hasLine("got TSTP") || p.hasLine("got STOP") || procState(goinitPid) == "T" {
					t.Fatalf("a signal rewritten to NONE had an effect: goinit state %q, child:\n%s", procState(goinitPid), p.stdout())
				}
				return
			}
			p.waitLine(c.want, 5*time.Second)
			eventually(t, 10*time.Second, "goinit to stop itself", func() bool { return procState(goinitPid) == "T" })
			p.signal(syscall.SIGCONT)
			p.waitLine("got CONT", 5*time.Second)
			eventually(t, 10*time.Second, "goinit to resume", func() bool { return procState(goinitPid) != "T" })
		})
	}
}

// TestJobControlRewriteAsPID1 checks that as PID 1, which cannot be
// stopped, a rewritten job-control signal still reaches the child and goinit
// keeps running.
func TestJobControlRewriteAsPID1(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--rewrite=TTIN:TERM", "--", sigrecord(t), "-ignore-stop")
	p.waitLine("ready", 10*time.Second)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.signal(syscall.SIGTTIN)
	p.waitLine("got TERM", 5*time.Second)
	p.signal(syscall.SIGUSR1)
	p.waitLine("got USR1", 5*time.Second)
	if st := procState(p.cmd.Process.Pid); st == "T" {
		t.Fatal("goinit as PID 1 is stopped")
	}
}

// procState is the state letter of pid in /proc ("S", "T", "Z"...).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// TestShellJobControl runs goinit from an interactive shell on a
// pseudo-terminal, as a user would: Ctrl-Z stops the command and goinit so
// the shell reports the job stopped, fg resumes both with the terminal, and
// Ctrl-C then ends the command and goinit with 130.
func TestShellJobControl(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash for an interactive shell")
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	sh := exec.Command("bash", "--norc", "--noprofile", "-i")
	sh.Env = append(os.Environ(), "PS1=$ ", "TERM=dumb")
	sh.Stdin, sh.Stdout, sh.Stderr = tty, tty, tty
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	defer sh.Process.Kill()
	out := &ptyReader{c: make(chan string, 256)}
	go out.read(ptmx)

	fmt.Fprintf(ptmx, "%s -- sh -c 'echo child-$((1+1))-ready; exec sleep 1000'\n", goinitBin(t))
	out.expect(t, "child-2-ready")
	var goinitPid, child int
	eventually(t, 10*time.Second, "goinit and sleep", func() bool {
		for pid := range descendants(sh.Process.Pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			switch strings.TrimSpace(string(b)) {
			case "goinit":
				goinitPid = pid
			case "sleep":
				child = pid
			}
		}
		return goinitPid > 0 && child > 0
	})
	ptmx.Write([]byte{0x1a}) // Ctrl-Z
	out.expect(t, "Stopped")
	eventually(t, 10*time.Second, "goinit and the child to be stopped", func() bool {
		return procState(goinitPid) == "T" && procState(child) == "T"
	})
	fmt.Fprintf(ptmx, "fg\n")
	eventually(t, 10*time.Second, "both to run again", func() bool {
		return procState(goinitPid) == "S" && procState(child) == "S"
	})
	ptmx.Write([]byte{3}) // Ctrl-C reaches the child, which has the terminal again
	fmt.Fprintf(ptmx, "echo rc=$?\n")
	out.expect(t, "rc=130")
}

// ptyReader collects a terminal's output in chunks.
type ptyReader struct {
	c   chan string
	buf string
}

func (r *ptyReader) read(f *os.File) {
	b := make([]byte, 4096)
	for {
		n, err := f.Read(b)
		if n > 0 {
			r.c <- string(b[:n])
		}
		if err != nil {
			close(r.c)
			return
		}
	}
}

// expect waits until the output so far contains s, and consumes it.
func (r *ptyReader) expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for !strings.Contains(r.buf, s) {
		select {
		case chunk, ok := <-r.c:
			if !ok {
				t.Fatalf("terminal closed before %q; output: %q", s, r.buf)
			}
			r.buf += chunk
		case <-deadline:
			t.Fatalf("no %q on the terminal; output: %q", s, r.buf)
		}
	}
	r.buf = r.buf[strings.Index(r.buf, s)+len(s):]
}
