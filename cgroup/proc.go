package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cgroupMount is one cgroup filesystem mount from /proc/self/mountinfo.
type cgroupMount struct {
	// Dir is the mount point, e.g. /sys/fs/cgroup/memory.
	Dir string
	// Root is the cgroup the mount shows at Dir, e.g. "/" or, inside a
	// container without a cgroup namespace, the container's cgroup.
	Root string
	// V2 is true for cgroup2 mounts.
	V2 bool
	// Controllers are the v1 controllers of the mount ("memory", "cpu",
	// "cpuacct", "name=systemd"); empty for v2.
	Controllers []string
}

// parseMountinfo returns the cgroup and cgroup2 mounts listed in r, in the
// format of /proc/self/mountinfo (proc(5)). When a mount point appears
// twice, the later (upper) mount wins.
func parseMountinfo(r io.Reader) ([]cgroupMount, error) {
	var mounts []cgroupMount
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		// 35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:1 - cgroup cgroup rw,memory
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+4 {
			return nil, fmt.Errorf("parse mountinfo line %q: too few fields", s.Text())
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		m := cgroupMount{
			Root: unescapeMountinfo(fields[3]),
			Dir:  unescapeMountinfo(fields[4]),
			V2:   fstype == "cgroup2",
		}
		if !m.V2 {
			for _, opt := range strings.Split(fields[sep+3], ",") {
				switch opt {
				case "rw", "ro", "clone_children", "noprefix", "xattr", "cpuset_v2_mode", "favordynmods":
				default:
					if !strings.HasPrefix(opt, "release_agent=") {
						m.Controllers = append(m.Controllers, opt)
					}
				}
			}
		}
		mounts = slices.DeleteFunc(mounts, func(o cgroupMount) bool { return o.Dir == m.Dir })
		mounts = append(mounts, m)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space) the kernel
// uses for paths in mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup parses /proc/<pid>/cgroup (cgroups(7)) into a map from
// controller to cgroup path. The v2 entry "0::/path" has key "".
func parseProcCgroup(r io.Reader) (map[string]string, error) {
	out := make(map[string]string)
	s := bufio.NewScanner(r)
	for s.Scan() {
		// 4:memory:/process_api/x  or  0::/user.slice
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("parse /proc/self/cgroup line %q: want hierarchy-ID:controllers:path", s.Text())
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	return out, nil
}

// procInfo is what the package reads about its own process: the cgroup
// mounts and its cgroup in each hierarchy.
type procInfo struct {
	mounts []cgroupMount
	self   map[string]string
}

// readProcInfo reads /proc/self/mountinfo and /proc/self/cgroup.
func readProcInfo() (procInfo, error) {
	var pi procInfo
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return pi, fmt.Errorf("find cgroup mounts: %w", err)
	}
	defer f.Close()
	if pi.mounts, err = parseMountinfo(f); err != nil {
		return pi, err
	}
	g, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return pi, fmt.Errorf("find own cgroup: %w", err)
	}
	defer g.Close()
	if pi.self, err = parseProcCgroup(g); err != nil {
		return pi, err
	}
	return pi, nil
}

// v1Mount returns the v1 mount of controller, or false. Only mounts at or
// below root are considered, so a second copy mounted elsewhere is ignored.
func (pi procInfo) v1Mount(root, controller string) (cgroupMount, bool) {
	for _, m := range pi.mounts {
		if !m.V2 && under(m.Dir, root) && slices.Contains(m.Controllers, controller) {
			return m, true
		}
	}
	return cgroupMount{}, false
}

// v2Mount returns the cgroup2 mount at exactly root, or false.
func (pi procInfo) v2Mount(root string) (cgroupMount, bool) {
	for _, m := range pi.mounts {
		if m.V2 && m.Dir == root {
			return m, true
		}
	}
	return cgroupMount{}, false
}

// ownDir returns the directory of our own cgroup in mount m, whose
// hierarchy /proc/self/cgroup lists under key ("" for v2).
func (pi procInfo) ownDir(m cgroupMount, key string) (string, error) {
	p, ok := pi.self[key]
	if !ok {
		if key == "" {
			return "", fmt.Errorf("/proc/self/cgroup has no cgroup v2 (0::) entry")
		}
		return "", fmt.Errorf("/proc/self/cgroup has no entry for the %s controller", key)
	}
	// A cgroup outside our cgroup namespace shows as /../..; filepath.Rel
	// would clean the dots away and name some other cgroup.
	if p == "/.." || strings.HasPrefix(p, "/../") {
		return "", fmt.Errorf("own cgroup %s is outside this cgroup namespace", p)
	}
	// Without a cgroup namespace, a container sees the host's path in
	// /proc/self/cgroup but only its own subtree mounted: strip the mount
	// root (mountinfo field 4) from the path.
	rel, err := filepath.Rel(m.Root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("own cgroup %s is outside the cgroup mount %s (which shows %s)", p, m.Dir, m.Root)
	}
	return filepath.Join(m.Dir, rel), nil
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}
