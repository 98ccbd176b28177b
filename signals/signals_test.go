package signals

import (
	"os"
	"os/signal"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	good := map[string]unix.Signal{
		"TERM": unix.SIGTERM, "SIGTERM": unix.SIGTERM, "term": unix.SIGTERM, "15": unix.SIGTERM,
		"HUP": unix.SIGHUP, "usr1": unix.SIGUSR1, "SIGWINCH": unix.SIGWINCH, "9": unix.SIGKILL,
		"RTMIN": 34, "RTMIN+3": 37, "SIGRTMAX": 64, "RTMAX-1": 63, "64": 64,
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "65", "-1", "FOO", "SIGFOO", "RTMIN-1", "RTMAX+1", "RTMIN+x", "RTMIN+40"} {
		if got, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseTarget(t *testing.T) {
	for _, in := range []string{"NONE", "none", "0"} {
		if got, err := ParseTarget(in); err != nil || got != None {
			t.Errorf("ParseTarget(%q) = %v, %v; want None", in, got, err)
		}
	}
}

func TestName(t *testing.T) {
	cases := map[unix.Signal]string{unix.SIGTERM: "TERM", 36: "RTMIN+2", None: "NONE", unix.SIGUSR2: "USR2"}
	for sig, want := range cases {
		if got := Name(sig); got != want {
			t.Errorf("Name(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestRewrite(t *testing.T) {
	r := Rewrite{}
	for _, rule := range []string{"TERM:QUIT", "10:12", "WINCH:NONE", "HUP:0"} {
		if err := r.ParseRule(rule); err != nil {
			t.Fatalf("ParseRule(%q): %v", rule, err)
		}
	}
	cases := map[unix.Signal]unix.Signal{
		unix.SIGTERM: unix.SIGQUIT, unix.SIGUSR1: unix.SIGUSR2, unix.SIGWINCH: None,
		unix.SIGHUP: None, unix.SIGINT: unix.SIGINT,
	}
	for in, want := range cases {
		if got := r.Apply(in); got != want {
			t.Errorf("Apply(%v) = %v, want %v", in, got, want)
		}
	}
	if got, want := r.String(), "HUP:NONE,USR1:USR2,TERM:QUIT,WINCH:NONE"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, bad := range []string{"TERM", "TERM:", ":QUIT", "FOO:TERM", "KILL:TERM", "STOP:NONE", "TERM:99"} {
		if err := (Rewrite{}).ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) succeeded, want an error", bad)
		}
	}
}

// TestForwardableCatchable checks against the real kernel that every signal
// in Forwardable can be caught by a Go program and that the set leaves out
// the runtime's own SIGURG and SIGCHLD.
func TestForwardableCatchable(t *testing.T) {
	if !slices.Contains(Forwardable(true), os.Signal(unix.SIGURG)) {
		t.Fatal("Forwardable(true) leaves out SIGURG")
	}
	sigs := Forwardable(false)
	for _, s := range sigs {
		switch s {
		case unix.SIGURG, unix.SIGCHLD, unix.SIGKILL, unix.SIGSTOP, unix.SIGPIPE:
			t.Fatalf("Forwardable includes %v", s)
		}
	}
	// Deliver a harmless sample for real and see it arrive.
	c := make(chan os.Signal, 1)
	signal.Notify(c, unix.SIGUSR1, unix.Signal(40))
	defer signal.Stop(c)
	for _, s := range []unix.Signal{unix.SIGUSR1, 40} {
		if err := unix.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-c:
			if got != s {
				t.Fatalf("got %v, want %v", got, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("signal %v never arrived", s)
		}
	}
}

func TestApplyJobControl(t *testing.T) {
	r := Rewrite{unix.SIGTTIN: unix.SIGTERM, unix.SIGTTOU: None}
	for _, c := range []struct {
		sig   unix.Signal
		group bool
		want  unix.Signal
	}{
		{unix.SIGTSTP, true, unix.SIGSTOP},
		{unix.SIGTSTP, false, unix.SIGTSTP},
		{unix.SIGTTIN, true, unix.SIGTERM},
		{unix.SIGTTIN, false, unix.SIGTERM},
		{unix.SIGTTOU, true, None},
	} {
		if got := r.ApplyJobControl(c.sig, c.group); got != c.want {
			t.Errorf("ApplyJobControl(%s, group=%v) = %s, want %s", Name(c.sig), c.group, Name(got), Name(c.want))
		}
	}
}

func TestAsyncPreemptOff(t *testing.T) {
	for _, c := range []struct {
		defaults, godebug string
		want              bool
	}{
		{"", "", false},
		{"asyncpreemptoff=1", "", true},
		{"panicnil=1,asyncpreemptoff=1", "", true},
		{"asyncpreemptoff=1,asyncpreemptoff=0", "", false},
		{"asyncpreemptoff=1", "asyncpreemptoff=0", false},
		{"asyncpreemptoff=1", "gctrace=1", true},
		{"", "gctrace=1,asyncpreemptoff=1", true},
		{"", "asyncpreemptoff=2", false},
	} {
		if got := AsyncPreemptOff(c.defaults, c.godebug); got != c.want {
			t.Errorf("AsyncPreemptOff(%q, %q) = %v, want %v", c.defaults, c.godebug, got, c.want)
		}
	}
}

// TestReleaseFlagsEverywhere checks that every place that builds goinit for
// release uses PreemptOffLDFlags' settings, so that none of them ships a
// goinit whose runtime and whose SIGURG forwarding disagree.
func TestReleaseFlagsEverywhere(t *testing.T) {
	for _, f := range []string{"../Makefile", "../Dockerfile.example"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, flag := range strings.Fields(PreemptOffLDFlags) {
			if !strings.Contains(string(b), flag) {
				t.Errorf("%s does not build goinit with %s", f, flag)
			}
		}
	}
}
