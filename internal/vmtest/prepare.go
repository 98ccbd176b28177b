package vmtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// Package names and paths the image is built from. The kernel package is the
// one the Debian meta package KernelMetaPackage depends on, so the harness
// follows Debian's current stable kernel without edits here.
const (
	KernelMetaPackage = "linux-image-amd64"
	BusyboxPackage    = "busybox-static"
	QEMUBinary        = "qemu-system-x86_64"
)

// Environment variables that replace a downloaded artefact with a local file,
// for machines without apt or to try another kernel.
const (
	EnvKernel  = "VMTEST_KERNEL"  // path of a bzImage/vmlinuz to boot
	EnvBusybox = "VMTEST_BUSYBOX" // path of a static busybox binary

	// EnvAccel selects qemu's accelerator: "tcg" (default) or "kvm".
	// KVM is opt-in because an openable /dev/kvm proves little: on the
	// project's CI machines (themselves VMs) it exists, yet a guest under it
	// hangs while decompressing the kernel, and -cpu max dies setting
	// MSR_IA32_ARCH_CAPABILITIES. Only a boot would tell, and a probe boot
	// costs more than it saves there.
	EnvAccel = "VMTEST_ACCEL"
)

// Image is what every VM of a test process boots.
type Image struct {
	// QEMU is the path of qemu-system-x86_64.
	QEMU string
	// Accel is the qemu accelerator: "tcg" (software emulation, the
	// default) or "kvm" when EnvAccel asks for it.
	Accel string
	// Kernel is the path of the kernel image (vmlinuz).
	Kernel string
	// KernelSource names where Kernel came from: "package version" of the
	// Debian package, or the environment variable that overrode it.
	KernelSource string
	// Busybox is the path of a static busybox binary.
	Busybox string
	// BusyboxSource names where Busybox came from, like KernelSource.
	BusyboxSource string

	// kernelDeb is the Debian package Kernel came from, for its modules;
	// "" for a kernel from EnvKernel.
	kernelDeb string
}

// ErrNoKernelPackage is KernelModule's error for a kernel from EnvKernel.
var ErrNoKernelPackage = errors.New("vmtest: the kernel comes with no package to take modules from")

// KernelModule returns a file holding the module rel of the kernel the VM
// boots (a path below /lib/modules/VERSION/, such as
// "kernel/drivers/block/brd.ko"), for a test to ship in Config.Files and
// insmod: Debian's kernel has most drivers as modules, and the VM loads
// none by itself. It is extracted once from the kernel's package into the
// cache. A kernel from EnvKernel has no package: ErrNoKernelPackage.
func (img *Image) KernelModule(rel string) (string, error) {
	if img.kernelDeb == "" {
		return "", fmt.Errorf("%w: %s (%s), for %s", ErrNoKernelPackage, img.Kernel, img.KernelSource, rel)
	}
	dst := filepath.Join(filepath.Dir(img.Kernel), "modules", filepath.Base(rel))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	inModules := func(name string) bool {
		v, ok := strings.CutPrefix(name, "./lib/modules/")
		_, r, found := strings.Cut(v, "/")
		return ok && found && r == rel
	}
	if err := extract(img.kernelDeb, inModules, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// prepared caches the Image for the life of the test process. It is the
// package's only global state: several tests (and packages' helpers) in one
// test binary boot VMs, and resolving the image costs an apt-cache call and a
// file lock each time, while its answer cannot change during one process.
var prepared struct {
	once sync.Once
	img  *Image
	err  error
}

// Prepare returns the boot image, downloading and extracting the kernel and
// busybox packages into the cache directory on first use (later runs only ask
// apt-cache for the current versions). If qemu, apt or the packages are
// missing, the test is skipped, or failed when CI=true.
func Prepare(t testing.TB) *Image {
	t.Helper()
	cache := filepath.Join(testbin.CacheDir(t), "vmtest")
	prepared.once.Do(func() {
		prepared.img, prepared.err = prepare(cache, t.Logf)
	})
	if prepared.err != nil {
		unavailable(t, "%v", prepared.err)
	}
	return prepared.img
}

// unavailable reports that the VM environment is missing or broken: a skip on
// a developer's machine, a failure in CI, which must prove the cgroup v2 suite
// ran.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf("vmtest: "+format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure; install %s and run apt-get update)", msg, HostPackages)
	}
	t.Skipf("%s (skipping; set CI=true to make this a failure)", msg)
}

// HostPackages lists the Debian packages the harness needs installed on the
// host, besides apt and dpkg. The kernel and busybox packages are fetched with
// apt-get download and never installed.
const HostPackages = "qemu-system-x86"

