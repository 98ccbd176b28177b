package cgroup

import (
	"reflect"
	"strings"
	"testing"
)

// hybridMountinfo is /proc/self/mountinfo of the development machine
// (cgroup v1 with a cgroup2 mount at unified), plus noise.
const hybridMountinfo = `22 1 0:20 / / rw,relatime - overlay overlay rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 master:3 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids,clone_children
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridProcCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/9cde
2:cpuacct:/
1:cpu:/
0::/
`

func TestParseMountinfo(t *testing.T) {
	t.Parallel()
	got, err := parseMountinfo(strings.NewReader(hybridMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := []cgroupMount{
		{Dir: "/sys/fs/cgroup/cpu", Root: "/", Controllers: []string{"cpu"}},
		{Dir: "/sys/fs/cgroup/cpuacct", Root: "/", Controllers: []string{"cpuacct"}},
		{Dir: "/sys/fs/cgroup/memory", Root: "/", Controllers: []string{"memory"}},
		{Dir: "/sys/fs/cgroup/pids", Root: "/", Controllers: []string{"pids"}},
		{Dir: "/sys/fs/cgroup/systemd", Root: "/", Controllers: []string{"name=systemd"}},
		{Dir: "/sys/fs/cgroup/unified", Root: "/", V2: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMountinfo =\n%+v\nwant\n%+v", got, want)
	}

	// Co-mounted controllers, an escaped space, a container-style root,
	// and a later mount over the same point replacing the earlier one.
	got, err = parseMountinfo(strings.NewReader(
		`1 0 0:1 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /mnt/my\040cg rw - cgroup2 none rw
3 0 0:3 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
4 0 0:4 /sub /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
`))
	if err != nil {
		t.Fatal(err)
	}
	want = []cgroupMount{
		{Dir: "/sys/fs/cgroup/cpu,cpuacct", Root: "/docker/abc", Controllers: []string{"cpu", "cpuacct"}},
		{Dir: "/mnt/my cg", Root: "/", V2: true},
		{Dir: "/sys/fs/cgroup", Root: "/sub", V2: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMountinfo =\n%+v\nwant\n%+v", got, want)
	}

	if _, err := parseMountinfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("parseMountinfo accepted a truncated line")
	}
}

func TestParseProcCgroup(t *testing.T) {
	t.Parallel()
	got, err := parseProcCgroup(strings.NewReader(hybridProcCgroup + "5:cpu,cpuacct:/a\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name=systemd": "/", "pids": "/", "memory": "/process_api/9cde",
		"cpuacct": "/a", "cpu": "/a", "": "/",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseProcCgroup = %v, want %v", got, want)
	}
	if _, err := parseProcCgroup(strings.NewReader("garbage\n")); err == nil {
		t.Error("parseProcCgroup accepted garbage")
	}
}

func TestOwnDir(t *testing.T) {
	t.Parallel()
	mounts, err := parseMountinfo(strings.NewReader(hybridMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	self, err := parseProcCgroup(strings.NewReader(hybridProcCgroup))
	if err != nil {
		t.Fatal(err)
	}
	pi := procInfo{mounts: mounts, self: self}
	m, ok := pi.v1Mount("/sys/fs/cgroup", "memory")
	if !ok {
		t.Fatal("no memory mount")
	}
	if got, err := pi.ownDir(m, "memory"); err != nil || got != "/sys/fs/cgroup/memory/process_api/9cde" {
		t.Errorf("ownDir(memory) = %q, %v", got, err)
	}
	if _, ok := pi.v1Mount("/elsewhere", "memory"); ok {
		t.Error("v1Mount found a mount outside the root")
	}
	if _, ok := pi.v2Mount("/sys/fs/cgroup"); ok {
		t.Error("hybrid host taken for cgroup v2")
	}
	if _, ok := pi.v1Mount("/sys/fs/cgroup", "blkio"); ok {
		t.Error("found an unmounted controller")
	}

	// Inside a container without a cgroup namespace the mount shows the
	// container's subtree but /proc/self/cgroup the host path.
	pi = procInfo{
		mounts: []cgroupMount{{Dir: "/sys/fs/cgroup", Root: "/docker/abc", V2: true}},
		self:   map[string]string{"": "/docker/abc/app"},
	}
	if got, err := pi.ownDir(pi.mounts[0], ""); err != nil || got != "/sys/fs/cgroup/app" {
		t.Errorf("ownDir(container) = %q, %v", got, err)
	}
	pi.self[""] = "/docker/other"
	if got, err := pi.ownDir(pi.mounts[0], ""); err == nil {
		t.Errorf("ownDir outside the mount = %q, want error", got)
	}
	// A cgroup outside goinit's cgroup namespace shows as /../..; with
	// the whole hierarchy mounted, cleaning the dots away would name
	// /sys/fs/cgroup/user.slice/x, someone else's cgroup.
	pi = procInfo{
		mounts: []cgroupMount{{Dir: "/sys/fs/cgroup", Root: "/", V2: true}},
		self:   map[string]string{"": "/../../user.slice/x"},
	}
	if got, err := pi.ownDir(pi.mounts[0], ""); err == nil || !strings.Contains(err.Error(), "outside this cgroup namespace") {
		t.Errorf("ownDir outside the namespace = %q, %v; want an error", got, err)
	}
	delete(pi.self, "")
	if _, err := pi.ownDir(pi.mounts[0], ""); err == nil {
		t.Error("ownDir without a 0:: entry succeeded")
	}
}
