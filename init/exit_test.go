package main

import (
	"debug/elf"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExitCodesAsPID1 checks that every exit code 0..255 passes through
// goinit running as PID 1.
func TestExitCodesAsPID1(t *testing.T) {
	requireRoot(t)
	for code := 0; code <= 255; code++ {
		got, stderr := runToEnd(t, runOpts{pid1: true}, "--", "sh", "-c", fmt.Sprintf("exit %d", code))
		if got != code {
			t.Fatalf("exit %d: goinit exited %d; stderr: %s", code, got, stderr)
		}
	}
}

// TestSignalDeathCodes checks 128+N for a child killed by signal N, both
// when the child signals itself and when goinit forwards the signal.
func TestSignalDeathCodes(t *testing.T) {
	requireRoot(t)
	sigs := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "INT": syscall.SIGINT,
		"QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "KILL": syscall.SIGKILL}
	for name, sig := range sigs {
		t.Run(name+"/self", func(t *testing.T) {
			got, stderr := runToEnd(t, runOpts{pid1: true}, "--", "sh", "-c", "kill -"+name+" $$")
			if want := 128 + int(sig); got != want {
				t.Fatalf("goinit exited %d, want %d; stderr: %s", got, want, stderr)
			}
		})
		if sig == syscall.SIGKILL {
			continue
		}
		t.Run(name+"/forwarded", func(t *testing.T) {
			// exec makes sleep the child itself, with default dispositions
			// (a shell would ignore INT and QUIT for a background job).
			p := start(t, runOpts{pid1: true}, "--", "sh", "-c", "echo ready; exec sleep 1000")
			p.waitLine("ready", 10*time.Second)
			waitForExec(t, p, "sleep")
			p.signal(sig)
			if got, want := p.wait(10*time.Second), 128+int(sig); got != want {
				t.Fatalf("goinit exited %d, want %d", got, want)
			}
		})
	}
}

// waitForExec waits until goinit's child runs the program name.
func waitForExec(t *testing.T, p *proc, name string) {
	t.Helper()
	eventually(t, 10*time.Second, "child to exec "+name, func() bool {
		for pid := range descendants(p.cmd.Process.Pid) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == name {
				return true
			}
		}
		return false
	})
}

func TestExecFailures(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	noexec := dir + "/noexec"
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badInterp := dir + "/badinterp"
	if err := os.WriteFile(badInterp, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		cmd  string
		code int
		msg  string
	}{
		{"/nonexistent/cmd", 127, "no such file"},
		{"no-such-command-anywhere", 127, "not found in PATH"},
		{noexec, 126, "not executable"},
		{dir, 126, "directory"},
		{badInterp, 127, "no such file"},
	}
	for _, c := range cases {
		got, stderr := runToEnd(t, runOpts{pid1: true}, "--", c.cmd)
		if got != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.cmd, got, stderr, c.code, c.msg)
		}
	}
}

func TestExitCodeMap(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		args []string
		env  []string
		want int
	}{
		{[]string{"--exit-code-map=143:0", "--", "sh", "-c", "kill -TERM $$"}, nil, 0},
		{[]string{"--exit-code-map=3:4", "--exit-code-map=4:9", "--", "sh", "-c", "exit 3"}, nil, 4},
		{[]string{"--", "sh", "-c", "exit 1"}, []string{"GOINIT_EXIT_CODE_MAP=1:0,2:0"}, 0},
		{[]string{"--exit-code-map=3:4", "--", "sh", "-c", "exit 5"}, nil, 5},
	}
	for _, c := range cases {
		if got, stderr := runToEnd(t, runOpts{pid1: true, env: c.env}, c.args...); got != c.want {
			t.Errorf("%v: exit %d, want %d; stderr: %s", c.args, got, c.want, stderr)
		}
	}
}

