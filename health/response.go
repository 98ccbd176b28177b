package health

import (
	"strconv"
	"time"
)

// The statuses the server answers with.
const (
	statusOK                  = 200
	statusBadRequest          = 400
	statusNotFound            = 404
	statusMethodNotAllowed    = 405
	statusRequestTimeout      = 408
	statusHeadTooLarge        = 431
	statusInternalServerError = 500
	statusUnavailable         = 503
	statusVersionNotSupported = 505
)

func statusText(code int) string {
	switch code {
	case statusOK:
		return "OK"
	case statusBadRequest:
		return "Bad Request"
	case statusNotFound:
		return "Not Found"
	case statusMethodNotAllowed:
		return "Method Not Allowed"
	case statusRequestTimeout:
		return "Request Timeout"
	case statusHeadTooLarge:
		return "Request Header Fields Too Large"
	case statusInternalServerError:
		return "Internal Server Error"
	case statusUnavailable:
		return "Service Unavailable"
	case statusVersionNotSupported:
		return "HTTP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}

const textType = "text/plain; charset=utf-8"

// dateFormat is the IMF-fixdate of RFC 9110 section 5.6.7, always in GMT.
const dateFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// response is a whole answer; the body is written in full, with its
// length, so a client never has to read to the end of the connection.
type response struct {
	status      int
	contentType string
	body        []byte
}

// textResponse is a one-line plain text answer, for curl and the
// kubelet's event log.
func textResponse(status int, msg string) response {
	return response{status: status, contentType: textType, body: []byte(msg + "\n")}
}

// appendResponse appends r in HTTP/1.1 to dst. Every answer closes the
// connection: probes and scrapes open one per request anyway, and it
// spares the server idle connections and request pipelining. A HEAD
// answer (withBody false) has the GET answer's headers, Content-Length
// included, and no body.
func appendResponse(dst []byte, r response, withBody bool, now time.Time) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(r.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(r.status)...)
	dst = append(dst, "\r\nDate: "...)
	dst = now.UTC().AppendFormat(dst, dateFormat)
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, r.contentType...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(r.body)), 10)
	// A probe's answer is true only now; no cache may keep it.
	dst = append(dst, "\r\nCache-Control: no-store\r\n"...)
	if r.status == statusMethodNotAllowed {
		dst = append(dst, "Allow: GET, HEAD\r\n"...)
	}
	dst = append(dst, "Connection: close\r\n\r\n"...)
	if withBody {
		dst = append(dst, r.body...)
	}
	return dst
}
