package health_test

import (
	"fmt"

	"github.com/goinit/goinit/health"
)

// A port alone binds loopback; naming a host exposes the endpoints.
func ExampleParseAddr() {
	for _, s := range []string{":9090", "0.0.0.0:9090", "off"} {
		addr, err := health.ParseAddr(s)
		fmt.Printf("%q -> %q %v\n", s, addr, err)
	}
	// Output:
	// ":9090" -> "127.0.0.1:9090" <nil>
	// "0.0.0.0:9090" -> "0.0.0.0:9090" <nil>
	// "off" -> "" <nil>
}
