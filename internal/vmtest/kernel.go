package vmtest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// Booting the compressed bzImage (vmlinuz) costs about 2.5 s of every boot
// under TCG: the kernel's own XZ decompressor runs emulated. The uncompressed
// ELF vmlinux inside it carries a PVH entry point (CONFIG_PVH, set in
// Debian's kernels), and qemu boots such an ELF directly with -kernel, so the
// harness decompresses once on the host and caches the result.

// xzMagic starts an XZ stream (the payload of Debian's bzImage,
// CONFIG_KERNEL_XZ).
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// xenElfnotePhys32Entry is the ELF note type of the PVH entry point
// (XEN_ELFNOTE_PHYS32_ENTRY in xen/interface/elfnote.h).
const xenElfnotePhys32Entry = 18

// uncompressKernel writes the ELF vmlinux found in the bzImage vmlinuz to
// dst. It fails if the payload is not XZ or the ELF has no PVH entry point;
// the caller then boots vmlinuz as it is.
func uncompressKernel(vmlinuz, dst string) error {
	data, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	off := bytes.Index(data, xzMagic)
	if off < 0 {
		return errors.New("no XZ payload in the kernel image")
	}
	// --single-stream stops at the end of the payload and ignores the
	// bzImage bytes after it.
	cmd := exec.Command("xz", "--decompress", "--stdout", "--single-stream")
	cmd.Stdin = bytes.NewReader(data[off:])
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("xz: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := checkPVH(out); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// checkPVH reports an error unless image is an ELF with a PVH entry note.
func checkPVH(image []byte) error {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return fmt.Errorf("uncompressed kernel: %w", err)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes := make([]byte, p.Filesz)
		if _, err := p.ReadAt(notes, 0); err != nil {
			return fmt.Errorf("uncompressed kernel notes: %w", err)
		}
		for len(notes) >= 12 {
			namesz := binary.LittleEndian.Uint32(notes[0:])
			descsz := binary.LittleEndian.Uint32(notes[4:])
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+int(namesz))]
			if typ == xenElfnotePhys32Entry && string(bytes.TrimRight(name, "\x00")) == "Xen" {
				return nil
			}
			next := 12 + align4(int(namesz)) + align4(int(descsz))
			if next > len(notes) {
				break
			}
			notes = notes[next:]
		}
	}
	return errors.New("uncompressed kernel has no PVH entry point (CONFIG_PVH)")
}

func align4(n int) int { return (n + 3) &^ 3 }
