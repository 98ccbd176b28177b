package cgroup

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTree writes files (path relative to root -> content) under a new
// temporary directory and returns it.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestAvailableCPUsPure(t *testing.T) {
	t.Parallel()
	type tc struct {
		name     string
		v1       bool
		mntRoot  string // cgroup shown at the mount point; default "/"
		self     string // own cgroup path from /proc/self/cgroup
		files    map[string]string
		affinity int
		online   int
		want     int
		wantHow  string
	}
	cases := []tc{
		{
			name: "v2 no quota", self: "/a/b",
			files:    map[string]string{"a/cpu.max": "max 100000", "a/b/cpu.max": "max 100000"},
			affinity: 4, online: 4, want: 4,
			wantHow: "no cgroup cpu quota; affinity 4 CPUs; 4 online",
		},
		{
			name: "v2 quota 1.5 rounds up", self: "/a",
			files:    map[string]string{"a/cpu.max": "150000 100000"},
			affinity: 8, online: 8, want: 2,
			wantHow: "cgroup cpu quota 150000/100000 = 1.5 -> 2 (",
		},
		{
			name: "v2 ancestor quota smaller wins", self: "/a/b/c",
			files: map[string]string{
				"a/cpu.max":     "300000 100000",
				"a/b/cpu.max":   "50000 100000",
				"a/b/c/cpu.max": "150000 100000",
			},
			affinity: 8, online: 8, want: 1,
			wantHow: "cgroup cpu quota 50000/100000 = 0.5 -> 1 (",
		},
		{
			name: "v2 other period", self: "/a",
			files:    map[string]string{"a/cpu.max": "500000 200000"},
			affinity: 8, online: 8, want: 3,
		},
		{
			name: "v2 root has no cpu.max", self: "/",
			affinity: 2, online: 2, want: 2,
		},
		{
			name: "cpuset of one CPU", self: "/a",
			files:    map[string]string{"a/cpu.max": "400000 100000"},
			affinity: 1, online: 8, want: 1,
			wantHow: "affinity 1 CPUs; 8 online",
		},
		{
			name: "online fewer than quota", self: "/a",
			files:    map[string]string{"a/cpu.max": "400000 100000"},
			affinity: 0, online: 2, want: 2,
		},
		{
			name: "v1 quota -1 is no limit", v1: true, self: "/a",
			files: map[string]string{
				"a/cpu.cfs_quota_us": "-1", "a/cpu.cfs_period_us": "100000",
				"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
			},
			affinity: 2, online: 2, want: 2,
			wantHow: "no cgroup cpu quota",
		},
		{
			name: "v1 quota 2.5", v1: true, self: "/a/b",
			files: map[string]string{
				"a/b/cpu.cfs_quota_us": "250000", "a/b/cpu.cfs_period_us": "100000",
			},
			affinity: 16, online: 16, want: 3,
		},
		{
			name: "v1 ancestor quota wins", v1: true, self: "/a/b",
			files: map[string]string{
				"a/cpu.cfs_quota_us": "100000", "a/cpu.cfs_period_us": "100000",
				"a/b/cpu.cfs_quota_us": "-1", "a/b/cpu.cfs_period_us": "100000",
			},
			affinity: 16, online: 16, want: 1,
		},
		{
			// A container sees only its own subtree: the walk stops at
			// the mount root instead of reading the host's parents.
			name: "container mount root", self: "/docker/abc/app", mntRoot: "/docker/abc",
			files: map[string]string{
				"app/cpu.max": "200000 100000",
				"cpu.max":     "max 100000",
			},
			affinity: 8, online: 8, want: 2,
		},
		{
			name: "tiny quota still one", self: "/a",
			files:    map[string]string{"a/cpu.max": "1000 100000"},
			affinity: 4, online: 4, want: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := fakeTree(t, c.files)
			mnt := cgroupMount{Dir: dir, Root: "/", V2: !c.v1}
			if c.mntRoot != "" {
				mnt.Root = c.mntRoot
			}
			key := ""
			if c.v1 {
				mnt.Controllers = []string{"cpu", "cpuacct"}
				key = "cpu"
			}
			pi := procInfo{mounts: []cgroupMount{mnt}, self: map[string]string{key: c.self}}
			got, err := availableCPUs(pi, c.affinity, c.online)
			if err != nil {
				t.Fatal(err)
			}
			if got.N != c.want || !strings.Contains(got.How, c.wantHow) {
				t.Errorf("availableCPUs = %+v, want N=%d, How containing %q", got, c.want, c.wantHow)
			}
		})
	}

	t.Run("no cgroupfs", func(t *testing.T) {
		t.Parallel()
		got, err := availableCPUs(procInfo{}, 3, 4)
		if err != nil || got.N != 3 {
			t.Errorf("availableCPUs = %+v, %v; want 3", got, err)
		}
	})
	t.Run("garbage cpu.max", func(t *testing.T) {
		t.Parallel()
		dir := fakeTree(t, map[string]string{"a/cpu.max": "lots"})
		pi := procInfo{mounts: []cgroupMount{{Dir: dir, Root: "/", V2: true}}, self: map[string]string{"": "/a"}}
		if got, err := availableCPUs(pi, 2, 2); err == nil {
			t.Errorf("availableCPUs = %+v, want parse error", got)
		}
	})
}

func TestParseCPUList(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"0": 1, "0-1": 2, "0-3,5,7-8": 7, "": 0} {
		if got, err := parseCPUList(in); err != nil || got != want {
			t.Errorf("parseCPUList(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"a", "3-1", "0-x"} {
		if _, err := parseCPUList(in); err == nil {
			t.Errorf("parseCPUList(%q) succeeded", in)
		}
	}
}

// TestAvailableCPUsReal runs AvailableCPUs in a helper process placed in a
// real cgroup with a quota of exactly one CPU.
func TestAvailableCPUsReal(t *testing.T) {
	requireCgroups(t)
	parallelOnV1(t)
	h := openTest(t, Limits{CPU: 1})
	s, err := h.Slot(0)
	if err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, s, "cpus")
	if st := p.wait(t); !st.Success() {
		t.Fatalf("helper: %v\n%s", st, p.output())
	}
	var got CPUCount
	if err := json.Unmarshal(p.stdout.Bytes(), &got); err != nil {
		t.Fatalf("helper output %q: %v", p.output(), err)
	}
	if got.N != 1 || !strings.Contains(got.How, "cgroup cpu quota 100000/100000 = 1 -> 1") {
		t.Errorf("AvailableCPUs in a 1-CPU cgroup = %+v, want N=1 from the quota", got)
	}
	t.Logf("AvailableCPUs in slot: %+v", got)

	// And outside the slot, here and now, it must at least work.
	here, err := AvailableCPUs()
	if err != nil || here.N < 1 {
		t.Errorf("AvailableCPUs() = %+v, %v", here, err)
	}
}