// TestBadInput checks that every bad flag, variable and value gives exit 2
// and one line on stderr that names it.
func TestBadInput(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		msg  string
	}{
		{[]string{"--bogus", "--", "true"}, nil, "unknown flag: --bogus"},
		{[]string{"--stop-timeout=5", "--", "true"}, nil, "--stop-timeout"},
		{[]string{"--", "true"}, []string{"GOINIT_STOP_TIMEOUT=5"}, "$GOINIT_STOP_TIMEOUT"},
		{[]string{"--", "true"}, []string{"GOINIT_STOP_TIMOUT=5s"}, "unknown variable GOINIT_STOP_TIMOUT"},
		{[]string{"--signal-scope=all", "--", "true"}, nil, `--signal-scope "all"`},
		{[]string{"--rewrite=TERM", "--", "true"}, nil, "FROM:TO"},
		{[]string{"--rewrite=FOO:TERM", "--", "true"}, nil, "unknown signal"},
		{[]string{"--exit-code-map=143", "--", "true"}, nil, "--exit-code-map"},
		{[]string{"--exit-code-map=1:300", "--", "true"}, nil, "0 to 255"},
		{[]string{"--stop-signal=BOGUS", "--", "true"}, nil, "--stop-signal"},
		{[]string{"--", "true"}, []string{"GOINIT_STOP_SIGNAL=99"}, "$GOINIT_STOP_SIGNAL"},
		{[]string{"--orphans=maybe", "--", "true"}, nil, "terminate, wait, ignore"},
		{[]string{"--log-format=xml", "--", "true"}, nil, "--log-format"},
		{[]string{"--log-level=loud", "--", "true"}, nil, "--log-level"},
		{[]string{"--user=no-such-user-x", "--", "true"}, nil, "--user"},
		{[]string{"--user=root:no-such-group-x", "--", "true"}, nil, "no such group"},
		{[]string{"--pdeathsig=NOPE", "--", "true"}, nil, "--pdeathsig"},
		{[]string{"--stop-timeout=-1s", "--", "true"}, nil, "negative"},
		{[]string{}, nil, "no command given"},
		{[]string{"--workers=0", "--", "true"}, nil, "--workers"},
		{[]string{"--workers=abc", "--", "true"}, nil, "--workers"},
		{[]string{"--restart=sometimes", "--", "true"}, nil, "always, on-failure or never"},
		{[]string{"--max-restarts=-2", "--", "true"}, nil, "--max-restarts"},
		{[]string{"--permanent-exit-codes=x", "--", "true"}, nil, "--permanent-exit-codes"},
		{[]string{"--restart-delay=1s", "--restart-delay-max=10ms", "--", "true"}, nil, "--restart-delay-max"},
		{[]string{"--workers=2", "--ready=soon", "--", "true"}, nil, "auto, exec, listen, message, notify or delay:DUR"},
		{[]string{"--workers=2", "--ready=delay:x", "--", "true"}, nil, "delay:2s"},
		{[]string{"--workers=2", "--", "true"}, []string{"GOINIT_READY=delay:-1s"}, "$GOINIT_READY"},
		{[]string{"--workers=2", "--ready-timeout=-1s", "--", "true"}, nil, "--ready-timeout"},
		{[]string{"--ready=message", "--", "true"}, nil, "needs the channel to goinit"},
		{[]string{"--workers=2", "--ipc=maybe", "--", "true"}, nil, "--ipc"},
		{[]string{"--workers=2", "--reload-signal=NOPE", "--", "true"}, nil, "--reload-signal"},
		{[]string{"--workers=2", "--reload-surge=0", "--", "true"}, nil, "--reload-surge"},
		{[]string{"--workers=2", "--ipc=off", "--watchdog=5s", "--", "true"}, nil, "the watchdog needs heartbeats"},
		{[]string{"--workers=2", "--max-lifetime=-1m", "--", "true"}, nil, "--max-lifetime"},
		{[]string{"--workers=2", "--memory-recycle=100Mi", "--", "true"}, nil, "must come with a larger --memory-limit"},
		{[]string{"--workers=2", "--memory-limit=64Mi", "--memory-recycle=1Gi", "--", "true"}, nil, "--memory-recycle"},
		{[]string{"--workers=2", "--memory-recycle=lots", "--", "true"}, nil, "--memory-recycle"},
	}
	for _, c := range cases {
		got, stderr := runToEnd(t, runOpts{env: c.env}, c.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if got != 2 || len(lines) != 1 || !strings.Contains(stderr, c.msg) || !strings.HasPrefix(stderr, "goinit: ") {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 and one line with %q", c.args, c.env, got, stderr, c.msg)
		}
	}
}

// TestFlagBeatsVariable checks the precedence of a flag over its variable.
func TestFlagBeatsVariable(t *testing.T) {
	requireRoot(t)
	env := []string{"GOINIT_EXIT_CODE_MAP=3:7", "GOINIT_STOP_TIMEOUT=5"}
	// The bad variable is never read because the flag is given.
	got, stderr := runToEnd(t, runOpts{pid1: true, env: env}, "--stop-timeout=2s", "--exit-code-map=3:4", "--", "sh", "-c", "exit 3")
	if got != 4 {
		t.Fatalf("exit %d, want 4; stderr: %s", got, stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	p := start(t, runOpts{}, "--version")
	if code := p.wait(10 * time.Second); code != 0 || !strings.HasPrefix(p.waitLine("goinit ", time.Second), "goinit ") {
		t.Fatalf("--version: exit %d, %q", code, p.stdout())
	}
	p = start(t, runOpts{}, "--help")
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	help := p.stdout()
	for _, want := range []string{"--stop-timeout", "GOINIT_STOP_TIMEOUT", "--rewrite", "--workers", "Exit status"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestOwnSettingsNotPassedOn checks that goinit's GOINIT_* settings do not
// reach the command, where they would configure a goinit it runs in turn.
func TestOwnSettingsNotPassedOn(t *testing.T) {
	p := start(t, runOpts{env: []string{"GOINIT_STOP_TIMEOUT=3s", "OTHER=kept"}}, "--", "sh", "-c", `echo "[$GOINIT_STOP_TIMEOUT] [$OTHER]"`)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.errText())
	}
	if got := p.stdout(); got != "[] [kept]" {
		t.Fatalf("child saw %q, want GOINIT_STOP_TIMEOUT removed and OTHER kept", got)
	}
}

// TestGoinitInsideAWorker runs goinit as the command of a goinit worker: the
// inner one must read GOINIT_WORKERS as the pool it belongs to, not as its
// own --workers, and pass the worker variables on.
func TestGoinitInsideAWorker(t *testing.T) {
	p := start(t, runOpts{}, "--workers=1", "--restart=never", "--", goinitBin(t), "--", "sh", "-c", `echo "id=$GOINIT_WORKER_ID workers=$GOINIT_WORKERS"`)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.errText())
	}
	if got := p.stdout(); got != "id=0 workers=1" {
		t.Fatalf("output %q, want one line id=0 workers=1", got)
	}
}

// TestBinaryIsStatic checks that goinit is a static executable (no program
// interpreter, no dynamic section): it must run in a FROM scratch image.
func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(goinitBin(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("goinit has a %v program header: it is dynamically linked", p.Type)
		}
	}
}
