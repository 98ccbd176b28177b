package worklog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// helperEnv makes the test binary a worker that writes in a pattern.
const helperEnv = "WORKLOG_TEST_WORKER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		worker(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// longLine is 40 000 bytes with a 3-byte rune across each 16 KiB boundary.
var longLine = strings.Repeat("a", MaxLine-1) + "€" + strings.Repeat("b", 40000-MaxLine-2)

func worker(mode string) {
	tag := os.Getenv("TAG")
	out := bufio.NewWriterSize(os.Stdout, 512)
	defer out.Flush()
	switch mode {
	case "lines": // numbered lines on both streams
		for i := range 2000 {
			fmt.Fprintf(out, "%s %d\n", tag, i)
			if i%100 == 0 {
				fmt.Fprintf(os.Stderr, "%s err %d\n", tag, i)
			}
		}
	case "flood": // 64 MiB as fast as the pipe takes it
		line := []byte(strings.Repeat("x", 99) + "\n")
		for range (64 << 20) / len(line) {
			out.Write(line)
		}
	case "slow": // a sibling that writes now and then
		for i := range 100 {
			fmt.Fprintf(out, "%s %d\n", tag, i)
			out.Flush()
			time.Sleep(5 * time.Millisecond)
		}
	case "long":
		fmt.Fprintf(out, "%s\n", longLine)
		fmt.Fprintf(os.Stderr, "tab\there \"quoted\" \xff\n")
		fmt.Fprint(out, "no newline at the end")
	}
}

// collector reads a destination pipe, optionally slowly, until EOF.
type collector struct {
	w    *os.File
	mu   sync.Mutex
	b    bytes.Buffer
	done chan struct{}
}

func collect(t *testing.T, delay time.Duration) *collector {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{w: w, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer r.Close()
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			c.mu.Lock()
			c.b.Write(buf[:n])
			c.mu.Unlock()
			if err != nil {
				return
			}
			time.Sleep(delay)
		}
	}()
	return c
}

// lines closes the write end and returns everything read.
func (c *collector) lines(t *testing.T) []string {
	t.Helper()
	c.w.Close()
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Fatal("destination reader did not finish")
	}
	return strings.Split(strings.TrimSuffix(c.b.String(), "\n"), "\n")
}

func start(t *testing.T, l *Logs, id int, mode, tag string) *exec.Cmd {
	t.Helper()
	p, err := l.Open("worker", id)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "TAG="+tag)
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		p.Abort()
		t.Fatal(err)
	}
	p.Started(cmd.Process.Pid)
	return cmd
}

