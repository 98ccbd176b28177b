// Package runc runs goinit end to end as PID 1 of a real OCI container
// started by runc, the runtime underneath Docker, containerd and Kubernetes.
//
// A test describes one container with Options and calls Start. Start writes
// an OCI bundle into t.TempDir: a rootfs made of the host's static busybox
// with a symlink for every applet in /bin, the freshly built goinit at
// /goinit when asked, and the test's own files; and a config.json close to
// what Docker would generate (new pid, mount, ipc, uts and network
// namespaces, Docker's default capabilities, a read-only rootfs, a tmpfs at
// /tmp, and a host directory bind-mounted read-write at /e2e). It then runs
// `runc run` in the foreground with pipes for stdio and no terminal, so the
// exit status of runc is the exit status of the container's PID 1, and the
// container's stdout and stderr are captured for the test to wait on.
//
// Every container has its own runc state directory and its own cgroup
// (/goinit-e2e-<id> in every hierarchy), and t.Cleanup always kills and
// deletes it, so a failing test leaves no container, process or cgroup
// behind. The package never touches anything else on the host: no images, no
// daemons, no network traffic.
//
// The host needs root, runc on PATH and a static /bin/busybox (Debian's
// runc and busybox-static packages). Require skips a test when one is
// missing, or fails it when the environment variable CI is "true".
package runc

import (
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/goinit/goinit/internal/testbin"
)

// BusyboxPath is the host's static busybox, installed by Debian's
// busybox-static package. It is copied into every rootfs as /bin/busybox.
const BusyboxPath = "/bin/busybox"

// GoinitPath is where Options.Goinit puts the goinit binary in the rootfs.
const GoinitPath = "/goinit"

// BinaryEnv names an environment variable that, when set, points at a
// prebuilt static goinit binary to test instead of building this tree, for
// example a release artefact.
const BinaryEnv = "E2E_GOINIT_BINARY"

// SharedPath is where the container sees Container.Shared, a host directory
// that both sides can read and write (marker files, reports).
const SharedPath = "/e2e"

// DefaultPath is the PATH every container process starts with.
const DefaultPath = "PATH=/bin:/sbin:/usr/bin:/usr/sbin"

// CgroupMount says how /sys/fs/cgroup appears inside the container.
type CgroupMount int

const (
	// CgroupReadOnly mounts the container's own cgroups read-only, as
	// Docker does by default. It is the zero value.
	CgroupReadOnly CgroupMount = iota
	// CgroupReadWrite mounts them read-write, so the container can create
	// child cgroups below its own and set their limits.
	CgroupReadWrite
	// CgroupNone leaves /sys/fs/cgroup unmounted.
	CgroupNone
)

// File is one file placed in the rootfs before the container starts.
type File struct {
	// Content is the file's content, used when HostPath is empty.
	Content []byte
	// HostPath, when set, is a host file copied in instead of Content.
	HostPath string
	// Mode is the file's permission bits. Zero means 0o755, so scripts
	// and binaries are executable unless a test asks otherwise.
	Mode os.FileMode
}

// Options describes one container. The zero value runs nothing: Args is
// required.
type Options struct {
	// Args is the argv of the container's PID 1, for example
	// {GoinitPath, "--", "sh", "-c", "exit 3"}. Required.
	Args []string
	// Env is added to the process environment after DefaultPath.
	Env []string
	// Goinit copies the goinit binary to GoinitPath in the rootfs: the
	// one built from this tree by testbin.Goinit, or the static binary
	// named by the environment variable BinaryEnv when it is set.
	Goinit bool
	// Files maps absolute paths inside the container to files to create
	// there. Parent directories are created as needed.
	Files map[string]File
	// WritableRootfs makes the rootfs read-write. By default it is
	// read-only, which also checks that goinit writes nothing at start.
	WritableRootfs bool
	// MemoryLimit, when positive, is linux.resources.memory.limit in
	// bytes: the memory limit of the container's cgroup.
	MemoryLimit int64
	// PidsLimit, when positive, is linux.resources.pids.limit.
	PidsLimit int64
	// Cgroup says how /sys/fs/cgroup is mounted; default read-only.
	Cgroup CgroupMount
	// CgroupNS gives the container its own cgroup namespace, so its
	// cgroup is the root of what it sees in /proc/self/cgroup.
	CgroupNS bool
	// EditSpec, when set, is called with the generated config.json as a
	// generic JSON object just before it is written, for any setting the
	// fields above do not cover.
	EditSpec func(spec map[string]any)
}

