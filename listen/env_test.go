package listen

import (
	"os"
	"slices"
	"strconv"
	"testing"
)

func TestEnv(t *testing.T) {
	f := mustOpen(t, "127.0.0.1:0#http", false)
	port := strconv.Itoa(boundPort(t, f))
	http := mustParse(t, "127.0.0.1:0#http")
	admin := mustParse(t, "unix:///run/admin.sock")
	dns := mustParse(t, "udp://:5353")
	other := mustParse(t, "tcp6://[::1]:9090")

	tests := []struct {
		name  string
		addrs []Addr
		files []*os.File
		want  []string
	}{
		{"none", nil, nil, []string{"LISTEN_FDS=0", "LISTEN_FDNAMES="}},
		{"one TCP, port from the socket", []Addr{http}, []*os.File{f},
			[]string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "PORT=" + port}},
		{"one TCP among others", []Addr{admin, http, dns}, []*os.File{nil, f, nil},
			[]string{"LISTEN_FDS=3", "LISTEN_FDNAMES=unix-admin.sock:http:udp-5353", "PORT=" + port}},
		{"no files: port from the address", []Addr{other}, nil,
			[]string{"LISTEN_FDS=1", "LISTEN_FDNAMES=tcp6-9090", "PORT=9090"}},
		{"two TCP: no PORT", []Addr{http, other}, []*os.File{f, nil},
			[]string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:tcp6-9090"}},
		{"no TCP: no PORT", []Addr{admin, dns}, nil,
			[]string{"LISTEN_FDS=2", "LISTEN_FDNAMES=unix-admin.sock:udp-5353"}},
	}
	for _, tt := range tests {
		if got := Env(tt.addrs, tt.files); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Env = %q, want %q", tt.name, got, tt.want)
		}
	}
}
