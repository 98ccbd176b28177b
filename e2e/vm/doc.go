// Package vm runs goinit's cgroup v2 tests in a virtual machine: the CI
// machines are cgroup v1 hosts, and what goinit does on v2 (move itself into
// a leaf, enable controllers in cgroup.subtree_control, start workers inside
// their cgroups with clone3, read memory.events) only happens on a real v2
// kernel. internal/vmtest boots Debian's kernel in qemu with a cgroup2-only
// hierarchy; one boot runs every scenario of testdata/cgroupv2.sh, each
// reporting a verdict that becomes a subtest.
//
// The package has no code of its own outside its tests. It owns nothing on
// the host beyond what vmtest owns (its cache and its qemu processes) and
// the test binaries it builds into temporary directories.
package vm
