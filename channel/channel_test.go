package channel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// childMode, when set, makes the test binary act as a child process that
// talks on the channel at $GOINIT_IPC_FD, instead of running the tests.
const childMode = "GOINIT_CHANNEL_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childMode); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child runs one of the test children; it returns the exit code.
func child(mode string) int {
	fd, err := strconv.Atoi(os.Getenv(EnvFD))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: bad", EnvFD, err)
		return 2
	}
	f := os.NewFile(uintptr(fd), "ipc")
	switch mode {
	case "malformed":
		big := bytes.Repeat([]byte("a"), MaxLine+1)
		var b bytes.Buffer
		b.WriteString("not json\n" + `{"ready":false}` + "\n" + `"hello"` + "\n")
		b.WriteString(`"` + string(big) + `"` + "\n\n")
		b.WriteString(`"` + string(big[:MaxLine-2]) + `"` + "\n") // exactly MaxLine: kept, unknown
		b.WriteString(`{"ready": true}` + "\n")
		b.WriteString(`{"to":"workers","data":[1,2]}` + "\r\n")
		b.WriteString(`"ping"` + "\n")
		b.WriteString(`"ready"`) // unterminated at exit
		if _, err := f.Write(b.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
		return 0
	case "silent":
		// Never reads; says it is up, then waits to be killed.
		if _, err := f.Write([]byte("\"ready\"\n")); err != nil {
			return 1
		}
		time.Sleep(time.Minute)
		return 0
	case "flood":
		// Writes pings as fast as it can until its channel breaks.
		for {
			if _, err := f.Write([]byte("\"ping\"\n")); err != nil {
				return 0
			}
		}
	}
	fmt.Fprintln(os.Stderr, "child: unknown mode", mode)
	return 2
}

// start runs cmd with the child's end of a new channel of hub at descriptor
// 4, after a stand-in for one LISTEN_FDS socket at 3, as goinit would.
func start(t *testing.T, hub *Hub[string], key string, cmd *exec.Cmd) *Conn[string] {
	t.Helper()
	c, childEnd, err := hub.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmd.ExtraFiles = []*os.File{devnull, childEnd}
	cmd.Env = append(cmd.Environ(), Env(4)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		c.Close()
	})
	return c
}

func selfChild(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childMode+"="+mode)
	return cmd
}

func nodePath(t *testing.T) string { t.Helper(); return testbin.Tool(t, "node") }

// next waits for the next event of hub, failing the test after a deadline.
func next(t *testing.T, hub *Hub[string]) Event[string] {
	t.Helper()
	return testbin.Next(t, hub.Events())
}

// want checks ev's key, kind and, for messages, its raw to and data.
func want(t *testing.T, ev Event[string], key string, kind Kind, to, data string) {
	t.Helper()
	if ev.Key != key || ev.Kind != kind || string(ev.To) != to || string(ev.Data) != data || ev.Err != nil {
		t.Fatalf("event = {%q %v to=%s data=%s err=%v}, want {%q %v to=%s data=%s}", ev.Key, ev.Kind, ev.To, ev.Data, ev.Err, key, kind, to, data)
	}
}

// nodeEcho is a worker that knows nothing of goinit: Node's own channel.
const nodeEcho = `
process.send('ready');
process.send({to: 'agent', data: {x: 1}});
process.send({ping: true});
process.on('message', m => {
	if (m.data === 'bye') { process.disconnect(); return; }
	process.send({to: 'agent', data: {echo: m, env: process.env.GOINIT_IPC_FD}});
});
`

