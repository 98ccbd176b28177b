package health

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxHeadBytes bounds a request head: the request line and every header
// field. Probes and Prometheus send a few hundred bytes.
const maxHeadBytes = 8 << 10

// request is all the endpoints look at: the method and the path, without
// the query (which they ignore).
type request struct {
	method string
	path   string
}

// badRequest is a request answered with an error status without routing
// it: reason is the one-line body.
type badRequest struct {
	status int
	reason string
}

func (e *badRequest) Error() string { return e.reason }

var errHeadTooLarge = errors.New("request head larger than 8 KiB")

// headScanner finds the end of a request head as its bytes arrive, in one
// pass however they are split. It splits lines exactly as parseRequest
// does, so the two agree on where the head ends.
type headScanner struct {
	scanned   int  // bytes looked at so far
	lineStart int  // where the current line begins
	seenLine  bool // a non-empty line (the request line) has been seen
}

// end returns the length of the head in b, b being everything read so far
// (each call a longer prefix of the same bytes), or -1 if it has not ended.
func (h *headScanner) end(b []byte) int {
	for h.scanned < len(b) {
		j := bytes.IndexByte(b[h.scanned:], '\n')
		if j < 0 {
			h.scanned = len(b)
			return -1
		}
		nl := h.scanned + j
		h.scanned = nl + 1
		empty := nl == h.lineStart || (nl == h.lineStart+1 && b[h.lineStart] == '\r')
		h.lineStart = nl + 1
		switch {
		case !empty:
			h.seenLine = true
		case h.seenLine:
			return nl + 1
		}
		// An empty line before the request line is skipped (RFC 9112
		// section 2.2): some clients send a CRLF after a previous body.
	}
	return -1
}

// readHead reads from r into buf until a whole request head has arrived
// and returns it. Reading stops at the head's end, so nothing beyond it is
// consumed from the kernel that was not already in the same segment.
// It returns errHeadTooLarge when buf fills first, or the read error (with
// the bytes read so far, to tell a half-sent request from an idle one).
func readHead(r io.Reader, buf []byte) ([]byte, error) {
	var h headScanner
	n := 0
	for {
		if n == len(buf) {
			return buf[:n], errHeadTooLarge
		}
		m, err := r.Read(buf[n:])
		n += m
		if end := h.end(buf[:n]); end >= 0 {
			return buf[:end], nil
		}
		if err != nil {
			return buf[:n], err
		}
	}
}

// parseRequest reads a request head (the request line, header fields and
// the empty line ending them, as readHead returns it) in the grammar of
// RFC 9112, strictly: whatever a real client would not send is a 400, so
// that no two parsers can read the same bytes differently. The body, if
// any, is never read: every answer closes the connection.
func parseRequest(head []byte) (request, *badRequest) {
	lines := head
	var line []byte
	var err *badRequest
	for {
		if line, lines, err = nextLine(lines); err != nil {
			return request{}, err
		}
		if len(line) > 0 {
			break
		}
	}

	method, rest, ok1 := strings.Cut(string(line), " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return request{}, bad(400, "the request line is not METHOD TARGET HTTP/1.1")
	}
	if !isToken(method) {
		return request{}, bad(400, "the method is not a token")
	}
	minor, verr := parseVersion(version)
	if verr != nil {
		return request{}, verr
	}
	path, terr := parseTarget(target)
	if terr != nil {
		return request{}, terr
	}

	hosts := 0
	for {
		if line, lines, err = nextLine(lines); err != nil {
			return request{}, err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return request{}, bad(400, "obsolete line folding in a header field")
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !isToken(string(name)) {
			return request{}, bad(400, "a header field is not NAME: VALUE")
		}
		if !validValue(value) {
			return request{}, bad(400, fmt.Sprintf("header field %.64s has a control character in its value", name))
		}
		if strings.EqualFold(string(name), "Host") {
			hosts++
		}
	}
	// RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
	if hosts > 1 || (minor >= 1 && hosts == 0) {
		return request{}, bad(400, "an HTTP/1.1 request needs exactly one Host header field")
	}
	return request{method: method, path: path}, nil
}

func bad(status int, reason string) *badRequest {
	return &badRequest{status: status, reason: reason}
}

// nextLine splits off the first line of b, without its LF or CRLF. A CR
// anywhere else is refused: RFC 9112 lets a recipient reject a bare CR,
// and readers that treat it as a line end would see other fields.
func nextLine(b []byte) (line, rest []byte, err *badRequest) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, bad(400, "the request head does not end with an empty line")
	}
	line, rest = b[:i], b[i+1:]
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, bad(400, "a bare CR in the request head")
	}
	return line, rest, nil
}

// parseVersion accepts HTTP/1.x and returns x. Another major version is a
// 505; anything that is not HTTP-version at all is a 400.
func parseVersion(v string) (int, *badRequest) {
	if len(v) != len("HTTP/1.1") || !strings.HasPrefix(v, "HTTP/") || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return 0, bad(400, "the protocol version is not HTTP/1.0 or HTTP/1.1")
	}
	if v[5] != '1' {
		return 0, bad(505, "only HTTP/1.0 and HTTP/1.1 are served")
	}
	return int(v[7] - '0'), nil
}

// parseTarget returns the path of an origin-form ("/readyz?x=1") or
// absolute-form ("http://host:9090/readyz") request target, without its
// query. The path is compared as sent: "/%72eadyz" is not /readyz.
func parseTarget(t string) (string, *badRequest) {
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return "", bad(400, "the request target has a byte that is not visible ASCII")
		}
	}
	for _, scheme := range []string{"http://", "https://"} {
		if len(t) >= len(scheme) && strings.EqualFold(t[:len(scheme)], scheme) {
			authority := t[len(scheme):]
			t = "/"
			if i := strings.IndexAny(authority, "/?"); i >= 0 && authority[i] == '/' {
				t = authority[i:]
			}
			break
		}
	}
	if t == "" || t[0] != '/' {
		// "*" (OPTIONS) and authority-form (CONNECT) name no endpoint.
		return t, nil
	}
	path, _, _ := strings.Cut(t, "?")
	return path, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isToken reports whether s is an RFC 9110 token: a method or field name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validValue reports whether a field value has no control character but
// HTAB (RFC 9110 section 5.5; bytes above 0x7f are allowed obs-text).
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
