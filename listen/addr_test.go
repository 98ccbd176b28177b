package listen

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in   string
		want Addr
	}{
		{"8080", Addr{"tcp", ":8080", "tcp-8080"}},
		{":8080", Addr{"tcp", ":8080", "tcp-8080"}},
		{":0", Addr{"tcp", ":0", "tcp-0"}},
		{"127.0.0.1:8080", Addr{"tcp", "127.0.0.1:8080", "tcp-8080"}},
		{"localhost:80", Addr{"tcp", "localhost:80", "tcp-80"}},
		{"tcp://0.0.0.0:8080", Addr{"tcp", "0.0.0.0:8080", "tcp-8080"}},
		{"TCP://:8080", Addr{"tcp", ":8080", "tcp-8080"}},
		{"tcp://8080", Addr{"tcp", ":8080", "tcp-8080"}},
		{"tcp4://127.0.0.1:0", Addr{"tcp4", "127.0.0.1:0", "tcp4-0"}},
		{"tcp4://[::ffff:127.0.0.1]:80", Addr{"tcp4", "[::ffff:127.0.0.1]:80", "tcp4-80"}},
		{"tcp6://[::]:8080", Addr{"tcp6", "[::]:8080", "tcp6-8080"}},
		{"tcp://[::1]:08080", Addr{"tcp", "[::1]:8080", "tcp-8080"}},
		{"tcp6://[fe80::1%lo]:80", Addr{"tcp6", "[fe80::1%lo]:80", "tcp6-80"}},
		{"udp://:5353", Addr{"udp", ":5353", "udp-5353"}},
		{"udp4://127.0.0.1:53", Addr{"udp4", "127.0.0.1:53", "udp4-53"}},
		{"udp6://[::1]:53", Addr{"udp6", "[::1]:53", "udp6-53"}},
		{"unix:///run/app.sock", Addr{"unix", "/run/app.sock", "unix-app.sock"}},
		{"unix://run/app.sock", Addr{"unix", "run/app.sock", "unix-app.sock"}},
		{"unix:///run/my app:1.sock", Addr{"unix", "/run/my app:1.sock", "unix-my_app_1.sock"}},
		{"unix://@goinit", Addr{"unix", "@goinit", "unix-goinit"}},
		{"tcp://:8080#http", Addr{"tcp", ":8080", "http"}},
		{"127.0.0.1:9090#metrics", Addr{"tcp", "127.0.0.1:9090", "metrics"}},
		{"unix:///run/a.sock#admin_v1.2-x", Addr{"unix", "/run/a.sock", "admin_v1.2-x"}},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.in)
		if err != nil {
			t.Errorf("ParseAddr(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseAddr(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		// String is the canonical form and parses back to the same Addr.
		again, err := ParseAddr(got.String())
		if err != nil || again != got {
			t.Errorf("ParseAddr(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
		}
	}
}

func TestParseAddrString(t *testing.T) {
	for in, want := range map[string]string{
		"8080":                 "tcp://:8080",
		"tcp://:8080#http":     "tcp://:8080#http",
		"tcp://:8080#tcp-8080": "tcp://:8080",
		"unix:///run/app.sock": "unix:///run/app.sock",
		"udp6://[::1]:53":      "udp6://[::1]:53",
	} {
		a, err := ParseAddr(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.String(); got != want {
			t.Errorf("ParseAddr(%q).String() = %q, want %q", in, got, want)
		}
	}
}

func TestParseAddrErrors(t *testing.T) {
	tests := []struct{ in, reason string }{
		{"", "empty address; use tcp://"},
		{"   ", "empty address"},
		{"#http", "empty address"},
		{"ftp://x", `unsupported scheme "ftp"; use tcp://, tcp4://, tcp6://, udp://, udp4://, udp6:// or unix:// (or host:port, or a bare port)`},
		{"http://:80", `unsupported scheme "http"`},
		{"tcp://", "nothing after tcp://"},
		{"unix://", "nothing after unix://"},
		{"127.0.0.1", "missing port"},
		{"localhost", "missing port"},
		{"tcp://example.com", "missing port"},
		{"tcp://:", "missing port after ':'"},
		{"127.0.0.1:", "missing port after ':'"},
		{":65536", "port 65536 out of range 0-65535"},
		{"99999", "port 99999 out of range"},
		{":99999999999999999999", "out of range"},
		{":-1", `port "-1" is not a number`},
		{":http", `port "http" is not a number`},
		{":80 ", `port "80 " is not a number`},
		{"::1:8080", "IPv6 addresses need brackets"},
		{"tcp6://::", "IPv6 addresses need brackets"},
		{"[::1:8080", "missing ']'"},
		{"tcp://[::1]", "missing port; write [host]:port"},
		{"[::1]8080", "expected ':' and a port after ']'"},
		{"[::1]:", "missing port after ':'"},
		{"a]:80", "neither an IP address nor a host name"},
		{"[127.0.0.1]:80", `"127.0.0.1" is not an IPv6 address`},
		{"[nonsense]:80", "is not an IPv6 address"},
		{"tcp4://[::1]:80", "tcp4 needs an IPv4 address, not ::1"},
		{"udp6://127.0.0.1:53", "udp6 needs an IPv6 address, not 127.0.0.1"},
		{"tcp://a b:80", "neither an IP address nor a host name"},
		{"/run/app.sock", "for a Unix socket write unix:///run/app.sock"},
		{"run/app.sock", "for a Unix socket write unix://run/app.sock"},
		{"unix://@", "missing socket path"},
		{"unix:///" + strings.Repeat("x", 107), "socket path is 108 bytes; the kernel allows at most 107"},
		{":8080#", "empty name after '#'"},
		{":8080#a:b", `name "a:b" may only contain A-Z a-z 0-9 . _ -`},
		{":8080#a#b", `name "a#b" may only contain`},
		{":8080#" + strings.Repeat("n", 256), "name longer than 255 characters"},
	}
	for _, tt := range tests {
		a, err := ParseAddr(tt.in)
		if err == nil {
			t.Errorf("ParseAddr(%q) = %+v, want error containing %q", tt.in, a, tt.reason)
			continue
		}
		var ae *AddrError
		if !errors.As(err, &ae) || ae.Input != tt.in {
			t.Errorf("ParseAddr(%q) error %#v is not an *AddrError for the input", tt.in, err)
		}
		msg := err.Error()
		prefix := `invalid --listen "` + strings.ReplaceAll(tt.in, `"`, `\"`) + `": `
		if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.reason) {
			t.Errorf("ParseAddr(%q) error = %q, want %q...%q", tt.in, msg, prefix, tt.reason)
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("ParseAddr(%q) error has several lines: %q", tt.in, msg)
		}
	}
}

// FuzzParseAddr checks that any accepted value is canonical: its String form
// parses back to the same Addr, and its name is a valid LISTEN_FDNAMES entry.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"8080", ":0", "[::1]:53", "tcp6://[fe80::1%lo]:80#x", "unix://@a", "udp://h:1", "a]:80", "[::1]8080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid --listen ") {
				t.Fatalf("ParseAddr(%q) error %q", s, err)
			}
			return
		}
		if reason := checkName(a.Name); reason != "" {
			t.Fatalf("ParseAddr(%q).Name = %q: %s", s, a.Name, reason)
		}
		again, err := ParseAddr(a.String())
		if err != nil || again != a {
			t.Fatalf("ParseAddr(%q) = %+v; its String %q parses to %+v, %v", s, a, a.String(), again, err)
		}
	})
}