func TestNodeChild(t *testing.T) {
	node := nodePath(t)
	hub := NewHub[string](Options{})
	c := start(t, hub, "w1", exec.Command(node, "-e", nodeEcho))
	want(t, next(t, hub), "w1", Ready, "", "")
	want(t, next(t, hub), "w1", Message, `"agent"`, `{"x":1}`)
	want(t, next(t, hub), "w1", Ping, "", "")
	if !c.Send([]byte(`{"from":"goinit","data":{"n":1,"s":"é\u2028"}}`)) {
		t.Fatal("Send refused a valid line")
	}
	want(t, next(t, hub), "w1", Message, `"agent"`, `{"echo":{"from":"goinit","data":{"n":1,"s":"é`+"\u2028"+`"}},"env":"4"}`)
	c.Send([]byte(`{"from":"goinit","data":"bye"}`))
	want(t, next(t, hub), "w1", Closed, "", "")
	// The child can read "bye" and exit, and its end of file arrive,
	// before the writer goroutine counts the line sent: Close waits for it.
	c.Close()
	if s := c.Stats(); s.Received != 4 || s.Sent != 2 || s.Closed != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestMalformedAndOversizeLines(t *testing.T) {
	hub := NewHub[string](Options{})
	c := start(t, hub, "m", selfChild("malformed"))
	want(t, next(t, hub), "m", Ready, "", "")
	want(t, next(t, hub), "m", Message, `"workers"`, `[1,2]`)
	want(t, next(t, hub), "m", Ping, "", "")
	want(t, next(t, hub), "m", Closed, "", "")
	got := c.Stats()
	// not json + the unterminated last line; {"ready":false}, "hello" and
	// the MaxLine string are unknown; one line is over MaxLine.
	w := Stats{Received: 6, DroppedInvalid: 2, DroppedOversize: 1, Unknown: 3, Closed: 1}
	if got != w {
		t.Fatalf("stats = %+v, want %+v", got, w)
	}
	if hub.Stats() != w {
		t.Fatalf("hub stats = %+v, want %+v", hub.Stats(), w)
	}
}

// A child that never reads: 100k messages must neither block Send nor grow
// goinit's memory past the queue bound, and another child's channel must
// keep flowing meanwhile.
func TestChildThatNeverReads(t *testing.T) {
	node := nodePath(t)
	hub := NewHub[string](Options{})
	silent := start(t, hub, "silent", selfChild("silent"))
	want(t, next(t, hub), "silent", Ready, "", "")
	echo := start(t, hub, "echo", exec.Command(node, "-e", nodeEcho))
	want(t, next(t, hub), "echo", Ready, "", "")
	want(t, next(t, hub), "echo", Message, `"agent"`, `{"x":1}`)
	want(t, next(t, hub), "echo", Ping, "", "")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n, size = 100_000, 1024
	var slowest time.Duration
	begin := time.Now()
	for i := range n {
		// A fresh buffer per message, as the router builds them: if the
		// queue kept them all, that is 100 MiB.
		line := []byte(`{"from":"goinit","data":"` + strings.Repeat("x", size) + strconv.Itoa(i) + `"}`)
		t0 := time.Now()
		if !silent.Send(line) {
			t.Fatalf("Send %d refused", i)
		}
		slowest = max(slowest, time.Since(t0))
		if i%10_000 == 0 {
			// The other worker is served while the silent one's queue is full.
			echo.Send([]byte(`{"from":"goinit","data":` + strconv.Itoa(i) + `}`))
			want(t, next(t, hub), "echo", Message, `"agent"`, `{"echo":{"from":"goinit","data":`+strconv.Itoa(i)+`},"env":"4"}`)
		}
	}
	total := time.Since(begin)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("100k sends in %v (slowest %v), heap grew %d KiB", total, slowest, grown>>10)
	if grown > 2*DefaultQueueBytes {
		t.Errorf("heap grew by %d bytes, more than twice the %d-byte queue bound", grown, DefaultQueueBytes)
	}
	if slowest > 100*time.Millisecond {
		t.Errorf("slowest Send took %v: Send must not wait for the child", slowest)
	}
	silent.mu.Lock()
	queued, bytes := len(silent.queue), silent.size
	silent.mu.Unlock()
	if queued > DefaultQueueLen || bytes > DefaultQueueBytes {
		t.Errorf("queue holds %d messages, %d bytes; bound is %d, %d", queued, bytes, DefaultQueueLen, DefaultQueueBytes)
	}
	s := silent.Stats()
	// What the kernel's socket buffer took was sent, one line is in the
	// blocked writer's hands, the rest is queued or dropped.
	if s.Sent+1+s.DroppedQueueFull+uint64(queued) != n || s.DroppedQueueFull == 0 {
		t.Errorf("stats %+v with %d queued do not account for %d sends", s, queued, n)
	}
	// Close returns although the writer is blocked on the full socket.
	closeWithin(t, silent, "a child that never reads")
	if silent.Send([]byte(`1`)) {
		t.Error("Send after Close queued a line")
	}
	if got := silent.Stats().DroppedClosed; got != uint64(queued)+2 {
		t.Errorf("DroppedClosed = %d, want %d (queued at Close, the writer's, and the Send after)", got, queued+2)
	}
}

// A reader whose events the supervisor does not take waits, holding back
// only its own child, and Close still ends it.
func TestCloseWhileEventsFull(t *testing.T) {
	hub := NewHub[string](Options{Events: 1})
	c := start(t, hub, "flood", selfChild("flood"))
	deadline := time.Now().Add(10 * time.Second)
	for len(hub.Events()) < cap(hub.Events()) {
		if time.Now().After(deadline) {
			t.Fatal("events channel never filled")
		}
		time.Sleep(time.Millisecond)
	}
	closeWithin(t, c, "a reader waiting for the supervisor")
	// The one buffered ping, and no Closed event for goinit's own Close.
	want(t, next(t, hub), "flood", Ping, "", "")
	select {
	case ev := <-hub.Events():
		t.Fatalf("event after Close: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

// closeWithin fails the test if c.Close does not return within 5s.
func closeWithin(t *testing.T, c *Conn[string], blockedOn string) {
	t.Helper()
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on " + blockedOn)
	}
}

func TestSendRefusesWhatWouldBreakNode(t *testing.T) {
	hub := NewHub[string](Options{QueueBytes: 64})
	c, childEnd, err := hub.Open("x")
	if err != nil {
		t.Fatal(err)
	}
	childEnd.Close()
	defer c.Close()
	for _, line := range []string{"", "not json", "{\"a\":\n1}", `{"a":1}{"b":2}`, `"` + strings.Repeat("y", 64) + `"`} {
		if c.Send([]byte(line)) {
			t.Errorf("Send(%q) = true", line)
		}
	}
	if s := c.Stats(); s.DroppedInvalid != 4 || s.DroppedOversize != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		line     string
		kind     Kind
		to, data string
	}{
		{`"ready"`, Ready, "", ""},
		{` "ready" `, Ready, "", ""},
		{`{"ready":true}`, Ready, "", ""},
		{`{"ready": true, "pid": 3}`, Ready, "", ""},
		{`{"ready":false}`, 0, "", ""},
		{`{"ready":"true"}`, 0, "", ""},
		{`{"Ready":true}`, 0, "", ""},
		{`"ping"`, Ping, "", ""},
		{`{"ping":true}`, Ping, "", ""},
		{`{"to":"agent","data":{"x":1}}`, Message, `"agent"`, `{"x":1}`},
		{`{"to":3}`, Message, `3`, ""},
		{`{"to":null,"data":null}`, Message, `null`, `null`},
		{`{"to":"all","ready":true}`, Message, `"all"`, ""},
		{`{"TO":"all"}`, 0, "", ""},
		{`"READY"`, 0, "", ""},
		{`42`, 0, "", ""},
		{`[1]`, 0, "", ""},
		{`{"cmd":"NODE_HANDLE"}`, 0, "", ""},
	} {
		kind, to, data := classify([]byte(tc.line))
		if kind != tc.kind || string(to) != tc.to || string(data) != tc.data {
			t.Errorf("classify(%s) = %v %s %s, want %v %s %s", tc.line, kind, to, data, tc.kind, tc.to, tc.data)
		}
	}
}

func TestEnv(t *testing.T) {
	got, _ := json.Marshal(Env(5))
	if string(got) != `["GOINIT_IPC_FD=5","NODE_CHANNEL_FD=5","NODE_CHANNEL_SERIALIZATION_MODE=json"]` {
		t.Fatal(string(got))
	}
}

func TestNewLine(t *testing.T) {
	for in, ok := range map[string]bool{`{"a":1}`: true, `"ready"`: true, `{"a":`: false, "{}\n{}": false, ``: false} {
		if _, got := NewLine([]byte(in)); got != ok {
			t.Errorf("NewLine(%q) ok = %v, want %v", in, got, ok)
		}
	}
}
