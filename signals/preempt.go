package signals

import "strings"

// PreemptOffLDFlags are the linker flags of goinit's release build (make
// build, Dockerfile.example, the bench). The first makes asyncpreemptoff=1
// the Go runtime's default GODEBUG, so the runtime never sends SIGURG to
// its own threads and every SIGURG goinit receives is a real one it can
// forward; goinit has no tight loop that needs asynchronous preemption.
// The second tells goinit (its package main's godebugDefault) what the
// runtime was given, because the runtime's own copy is not readable and a
// -trimpath build does not record its -ldflags.
const PreemptOffLDFlags = "-X=runtime.godebugDefault=asyncpreemptoff=1 -X=main.godebugDefault=asyncpreemptoff=1"

// AsyncPreemptOff reports whether a Go runtime built with the default
// GODEBUG settings defaults (a comma-separated list, as given to
// runtime.godebugDefault) and run with the GODEBUG variable godebug leaves
// SIGURG alone. As in the runtime, the last asyncpreemptoff setting wins and
// GODEBUG overrides the built-in default.
func AsyncPreemptOff(defaults, godebug string) bool {
	return lastSetting(godebug, "asyncpreemptoff", lastSetting(defaults, "asyncpreemptoff", false))
}

// lastSetting returns whether the last key=value for key in a GODEBUG-style
// list is "1", or def when key is not set.
func lastSetting(list, key string, def bool) bool {
	for _, kv := range strings.Split(list, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == key {
			def = v == "1"
		}
	}
	return def
}