// Require skips the test unless this host can run containers: root, runc on
// PATH and a static busybox at BusyboxPath. When the environment variable
// CI is "true" it fails the test instead, so CI never passes by skipping.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (runc needs it to create namespaces and cgroups)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc on PATH (apt-get install runc)")
	}
	if err := checkStatic(BusyboxPath); err != nil {
		missing = append(missing, fmt.Sprintf("a static %s (apt-get install busybox-static): %v", BusyboxPath, err))
	}
	if len(missing) == 0 {
		return
	}
	msg := "runc end-to-end tests need " + strings.Join(missing, ", and ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// checkStatic reports an error unless the ELF file at p exists and has no
// program interpreter, that is, it runs without the host's shared libraries.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("it is dynamically linked")
		}
	}
	return nil
}

var (
	appletsOnce sync.Once
	applets     []string
	appletsErr  error
)

// busyboxApplets returns the names of the applets the host busybox offers.
func busyboxApplets() ([]string, error) {
	appletsOnce.Do(func() {
		out, err := exec.Command(BusyboxPath, "--list").Output()
		if err != nil {
			appletsErr = fmt.Errorf("%s --list: %w", BusyboxPath, err)
			return
		}
		applets = strings.Fields(string(out))
	})
	return applets, appletsErr
}

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// newID returns a container ID made from the test's name plus a random
// suffix. runc state directories are per test, but cgroup paths are global
// to the host, so IDs must not collide across concurrent test processes.
func newID(t testing.TB) string {
	name := idUnsafe.ReplaceAllString(t.Name(), "-")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random container id: %v", err)
	}
	return strings.Trim(name, "-.") + "-" + hex.EncodeToString(b[:])
}

