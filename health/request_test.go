package health

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		head         string
		method, path string
		status       int // 0: parsed
	}{
		{head: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", method: "GET", path: "/healthz"},
		{head: "HEAD /metrics HTTP/1.0\r\n\r\n", method: "HEAD", path: "/metrics"},
		{head: "GET /readyz?verbose=1&x HTTP/1.1\r\nHost: x\r\n\r\n", method: "GET", path: "/readyz"},
		{head: "GET http://10.0.0.1:9090/metrics?a=b HTTP/1.1\r\nHost: 10.0.0.1:9090\r\n\r\n", method: "GET", path: "/metrics"},
		{head: "GET HTTPS://h?q HTTP/1.1\r\nHost: h\r\n\r\n", method: "GET", path: "/"},
		{head: "GET /healthz HTTP/1.1\nHost: x\n\n", method: "GET", path: "/healthz"},
		{head: "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n", method: "GET", path: "/healthz"},
		{head: "GET /healthz HTTP/1.1\r\nhost:x\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\t!\r\n\r\n", method: "GET", path: "/healthz"},
		{head: "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", method: "POST", path: "/readyz"},
		{head: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", method: "OPTIONS", path: "*"},
		{head: "GET /healthz HTTP/1.9\r\nHost: x\r\n\r\n", method: "GET", path: "/healthz"},

		{head: "GET /healthz HTTP/1.1\r\n\r\n", status: 400},                       // no Host
		{head: "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400}, // two
		{head: "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", status: 505},
		{head: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 505},
		{head: "GET /healthz HTTP/1.1 \r\nHost: x\r\n\r\n", status: 400},
		{head: "GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{head: "GET /healthz\r\n\r\n", status: 400}, // HTTP/0.9
		{head: "GET /healthz http/1.1\r\nHost: x\r\n\r\n", status: 400},
		{head: "G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{head: "GET /health\x7fz HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{head: "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nno colon\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nHost: x\rX-Smuggled: y\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nHost: x\x00\r\n\r\n", status: 400},
		{head: "GET /healthz HTTP/1.1\r\nHost: x\r\n", status: 400}, // no end
		{head: "", status: 400},
	} {
		req, bad := parseRequest([]byte(tc.head))
		switch {
		case tc.status == 0 && bad != nil:
			t.Errorf("parseRequest(%q): %d %s, want %s %s", tc.head, bad.status, bad.reason, tc.method, tc.path)
		case tc.status == 0 && (req.method != tc.method || req.path != tc.path):
			t.Errorf("parseRequest(%q) = %+v, want %s %s", tc.head, req, tc.method, tc.path)
		case tc.status != 0 && bad == nil:
			t.Errorf("parseRequest(%q) = %+v, want %d", tc.head, req, tc.status)
		case tc.status != 0 && bad.status != tc.status:
			t.Errorf("parseRequest(%q): %d %s, want %d", tc.head, bad.status, bad.reason, tc.status)
		case bad != nil && (bad.reason == "" || strings.ContainsAny(bad.reason, "\r\n")):
			t.Errorf("parseRequest(%q): reason %q is not one line", tc.head, bad.reason)
		}
	}
}

// TestReadHead: the head ends at its empty line however the bytes arrive,
// bytes after it are not part of it, and 8 KiB without an end is refused.
func TestReadHead(t *testing.T) {
	const head = "\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, r := range []io.Reader{
		strings.NewReader(head + "body"),
		iotest.OneByteReader(strings.NewReader(head + "body")),
		iotest.DataErrReader(strings.NewReader(head)),
	} {
		got, err := readHead(r, make([]byte, maxHeadBytes))
		if err != nil || string(got) != head {
			t.Errorf("readHead = %q, %v; want %q", got, err, head)
		}
	}
	big := "GET /healthz HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n"
	if _, err := readHead(strings.NewReader(big), make([]byte, maxHeadBytes)); !errors.Is(err, errHeadTooLarge) {
		t.Errorf("readHead(%d bytes) = %v, want errHeadTooLarge", len(big), err)
	}
	if got, err := readHead(strings.NewReader("GET /"), make([]byte, maxHeadBytes)); err != io.EOF || string(got) != "GET /" {
		t.Errorf("readHead(half a request) = %q, %v; want the half and EOF", got, err)
	}
}

// FuzzParseRequest: whatever arrives, in whatever pieces, the server
// neither panics nor writes anything but one well-formed HTTP/1.1 answer
// whose Content-Length is its body's length. `go test` runs the seeds;
// `go test -fuzz=FuzzParseRequest ./health/` searches further.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /metrics HTTP/1.0\r\n\r\n",
		"GET /readyz?x=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
		"GET http://h:1/metrics HTTP/1.1\r\nHost: h\r\n\r\n",
		"\n\nPOST /readyz HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
		"GET /healthz HTTP/1.1\r\n folded\r\n\r\n",
		"\x00\xff\r\n\r\n",
		"GET / HTTP/1.1\r\n",
	} {
		f.Add([]byte(seed), uint8(3))
	}
	var pub state.Publisher
	pub.Publish(statetest.Sample(time.Now()))
	s := New(Options{Snapshot: pub.Load, Queues: func() (map[uint64]uint64, error) { return nil, nil }})
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		whole, wholeErr := readHead(bytes.NewReader(data), make([]byte, maxHeadBytes))
		pieces, piecesErr := readHead(&chunkReader{data: data, n: int(chunk%16) + 1}, make([]byte, maxHeadBytes))
		if !bytes.Equal(whole, pieces) || (wholeErr == nil) != (piecesErr == nil) {
			t.Fatalf("read whole: %q, %v; in pieces of %d: %q, %v", whole, wholeErr, chunk%16+1, pieces, piecesErr)
		}
		if wholeErr != nil {
			return
		}
		req, bad := parseRequest(whole)
		var resp response
		if bad != nil {
			if bad.status != 400 && bad.status != 505 {
				t.Fatalf("status %d for a bad head", bad.status)
			}
			resp = textResponse(bad.status, "bad request: "+bad.reason)
		} else {
			if !isToken(req.method) {
				t.Fatalf("method %q is not a token", req.method)
			}
			resp = s.route(req)
		}
		withBody := bad != nil || req.method != "HEAD"
		out := appendResponse(nil, resp, withBody, time.Now())
		method := "GET"
		if !withBody {
			method = "HEAD"
		}
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer to %q is not HTTP: %v\n%s", data, err, out)
		}
		body, err := io.ReadAll(hr.Body)
		if err != nil || (withBody && len(body) != len(resp.body)) || (!withBody && len(body) != 0) {
			t.Fatalf("answer body %d bytes, %v; Content-Length %d", len(body), err, len(resp.body))
		}
		if hr.Header.Get("Content-Length") != strconv.Itoa(len(resp.body)) || !hr.Close {
			t.Fatalf("answer headers %v", hr.Header)
		}
	})
}

// chunkReader returns at most n bytes a read, like a client's segments.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	m := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[m:]
	return m, nil
}
