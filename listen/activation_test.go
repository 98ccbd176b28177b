package listen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a socket-activated child (see
// TestMain) instead of running tests.
const helperEnv = "GOINIT_LISTEN_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(activatedChild(mode))
	}
	os.Exit(m.Run())
}

// childReport is what the helper child prints on its first stdout line.
type childReport struct {
	Err       string   // error from Files or Listeners
	Names     []string // file names, or listener addresses in "listeners" mode
	CloExec   []bool   // per file: close-on-exec set
	LeftInEnv []string // LISTEN_* variables still set after the call
}

// activatedChild runs in the re-executed test binary. Mode "files" calls
// Files, mode "listeners" calls Listeners; either way the child then answers
// one connection on each stream listener with its name (or address) and pid.
func activatedChild(mode string) int {
	var rep childReport
	var ls []net.Listener
	var labels []string
	switch mode {
	case "files":
		files, err := Files()
		if err != nil {
			rep.Err = err.Error()
		}
		for i, f := range files {
			rep.Names = append(rep.Names, f.Name())
			fl, err := unix.FcntlInt(uintptr(FirstFD+i), unix.F_GETFD, 0)
			rep.CloExec = append(rep.CloExec, err == nil && fl&unix.FD_CLOEXEC != 0)
			if l, err := net.FileListener(f); err == nil {
				ls = append(ls, l)
				labels = append(labels, f.Name())
			}
		}
	case "listeners":
		var err error
		if ls, err = Listeners(); err != nil {
			rep.Err = err.Error()
		}
		for _, l := range ls {
			rep.Names = append(rep.Names, l.Addr().Network()+":"+l.Addr().String())
			labels = append(labels, l.Addr().String())
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 2
	}
	for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
		if v, ok := os.LookupEnv(k); ok {
			rep.LeftInEnv = append(rep.LeftInEnv, k+"="+v)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	for i, l := range ls {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return 1
		}
		fmt.Fprintf(c, "%s pid=%d\n", labels[i], os.Getpid())
		c.Close()
	}
	return 0
}

// startActivated starts the helper child with files as descriptors 3, 4, ...
// and env from Env. With ownPID, LISTEN_PID is set to the child's own pid by
// a shell that then execs the child (the pid survives exec); otherwise to
// listenPID.
func startActivated(t *testing.T, mode string, addrs []Addr, files []*os.File, ownPID bool, listenPID string) (*exec.Cmd, childReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	var cmd *exec.Cmd
	if ownPID {
		cmd = exec.CommandContext(ctx, "sh", "-c", `LISTEN_PID=$$ exec "$0"`, os.Args[0])
	} else {
		cmd = exec.CommandContext(ctx, os.Args[0])
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+mode)
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// A -race child otherwise sleeps 1s at exit.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.Env = append(cmd.Env, Env(addrs, files)...)
	if !ownPID {
		cmd.Env = append(cmd.Env, EnvPID+"="+listenPID)
	}
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read child report: %v", err)
	}
	var rep childReport
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("child report %q: %v", line, err)
	}
	return cmd, rep
}

func greeting(t *testing.T, network, address string) string {
	t.Helper()
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func waitExit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

func TestFilesInActivatedChild(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	addrs := []Addr{mustParse(t, "tcp4://127.0.0.1:0#http"), mustParse(t, "unix://"+sock), mustParse(t, "udp4://127.0.0.1:0")}
	var files []*os.File
	for _, a := range addrs {
		files = append(files, mustOpen(t, a.String(), false))
	}
	cmd, rep := startActivated(t, "files", addrs, files, true, "")
	if rep.Err != "" {
		t.Fatalf("Files: %s", rep.Err)
	}
	if want := []string{"http", "unix-admin.sock", "udp4-0"}; !slices.Equal(rep.Names, want) {
		t.Errorf("names = %q, want %q", rep.Names, want)
	}
	if want := []bool{true, true, true}; !slices.Equal(rep.CloExec, want) {
		t.Errorf("close-on-exec = %v, want %v", rep.CloExec, want)
	}
	if len(rep.LeftInEnv) != 0 {
		t.Errorf("still in the environment after Files: %q", rep.LeftInEnv)
	}
	pid := "pid=" + strconv.Itoa(cmd.Process.Pid)
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", boundPort(t, files[0]))
	if got := greeting(t, "tcp", tcpAddr); got != "http "+pid {
		t.Errorf("tcp greeting %q, want %q", got, "http "+pid)
	}
	if got := greeting(t, "unix", sock); got != "unix-admin.sock "+pid {
		t.Errorf("unix greeting %q, want %q", got, "unix-admin.sock "+pid)
	}
	waitExit(t, cmd)
}

func TestListenersInActivatedChild(t *testing.T) {
	addrs := []Addr{mustParse(t, "udp4://127.0.0.1:0"), mustParse(t, "tcp4://127.0.0.1:0")}
	var files []*os.File
	for _, a := range addrs {
		files = append(files, mustOpen(t, a.String(), false))
	}
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", boundPort(t, files[1]))
	cmd, rep := startActivated(t, "listeners", addrs, files, true, "")
	if rep.Err != "" {
		t.Fatalf("Listeners: %s", rep.Err)
	}
	if want := []string{"tcp:" + tcpAddr}; !slices.Equal(rep.Names, want) {
		t.Errorf("listeners = %q, want %q (UDP left out)", rep.Names, want)
	}
	if got, want := greeting(t, "tcp", tcpAddr), fmt.Sprintf("%s pid=%d", tcpAddr, cmd.Process.Pid); got != want {
		t.Errorf("greeting %q, want %q", got, want)
	}
	waitExit(t, cmd)
}

func TestFilesIgnoresOtherPID(t *testing.T) {
	addrs := []Addr{mustParse(t, "tcp4://127.0.0.1:0")}
	files := []*os.File{mustOpen(t, addrs[0].String(), false)}
	// pid 1 is never the child: the variables were meant for someone else.
	cmd, rep := startActivated(t, "files", addrs, files, false, "1")
	if rep.Err != "" || len(rep.Names) != 0 {
		t.Errorf("Files with LISTEN_PID=1 = %q, err %q; want nothing", rep.Names, rep.Err)
	}
	if len(rep.LeftInEnv) != 0 {
		t.Errorf("still in the environment after Files: %q", rep.LeftInEnv)
	}
	waitExit(t, cmd)
}

func TestFilesInProcess(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, pid, fds, wantErr string
	}{
		{"not activated", "", "", ""},
		{"other process", "1", "1", ""},
		{"bad LISTEN_PID", "x", "1", `socket activation: invalid LISTEN_PID="x"`},
		{"bad LISTEN_FDS", self, "many", `socket activation: invalid LISTEN_FDS="many"`},
		{"negative LISTEN_FDS", self, "-1", `socket activation: invalid LISTEN_FDS="-1"`},
		{"zero sockets", self, "0", ""},
		{"descriptor not open", self, "1000", "socket activation: LISTEN_FDS=1000 but descriptor "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// t.Setenv restores the variables that Files unsets.
			t.Setenv(EnvFDNames, "a")
			if tt.pid != "" {
				t.Setenv(EnvPID, tt.pid)
				t.Setenv(EnvFDs, tt.fds)
			} else {
				t.Setenv(EnvPID, "")
				os.Unsetenv(EnvPID)
			}
			files, err := Files()
			if len(files) != 0 {
				t.Errorf("Files = %v, want none", files)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Errorf("Files error = %v, want %q", err, tt.wantErr)
			}
			for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%s still set", k, v)
				}
			}
		})
	}
}
