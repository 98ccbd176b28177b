// Package cgroup gives each goinit worker slot its own cgroup with memory,
// CPU and pids limits, on cgroup v1 and v2, and reads back what the kernel
// charged to it (usage, OOM kills).
//
// # What it owns
//
// The package owns exactly one directory per controller: <own>/<Prefix>,
// where <own> is goinit's own cgroup as read from /proc/self/cgroup and
// /proc/self/mountinfo, and Prefix is Options.Prefix ("goinit" for PID 1,
// "goinit-<pid>" otherwise). Inside it, it creates one child cgroup per
// worker slot, "worker-<id>", all with Options.Limits, and one per named
// slot declared in Options.Named (goinit's agent: "agent"), each with its
// own limits. A slot may also get siblings beside it, "<name>.<n>"
// (Slot.Sibling), with the same limits, for a replacement that runs while
// the slot's old process still does. Close kills every process left in
// those cgroups and removes
// every directory the package created, so the cgroup tree looks as it did
// before Open.
//
// Named slots are declared to Open rather than given limits later, because
// Open is where controllers are checked and enabled: a limit that cannot be
// applied fails Open with an *UnavailableError naming the slot, before any
// process has started, and a Hierarchy whose workers have no limits at all
// still enables the controllers a named slot needs. On v1 a controller that
// only a named slot limits also gets a directory, without a limit, in each
// worker slot.
//
// On cgroup v2 it also owns two pieces of state outside that directory,
// because of the kernel's "no internal processes" rule (a cgroup that hands
// controllers to its children must hold no processes itself): it moves
// goinit's own process into the leaf <own>/<Prefix>/supervisor, and it
// enables the controllers it needs in <own>/cgroup.subtree_control. Close
// undoes both: it disables only the controllers it enabled and moves goinit,
// and any child goinit started outside a slot (which inherited the leaf),
// back to <own>. Only one Hierarchy per process should be open at a time on
// v2, as each moves the whole process.
//
// # What it never touches
//
// It never writes to any other cgroup: not goinit's own limits, not siblings,
// not the systemd (name=systemd) or hybrid cgroup2 hierarchies that the
// v1 library would otherwise create directories in. It never waits for a
// process (the reaper owns every wait4) and never signals a process that is
// not inside one of its slot cgroups.
//
// # Placement
//
// A cgroup only limits what happens after a process is in it, and on cgroup
// v1 memory already charged elsewhere does not move with the process. So the
// caller places each worker before it runs any code of its own:
//
//   - v2: start the worker directly inside the slot with
//     syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}, fd from Slot.FD
//     (clone3 CLONE_INTO_CGROUP, Linux 5.7+).
//   - v1 (and v2 as a fallback): start the worker as a shim that blocks
//     (e.g. reading a pipe) until the parent has called Slot.Add(pid), then
//     execs the real program.
//
// The package uses the cgroupfs drivers of github.com/opencontainers/cgroups
// (fs for v1, fs2 for v2) with absolute paths; it never uses the systemd
// driver.
package cgroup