func prepare(cache string, logf func(string, ...any)) (*Image, error) {
	img := &Image{}
	var err error
	if img.QEMU, err = exec.LookPath(QEMUBinary); err != nil {
		return nil, fmt.Errorf("%s not found (Debian package qemu-system-x86): %w", QEMUBinary, err)
	}
	switch img.Accel = os.Getenv(EnvAccel); img.Accel {
	case "", "tcg":
		img.Accel = "tcg"
	case "kvm":
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
			return nil, fmt.Errorf("%s=kvm but /dev/kvm cannot be opened: %w", EnvAccel, err)
		} else {
			f.Close()
		}
	default:
		return nil, fmt.Errorf("%s=%q: want tcg or kvm", EnvAccel, img.Accel)
	}
	img.Kernel, img.KernelSource = os.Getenv(EnvKernel), EnvKernel
	img.Busybox, img.BusyboxSource = os.Getenv(EnvBusybox), EnvBusybox
	if img.Kernel != "" && img.Busybox != "" {
		return img, nil
	}

	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	// Test binaries of several packages may prepare at once (go test ./...
	// runs them in parallel); the lock makes one download and the others
	// find it done.
	unlock, err := lockFile(filepath.Join(cache, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	pkgs, err := resolvePackages()
	if err != nil {
		// Without apt lists (no apt-get update yet, or not Debian) an earlier
		// download still serves.
		kernel, busybox := newestCached(cache, "linux-image-*/vmlinuz"), newestCached(cache, BusyboxPackage+"_*/busybox")
		if kernel == "" || busybox == "" {
			return nil, err
		}
		logf("vmtest: %v; using cached %s and %s", err, kernel, busybox)
		pkgs = nil
		if img.Kernel == "" {
			img.Kernel, img.KernelSource = preferUncompressed(kernel, logf), filepath.Base(filepath.Dir(kernel))
			img.kernelDeb = kernelDeb(cache, img.Kernel)
		}
		if img.Busybox == "" {
			img.Busybox, img.BusyboxSource = busybox, filepath.Base(filepath.Dir(busybox))
		}
		return img, nil
	}
	if img.Kernel == "" {
		k := pkgs.kernel
		img.KernelSource = k.name + " " + k.version
		if img.Kernel, err = fetch(cache, k, "./boot/vmlinuz-", "vmlinuz", logf); err != nil {
			return nil, err
		}
		img.Kernel = preferUncompressed(img.Kernel, logf)
		img.kernelDeb = kernelDeb(cache, img.Kernel)
	}
	if img.Busybox == "" {
		b := pkgs.busybox
		img.BusyboxSource = b.name + " " + b.version
		if img.Busybox, err = fetch(cache, b, "./bin/busybox", "busybox", logf); err != nil {
			return nil, err
		}
	}
	return img, nil
}

type debPackage struct{ name, version string }

type packages struct{ kernel, busybox debPackage }

// resolvePackages asks apt-cache for the kernel package the meta package
// depends on and the candidate versions, in one call where possible
// (each apt-cache run costs about 0.4s).
func resolvePackages() (*packages, error) {
	stanzas, err := aptShow(KernelMetaPackage, BusyboxPackage)
	if err != nil {
		return nil, err
	}
	var p packages
	meta, ok := stanzas[KernelMetaPackage]
	if !ok {
		return nil, fmt.Errorf("apt-cache knows no %s (run apt-get update)", KernelMetaPackage)
	}
	bb, ok := stanzas[BusyboxPackage]
	if !ok {
		return nil, fmt.Errorf("apt-cache knows no %s (run apt-get update)", BusyboxPackage)
	}
	p.busybox = debPackage{BusyboxPackage, bb["Version"]}
	// Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
	for _, dep := range strings.Split(meta["Depends"], ",") {
		dep = strings.TrimSpace(dep)
		if !strings.HasPrefix(dep, "linux-image-") {
			continue
		}
		name, rest, _ := strings.Cut(dep, " ")
		p.kernel.name = name
		if v, ok := strings.CutPrefix(strings.TrimSpace(rest), "(= "); ok {
			p.kernel.version = strings.TrimSuffix(v, ")")
		}
		break
	}
	if p.kernel.name == "" {
		return nil, fmt.Errorf("%s depends on no linux-image package: %q", KernelMetaPackage, meta["Depends"])
	}
	if p.kernel.version == "" {
		st, err := aptShow(p.kernel.name)
		if err != nil {
			return nil, err
		}
		p.kernel.version = st[p.kernel.name]["Version"]
	}
	if p.kernel.version == "" || p.busybox.version == "" {
		return nil, fmt.Errorf("apt-cache gave no version for %s or %s", p.kernel.name, BusyboxPackage)
	}
	return &p, nil
}

// aptShow returns the candidate stanza of each package, by package name.
func aptShow(names ...string) (map[string]map[string]string, error) {
	cmd := exec.Command("apt-cache", append([]string{"show", "--no-all-versions"}, names...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %v: %s (run apt-get update)", strings.Join(names, " "), err, strings.TrimSpace(stderr.String()))
	}
	stanzas := map[string]map[string]string{}
	var cur map[string]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			cur = nil
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "Package" {
			cur = map[string]string{}
			stanzas[v] = cur
		}
		if cur != nil {
			cur[k] = v
		}
	}
	return stanzas, sc.Err()
}

// fetch returns cache/<name>_<version>/<out>, the member of the package whose
// path starts with member. The .deb is downloaded into cache/debs unless
// already there; both steps are skipped when the extracted file exists.
func fetch(cache string, p debPackage, member, out string, logf func(string, ...any)) (string, error) {
	key := p.name + "_" + strings.NewReplacer(":", "%3a", "/", "_").Replace(p.version)
	dst := filepath.Join(cache, key, out)
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	debs := filepath.Join(cache, "debs")
	deb := filepath.Join(debs, key+".deb")
	if _, err := os.Stat(deb); err != nil {
		logf("vmtest: downloading %s %s", p.name, p.version)
		if err := download(debs, p, deb); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if err := extract(deb, func(name string) bool { return strings.HasPrefix(name, member) }, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// kernelDeb is where fetch keeps the package of the kernel it extracted to
// cache/<name>_<version>/: cache/debs/<name>_<version>.deb.
func kernelDeb(cache, kernel string) string {
	return filepath.Join(cache, "debs", filepath.Base(filepath.Dir(kernel))+".deb")
}

// download runs apt-get download in a fresh directory, then renames the one
// .deb it produced to deb, so a half-finished download never looks cached.
func download(debs string, p debPackage, deb string) error {
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(debs, "download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"download", p.name + "=" + p.version}
	if os.Geteuid() == 0 {
		// apt drops to the _apt user, which cannot write into the cache;
		// say so rather than let it print a warning about it.
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	cmd := exec.Command("apt-get", args...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s=%s: %v\n%s", p.name, p.version, err, out)
	}
	got, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(got) != 1 {
		return fmt.Errorf("apt-get download %s=%s left %d .deb files", p.name, p.version, len(got))
	}
	return os.Rename(got[0], deb)
}

// extract copies the first member of deb whose path starts with prefix to
// dst. It reads dpkg-deb's tar stream itself so that only that member is
// written, not the ~400 MB of kernel modules next to it.
func extract(deb string, match func(name string) bool, dst string) error {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// dpkg-deb forks a decompressor that shares its pipes: stopping early
	// must kill the whole process group, or Wait hangs on the child's stderr.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb: %w", err)
	}
	found, copyErr := extractTar(stdout, match, dst)
	// Stop early once the member is out; dpkg-deb's error then says
	// nothing, so it is reported only if the member was not found.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	waitErr := cmd.Wait()
	if copyErr != nil {
		return fmt.Errorf("extract from %s: %w", deb, copyErr)
	}
	if !found {
		if waitErr != nil {
			return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v: %s", deb, waitErr, stderr.String())
		}
		return fmt.Errorf("%s has no such member", deb)
	}
	return nil
}

func extractTar(r io.Reader, match func(name string) bool, dst string) (bool, error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if hdr.Typeflag != tar.TypeReg || !match(hdr.Name) {
			continue
		}
		tmp := dst + ".tmp"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
		if err != nil {
			return true, err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return true, err
		}
		if err := f.Close(); err != nil {
			return true, err
		}
		return true, os.Rename(tmp, dst)
	}
}

// newestCached returns the last match of pattern under cache in lexical
// order, a fair guess at the newest version, or "".
func newestCached(cache, pattern string) string {
	m, _ := filepath.Glob(filepath.Join(cache, pattern))
	sort.Strings(m)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

// lockFile takes an exclusive flock on path, blocking until it is free.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// preferUncompressed returns the path of the ELF vmlinux next to vmlinuz,
// creating it on first use, or vmlinuz if that fails (see kernel.go).
func preferUncompressed(vmlinuz string, logf func(string, ...any)) string {
	vmlinux := filepath.Join(filepath.Dir(vmlinuz), "vmlinux")
	if _, err := os.Stat(vmlinux); err == nil {
		return vmlinux
	}
	if err := uncompressKernel(vmlinuz, vmlinux); err != nil {
		logf("vmtest: booting the compressed kernel, about 2.5s slower under emulation: %v", err)
		return vmlinuz
	}
	return vmlinux
}