func closeLogs(t *testing.T, l *Logs) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPrefixWhole: three workers write at once; every line arrives whole,
// tagged with its own worker, in order, none lost.
func TestPrefixWhole(t *testing.T) {
	out, errs := collect(t, 0), collect(t, 0)
	l, err := New(Prefix, out.w, errs.w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for id := range 3 {
		cmds = append(cmds, start(t, l, id, "lines", "w"+strconv.Itoa(id)))
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	closeLogs(t, l)
	re := regexp.MustCompile(`^\[worker (\d)\] w(\d) (err )?(\d+)$`)
	for name, c := range map[string]*collector{"stdout": out, "stderr": errs} {
		next := map[string]int{}
		lines := c.lines(t)
		for _, line := range lines {
			m := re.FindStringSubmatch(line)
			if m == nil || m[1] != m[2] {
				t.Fatalf("%s: mangled line %q", name, line)
			}
			n, _ := strconv.Atoi(m[4])
			if want := next[m[1]]; n != want {
				t.Fatalf("%s: worker %s line %d after %d", name, m[1], n, want-1)
			}
			step := 1
			if m[3] != "" {
				step = 100
			}
			next[m[1]] = n + step
		}
		want := map[string]int{"stdout": 2000 * 3, "stderr": 20 * 3}[name]
		if len(lines) != want {
			t.Errorf("%s: %d lines, want %d", name, len(lines), want)
		}
	}
	if l.Dropped() != 0 {
		t.Errorf("%d lines dropped with a fast destination", l.Dropped())
	}
}

// TestFlood: one worker writes 64 MiB while goinit's stdout drains at about
// 400 KB/s. The flooder is never blocked (it finishes in seconds, not the
// 160 s the destination would need), its excess is dropped and counted, and
// its sibling's lines all arrive.
func TestFlood(t *testing.T) {
	out, errs := collect(t, 10*time.Millisecond), collect(t, 0)
	l, err := New(Prefix, out.w, errs.w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start0 := time.Now()
	flood := start(t, l, 0, "flood", "")
	sibling := start(t, l, 1, "slow", "s")
	waited := make(chan error, 1)
	go func() { waited <- flood.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		flood.Process.Kill()
		t.Fatal("the flooding worker was stalled by a slow stdout")
	}
	t.Logf("flooder wrote 64 MiB in %s", time.Since(start0).Round(time.Millisecond))
	if err := sibling.Wait(); err != nil {
		t.Fatal(err)
	}
	closeLogs(t, l)
	lines := out.lines(t)
	var sib int
	var notice string
	for _, line := range lines {
		switch {
		case strings.HasPrefix(line, "[worker 1] s "):
			if want := fmt.Sprintf("[worker 1] s %d", sib); line != want {
				t.Fatalf("sibling line %q, want %q", line, want)
			}
			sib++
		case strings.HasPrefix(line, "[worker 0] goinit: dropped "):
			notice = line
		case line != "[worker 0] "+strings.Repeat("x", 99):
			t.Fatalf("mangled line %.80q", line)
		}
	}
	if sib != 100 {
		t.Errorf("sibling: %d of 100 lines arrived", sib)
	}
	if l.Dropped() == 0 || !strings.HasSuffix(notice, " lines (stdout could not keep up)") {
		t.Errorf("dropped %d, notice %q: want drops counted and reported", l.Dropped(), notice)
	}
	t.Logf("%d lines written, %d dropped; %s", len(lines), l.Dropped(), notice)
}

// TestJSON: fields, escaping, the pid, long lines cut at a rune boundary
// and a last line without a newline.
func TestJSON(t *testing.T) {
	out, errs := collect(t, 0), collect(t, 0)
	l, err := New(JSON, out.w, errs.w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := start(t, l, 3, "long", "")
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	closeLogs(t, l)
	type rec struct {
		Time   time.Time
		Worker *int
		PID    int
		Stream string
		Msg    string
	}
	decode := func(lines []string) []rec {
		var rs []rec
		for _, line := range lines {
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			var r rec
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("not JSON: %.100q: %v", line, err)
			}
			if r.Worker == nil || *r.Worker != 3 || r.PID != cmd.Process.Pid || time.Since(r.Time) > time.Minute {
				t.Fatalf("bad fields in %.200q", line)
			}
			rs = append(rs, r)
		}
		return rs
	}
	o := decode(out.lines(t))
	if len(o) != 4 {
		t.Fatalf("stdout: %d records, want 3 pieces of the long line and the last line", len(o))
	}
	var joined string
	for _, r := range o[:3] {
		if len(r.Msg) > MaxLine || !utf8.ValidString(r.Msg) || r.Stream != "stdout" {
			t.Fatalf("piece of %d bytes, valid UTF-8 %v, stream %s", len(r.Msg), utf8.ValidString(r.Msg), r.Stream)
		}
		joined += r.Msg
	}
	if joined != longLine {
		t.Fatal("the pieces of the long line do not add up to it")
	}
	if o[3].Msg != "no newline at the end" {
		t.Fatalf("last line %q", o[3].Msg)
	}
	e := decode(errs.lines(t))
	if len(e) != 1 || e[0].Stream != "stderr" || e[0].Msg != "tab\there \"quoted\" \ufffd" {
		t.Fatalf("stderr: %+v", e)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"inherit", "prefix", "json"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("syslog"); err == nil || !strings.Contains(err.Error(), "want inherit, prefix or json") {
		t.Errorf("ParseMode(syslog): %v", err)
	}
	if _, err := New(Inherit, io.Discard, io.Discard, Options{}); err == nil {
		t.Error("New(Inherit) accepted")
	}
}

func TestRuneBoundary(t *testing.T) {
	for in, want := range map[string]int{"abc": 3, "ab\xe2\x82": 2, "a\xe2\x82\xac": 4, "\xff\xff": 2, "ab\xc3": 2} {
		if got := runeBoundary([]byte(in)); got != want {
			t.Errorf("runeBoundary(%q) = %d, want %d", in, got, want)
		}
	}
}
