package listen

import (
	"net"
	"os"
	"strconv"
	"strings"
)

// The socket-activation protocol: variable names and the first descriptor.
const (
	// FirstFD is the descriptor of the first passed socket
	// (SD_LISTEN_FDS_START); the i-th socket is FirstFD+i.
	FirstFD = 3
	// EnvFDs holds the number of passed sockets.
	EnvFDs = "LISTEN_FDS"
	// EnvFDNames holds the sockets' names, joined by ':'.
	EnvFDNames = "LISTEN_FDNAMES"
	// EnvPID holds the pid of the process the sockets are meant for.
	EnvPID = "LISTEN_PID"
	// EnvPort holds the port when exactly one TCP socket is passed, for
	// programs that only know "listen on $PORT".
	EnvPort = "PORT"
)

// Env returns the socket-activation variables for a child that receives one
// socket per addrs entry, the i-th as descriptor [FirstFD]+i:
//
//	LISTEN_FDS=<len(addrs)>
//	LISTEN_FDNAMES=<addrs[0].Name>:<addrs[1].Name>:...
//	PORT=<port>                 only when exactly one of addrs is TCP
//
// files[i] is the socket opened for addrs[i]; it is read only to learn the
// port the kernel chose for a ":0" address, and may be nil (then the port in
// addrs is used). LISTEN_PID is not included: it must be the child's own pid,
// known only after fork.
func Env(addrs []Addr, files []*os.File) []string {
	names := make([]string, len(addrs))
	tcp := -1
	for i, a := range addrs {
		names[i] = a.Name
		if isTCP(a.Network) {
			if tcp == -1 {
				tcp = i
			} else {
				tcp = -2 // more than one: PORT would be ambiguous
			}
		}
	}
	env := []string{
		EnvFDs + "=" + strconv.Itoa(len(addrs)),
		EnvFDNames + "=" + strings.Join(names, ":"),
	}
	if tcp >= 0 {
		port := addrs[tcp].port()
		if tcp < len(files) && files[tcp] != nil {
			if ba, err := BoundAddr(files[tcp]); err == nil {
				if ta, ok := ba.(*net.TCPAddr); ok {
					port = ta.Port
				}
			}
		}
		env = append(env, EnvPort+"="+strconv.Itoa(port))
	}
	return env
}
