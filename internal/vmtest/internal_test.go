package vmtest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadConsole(t *testing.T) {
	console := "SeaBIOS noise\r\n" +
		markerStart + "\r\n" +
		"VERDICT a PASS all good\r\n" +
		"VERDICT b FAIL want 1, got 2\r\n" +
		"VERDICT c WEIRD\r\n" +
		"partial line" + markerExit + "3\r\n" +
		"[    2.2] reboot: Power down\r\n"
	res := &Result{ExitCode: -1}
	exits := 0
	started, exited, setupErr := readConsole(strings.NewReader(console), res, time.Now(), t, false, func() { exits++ })
	if !started || !exited || setupErr != "" || exits != 1 {
		t.Fatalf("started %v, exited %v, setupErr %q, onExit calls %d", started, exited, setupErr, exits)
	}
	if res.ExitCode != 3 {
		t.Errorf("ExitCode = %d, want 3", res.ExitCode)
	}
	wantOut := "VERDICT a PASS all good\nVERDICT b FAIL want 1, got 2\nVERDICT c WEIRD\npartial line\n"
	if res.Output != wantOut {
		t.Errorf("Output = %q, want %q", res.Output, wantOut)
	}
	if strings.Contains(res.Console, "\r") || !strings.HasSuffix(res.Console, "Power down\n") {
		t.Errorf("Console = %q", res.Console)
	}
	want := []Verdict{{"a", true, "all good"}, {"b", false, "want 1, got 2"}, {"c", false, ""}}
	got := res.Verdicts()
	if len(got) != len(want) {
		t.Fatalf("Verdicts() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("verdict %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if v, err := res.Verdict("b"); err != nil || v.Pass {
		t.Errorf(`Verdict("b") = %+v, %v`, v, err)
	}
	if _, err := res.Verdict("zz"); !errors.Is(err, ErrNoVerdict) {
		t.Errorf(`Verdict("zz") error = %v, want ErrNoVerdict`, err)
	}
}

func TestReadConsoleSetupFailure(t *testing.T) {
	res := &Result{ExitCode: -1}
	started, exited, setupErr := readConsole(strings.NewReader(markerSetup+"mount cgroup2 on /sys/fs/cgroup\n"), res, time.Now(), t, false, func() {})
	if started || exited || setupErr != "mount cgroup2 on /sys/fs/cgroup" {
		t.Errorf("started %v, exited %v, setupErr %q", started, exited, setupErr)
	}
}

// cpioEntry is one entry read back by parseCPIO.
type cpioEntry struct {
	name        string
	mode        uint32
	major, minr uint32
	data        string
}

// parseCPIO is an independent newc reader, strict about the alignment rules
// the kernel's unpacker enforces.
func parseCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var es []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("entry at %d, field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		mode, size, rmaj, rmin, namesize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		off = align4(off + 110 + namesize)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return es
		}
		es = append(es, cpioEntry{name, mode, rmaj, rmin, string(b[off : off+size])})
		off = align4(off + size)
	}
}

func TestInitramfs(t *testing.T) {
	dir := t.TempDir()
	busybox := filepath.Join(dir, "busybox")
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(busybox, []byte("BB"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, []byte("odd-sized\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "initramfs.cpio")
	cfg := Config{Files: map[string]string{"/opt/x/prog": prog}, Script: "exit 0\n"}
	if err := writeInitramfs(out, busybox, cfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]cpioEntry{}
	for _, e := range parseCPIO(t, b) {
		if parent := filepath.Dir(e.name); parent != "." && seen[parent].mode&syscall.S_IFMT != syscall.S_IFDIR {
			t.Errorf("%s comes before its directory", e.name)
		}
		if _, dup := seen[e.name]; dup {
			t.Errorf("%s appears twice", e.name)
		}
		seen[e.name] = e
	}
	checks := []struct {
		name string
		mode uint32
		data string
	}{
		{"init", syscall.S_IFREG | 0o755, initScript},
		{"bin/busybox", syscall.S_IFREG | 0o755, "BB"},
		{"opt/x/prog", syscall.S_IFREG | 0o750, "odd-sized\n"},
		{"vmtest/script.sh", syscall.S_IFREG | 0o644, "exit 0\n"},
		{"vmtest/lib.sh", syscall.S_IFREG | 0o644, libScript},
		{"dev/console", syscall.S_IFCHR | 0o600, ""},
		{"usr/sbin", syscall.S_IFDIR | 0o755, ""},
	}
	for _, c := range checks {
		e, ok := seen[c.name]
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if e.mode != c.mode || e.data != c.data {
			t.Errorf("%s: mode %o, data %q; want mode %o, data %q", c.name, e.mode, e.data, c.mode, c.data)
		}
	}
	if e := seen["dev/console"]; e.major != 5 || e.minr != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", e.major, e.minr)
	}
}

func TestInitramfsRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"relative", "/a/../b", "/init", "/vmtest/x", "/dev/null", "/bin/busybox"} {
		err := writeInitramfs(filepath.Join(t.TempDir(), "i"), "/nonexistent", Config{Files: map[string]string{p: "/etc/hostname"}})
		if err == nil {
			t.Errorf("Files[%q] accepted", p)
		}
	}
}

func TestCheckPVH(t *testing.T) {
	if err := checkPVH([]byte("not an elf")); err == nil {
		t.Error("checkPVH accepted garbage")
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Skip(err)
	}
	if err := checkPVH(self); err == nil || !bytes.Contains([]byte(err.Error()), []byte("PVH")) {
		t.Errorf("checkPVH(test binary) = %v, want no PVH entry point", err)
	}
}
