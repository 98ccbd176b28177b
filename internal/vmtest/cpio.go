package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"
)

// cpioWriter writes an archive in the "newc" format (magic 070701), the only
// format the kernel's initramfs unpacker accepts. Writing it here rather than
// calling cpio(1) lets the archive hold device nodes and root-owned entries
// without privileges, and keeps the set of host packages small.
//
// The kernel does not create missing parent directories while unpacking, so
// every entry's parents are emitted first (see mkdirAll).
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{"": true, ".": true}}
}

// header writes one entry header and its NUL-terminated, 4-byte padded name.
// name is relative to the archive root ("bin/busybox").
func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for the newc format", name, size)
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	// Fields: ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check. mtime 0 keeps archives reproducible.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad(int64(len(hdr) + len(name) + 1))
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	_, c.err = c.w.Write(b)
}

// pad aligns the stream to 4 bytes after n bytes of header or data.
func (c *cpioWriter) pad(n int64) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// mkdirAll emits directory entries for name and each missing parent.
func (c *cpioWriter) mkdirAll(name string) {
	name = clean(name)
	if c.dirs[name] {
		return
	}
	c.mkdirAll(path.Dir(name))
	c.dirs[name] = true
	c.header(name, syscall.S_IFDIR|0o755, 0, 0, 0)
}

// file adds a regular file with the given permission bits, read from r.
func (c *cpioWriter) file(name string, perm os.FileMode, size int64, r io.Reader) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, syscall.S_IFREG|uint32(perm.Perm()), size, 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.CopyN(c.w, r, size)
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: copied %d of %d bytes: %w", name, n, size, err)
		return
	}
	c.pad(size)
}

// blob adds a regular file holding data.
func (c *cpioWriter) blob(name string, perm os.FileMode, data []byte) {
	c.file(name, perm, int64(len(data)), bytes.NewReader(data))
}

// hostFile adds the host file src as name, keeping its permission bits.
func (c *cpioWriter) hostFile(name, src string) {
	if c.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		c.err = err
		return
	}
	if !fi.Mode().IsRegular() {
		c.err = fmt.Errorf("cpio: %s is not a regular file", src)
		return
	}
	c.file(name, fi.Mode(), fi.Size(), f)
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm os.FileMode, major, minor uint32) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, syscall.S_IFCHR|uint32(perm.Perm()), 0, major, minor)
}

// close writes the trailer entry and flushes. It does not close the
// underlying writer.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