// writeBundle creates the rootfs and config.json for opts in bundle.
func writeBundle(t testing.TB, bundle, shared, id string, opts Options) {
	t.Helper()
	if len(opts.Args) == 0 {
		t.Fatal("runc.Options.Args is empty")
	}
	rootfs := filepath.Join(bundle, "rootfs")
	// Mount points must exist up front: the rootfs is remounted read-only
	// after mounting, but creating them on the host keeps that true even
	// for runtimes that do not create missing mount points.
	for _, dir := range []string{"bin", "dev", "proc", "sys", "tmp", "etc", strings.TrimPrefix(SharedPath, "/")} {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(BusyboxPath, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		t.Fatalf("copy busybox: %v", err)
	}
	names, err := busyboxApplets()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if name == "busybox" || strings.Contains(name, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", name)); err != nil {
			t.Fatalf("busybox applet link: %v", err)
		}
	}
	// A few programs look up names; give root one.
	files := map[string]File{
		"/etc/passwd": {Content: []byte("root:x:0:0:root:/:/bin/sh\n"), Mode: 0o644},
		"/etc/group":  {Content: []byte("root:x:0:\n"), Mode: 0o644},
	}
	if opts.Goinit {
		bin := os.Getenv(BinaryEnv)
		if bin == "" {
			bin = testbin.Goinit(t)
		}
		files[GoinitPath] = File{HostPath: bin}
	}
	for p, f := range opts.Files {
		files[p] = f
	}
	for p, f := range files {
		if !path.IsAbs(p) {
			t.Fatalf("runc.Options.Files: %q is not an absolute path", p)
		}
		dst := filepath.Join(rootfs, filepath.FromSlash(path.Clean(p)))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		if f.HostPath != "" {
			err = copyFile(f.HostPath, dst, mode)
		} else {
			err = os.WriteFile(dst, f.Content, mode)
			if err == nil {
				err = os.Chmod(dst, mode) // WriteFile's mode is masked by umask
			}
		}
		if err != nil {
			t.Fatalf("rootfs file %s: %v", p, err)
		}
	}

	spec, err := toMap(newSpec(shared, id, opts))
	if err != nil {
		t.Fatal(err)
	}
	if opts.EditSpec != nil {
		opts.EditSpec(spec)
	}
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// The types below are the subset of the OCI runtime spec (config.json) that
// the harness writes. They are private: tests reach anything else through
// Options.EditSpec.

type spec struct {
	OCIVersion string  `json:"ociVersion"`
	Process    process `json:"process"`
	Root       root    `json:"root"`
	Hostname   string  `json:"hostname"`
	Mounts     []mount `json:"mounts"`
	Linux      linux   `json:"linux"`
}

type process struct {
	Terminal        bool         `json:"terminal"`
	User            user         `json:"user"`
	Args            []string     `json:"args"`
	Env             []string     `json:"env"`
	Cwd             string       `json:"cwd"`
	Capabilities    capabilities `json:"capabilities"`
	Rlimits         []rlimit     `json:"rlimits"`
	NoNewPrivileges bool         `json:"noNewPrivileges"`
}

type user struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type capabilities struct {
	Bounding  []string `json:"bounding"`
	Effective []string `json:"effective"`
	Permitted []string `json:"permitted"`
}

type rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type root struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

type linux struct {
	Resources     resources   `json:"resources"`
	CgroupsPath   string      `json:"cgroupsPath"`
	Namespaces    []namespace `json:"namespaces"`
	MaskedPaths   []string    `json:"maskedPaths"`
	ReadonlyPaths []string    `json:"readonlyPaths"`
}

type resources struct {
	Devices []deviceRule `json:"devices"`
	Memory  *memory      `json:"memory,omitempty"`
	Pids    *pids        `json:"pids,omitempty"`
}

type deviceRule struct {
	Allow  bool   `json:"allow"`
	Access string `json:"access"`
}

type memory struct {
	Limit int64 `json:"limit"`
}

type pids struct {
	Limit int64 `json:"limit"`
}

type namespace struct {
	Type string `json:"type"`
}

// dockerCaps is Docker's default capability set: goinit mostly runs under
// Docker or Kubernetes, so it should work with exactly these.
var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// newSpec returns the config.json for opts, modelled on `runc spec` with
// Docker's defaults where the two differ.
func newSpec(shared, id string, opts Options) spec {
	s := spec{
		OCIVersion: "1.0.2",
		Process: process{
			Args: opts.Args,
			Env:  append([]string{DefaultPath}, opts.Env...),
			Cwd:  "/",
			Capabilities: capabilities{
				Bounding:  dockerCaps,
				Effective: dockerCaps,
				Permitted: dockerCaps,
			},
			Rlimits:         []rlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     root{Path: "rootfs", Readonly: !opts.WritableRootfs},
		Hostname: "goinit-e2e",
		Mounts: []mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=65536k"}},
			{Destination: SharedPath, Type: "bind", Source: shared, Options: []string{"rbind", "rw"}},
		},
		Linux: linux{
			Resources: resources{Devices: []deviceRule{{Allow: false, Access: "rwm"}}},
			// Absolute and flat, so runc removes the whole path on delete
			// and concurrent tests never share a cgroup.
			CgroupsPath: "/goinit-e2e-" + id,
			Namespaces: []namespace{
				{Type: "pid"}, {Type: "network"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	switch opts.Cgroup {
	case CgroupReadOnly:
		s.Mounts = append(s.Mounts, mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	case CgroupReadWrite:
		s.Mounts = append(s.Mounts, mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "rw"}})
	}
	if opts.CgroupNS {
		s.Linux.Namespaces = append(s.Linux.Namespaces, namespace{Type: "cgroup"})
	}
	if opts.MemoryLimit > 0 {
		s.Linux.Resources.Memory = &memory{Limit: opts.MemoryLimit}
	}
	if opts.PidsLimit > 0 {
		s.Linux.Resources.Pids = &pids{Limit: opts.PidsLimit}
	}
	return s
}
