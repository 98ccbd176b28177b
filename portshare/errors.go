package portshare

import (
	"errors"
	"fmt"
)

// ErrUnavailable is wrapped by every error that means seccomp user
// notification cannot be used here: an old kernel, a seccomp profile that
// forbids seccomp(2) or prctl(2), an unsupported architecture. goinit
// fails an explicit --share-ports list on it (exit 2) and lets workers
// bind unshared with --share-ports=auto.
var ErrUnavailable = errors.New("seccomp user notification is unavailable")

// Fix is the advice to print with an [ErrUnavailable]: the way to share a
// port that needs no interception.
const Fix = "use --listen=ADDR and a server that accepts LISTEN_FDS (socket activation), or --share-ports=off"

// PolicyError is a --share-ports value that cannot be parsed.
type PolicyError struct {
	Value  string // the whole value given
	Reason string // what is wrong, naming the bad part
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("invalid --share-ports value %q: %s (want auto, off, or a list of TCP ports such as 3000,tcp:8443)", e.Value, e.Reason)
}
