package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/disk/qcow"
	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/imageformat"
)

// OpenOptions control Open.
type OpenOptions struct {
	// ReadOnly opens the image without write access. Backing files are
	// read-only whatever this says.
	ReadOnly bool
	// Passphrase decrypts AES-encrypted qcow images in the chain (read
	// only; a wrong one cannot be detected, and reads garbage).
	Passphrase []byte
	// ForceShare reads images that a running QEMU writes, as qemu-img's
	// -U (force-share) does: what is read may be inconsistent, and may
	// change. It needs ReadOnly. Without it, such an image is refused with
	// an error wrapping ErrInUse.
	ForceShare bool
}

// Open opens the image at path, detecting its format by content (the qcow2
// magic and version, 2 or 3 for qcow2, 1 for qcow; else raw), and its whole
// backing chain. Backing file names are resolved relative to the directory
// of the image that names them; a backing format recorded in an image is
// honoured, and probed by content when absent (qcow records none). The
// chain is bounded by MaxChainDepth and must not loop.
// Errors name path and, for a problem below it, the backing file.
//
// Each image file is locked as QEMU locks it (see lock.go) for as long as
// the Image is open: the top image for writing unless ReadOnly, backing
// files as a guest's backing files. An image another program holds in a
// way that excludes this is refused with an error wrapping ErrInUse (an
// *InUseError). Only regular files and block devices are opened; anything
// else (a FIFO, a directory) is refused at once, with an error wrapping
// ErrFileType.
func Open(path string, opts OpenOptions) (Image, error) {
	if opts.ForceShare && !opts.ReadOnly {
		return nil, fmt.Errorf("open %q: force-share needs a read-only open", path)
	}
	c := &chain{share: opts.ForceShare, passphrase: opts.Passphrase}
	img, err := c.open(path, "", !opts.ReadOnly, filepath.Base(path))
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	return img, nil
}

// DetectFormat reports the format of the image at path by its content.
func DetectFormat(path string) (Format, error) {
	f, _, err := openImageFile(path, false, lockNone)
	if err != nil {
		return "", fmt.Errorf("detect format of %q: %w", path, err)
	}
	defer f.Close()
	ft, err := probe(f)
	if err != nil {
		return "", fmt.Errorf("detect format of %q: %w", path, err)
	}
	return ft, nil
}

// probe tells qcow2 and qcow from raw by the first four bytes (the magic
// both share), and qcow (version 1) from qcow2 by the next four.
func probe(r io.ReaderAt) (Format, error) {
	var magic [8]byte
	n, err := r.ReadAt(magic[:], 0)
	if n < 4 {
		if err == nil || errors.Is(err, io.EOF) {
			return FormatRaw, nil // too short to be anything but raw
		}
		return "", fmt.Errorf("read magic: %w", err)
	}
	if binary.BigEndian.Uint32(magic[:]) == qcow2.Magic {
		if n == 8 && binary.BigEndian.Uint32(magic[4:]) == qcow.Version {
			return FormatQcow, nil
		}
		return FormatQcow2, nil
	}
	return FormatRaw, nil
}

// parseFormat maps a backing format name, as an image records it, to a
// Format; "" means probe.
func parseFormat(s string) (Format, error) { return imageformat.ParseExact(s) }

// fileID identifies a file whatever its name.
type fileID struct{ dev, ino uint64 }

// chain is the state of opening one backing chain: the images opened so
// far, top first, to bound its depth and detect loops.
type chain struct {
	names []string // as the chain names them (the top by its base name)
	ids   []fileID
	// err is the first error met below the top image. The qcow2 engine
	// wraps what a BackingOpener returns in words of its own; reporting err
	// instead keeps messages the same at any depth.
	err error
	// writable is the depth opened read-write: 0 for the top only, 1 for
	// the top's backing file only (Commit), -1 for none.
	writable int
	// share forces sharing on the images opened read-only (-U).
	share bool
	// passphrase decrypts encrypted qcow images.
	passphrase []byte
}

// open opens the image at path with the given format ("" probes), as the
// image at depth len(c.names) of the chain. name is how messages show it.
func (c *chain) open(path string, format Format, write bool, name string) (Image, error) {
	depth := len(c.names)
	if depth >= MaxChainDepth {
		return nil, &chainError{fmt.Sprintf("backing chain is longer than %d images: %s -> %s ...",
			MaxChainDepth, strings.Join(c.names, " -> "), name)}
	}
	// Locked once the format is known, and the file known not to be one
	// the chain holds already (which a loop would find locked).
	f, id, err := openImageFile(path, write, lockNone)
	if err != nil {
		return nil, err
	}
	if i := indexID(c.ids, id); i >= 0 {
		f.Close()
		msg := fmt.Sprintf("backing chain loops: %s -> %s", strings.Join(c.names, " -> "), name)
		if c.names[i] != name {
			msg += fmt.Sprintf(" (the same file as %s)", c.names[i])
		}
		return nil, &chainError{msg}
	}
	c.names = append(c.names, name)
	c.ids = append(c.ids, id)

	if format == "" {
		if format, err = probe(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := lockFile(f, path, id, lockFor(format, write, depth > 0, c.share)); err != nil {
		f.Close()
		return nil, err
	}
	switch format {
	case FormatRaw:
		img, err := newRaw(f, path, !write)
		if err != nil {
			f.Close()
			return nil, err
		}
		return img, nil
	case FormatQcow2:
		q := &qcow2Image{engineImage[*qcow2.Image]{path: path}}
		opener := func(bname, bformat string) (qcow2.Backing, error) {
			b, err := c.openBacking(path, bname, bformat)
			if err != nil {
				return nil, err
			}
			q.backing = b
			return b, nil
		}
		// qcow2.Open owns f and the backing image: it closes both when it fails.
		img, err := qcow2.Open(f, qcow2.Options{ReadOnly: !write, OpenBacking: opener})
		if err != nil {
			if c.err != nil {
				return nil, c.err
			}
			return nil, err
		}
		q.img = img
		return q, nil
	case FormatQcow:
		return c.openQcow(f, path, write) // it owns f
	}
	f.Close()
	return nil, fmt.Errorf("unsupported image format %q", format)
}

// openBacking opens the backing file bname, named by the image at parent,
// read-only (unless it is the depth Commit writes to).
func (c *chain) openBacking(parent, bname, bformat string) (Image, error) {
	if c.err != nil {
		return nil, c.err
	}
	if bname == "" {
		c.err = fmt.Errorf("%q names an empty backing file", parent)
		return nil, c.err
	}
	p := backingPath(parent, bname)
	ft, err := parseFormat(bformat)
	if err != nil {
		c.err = fmt.Errorf("open backing file %q of %q: %w", p, parent, err)
		return nil, c.err
	}
	depth := len(c.names)
	img, err := c.open(p, ft, c.writable == depth, bname)
	if err != nil {
		if c.err == nil {
			var le *chainError
			if errors.As(err, &le) {
				c.err = err
			} else {
				c.err = fmt.Errorf("open backing file %q of %q: %w", p, parent, err)
			}
		}
		return nil, c.err
	}
	return img, nil
}

// chainError is a problem of the chain's shape (too deep, a loop), reported
// without the name of the file that could not be opened.
type chainError struct{ msg string }

func (e *chainError) Error() string { return e.msg }

// ErrFileType is wrapped by the errors about files that cannot be images:
// images are regular files or block devices.
var ErrFileType = errors.New("not a regular file or block device")

// fileTypeError reports a file of the wrong type.
type fileTypeError struct{ kind string }

func (e *fileTypeError) Error() string { return e.kind + ", " + ErrFileType.Error() }
func (e *fileTypeError) Unwrap() error { return ErrFileType }

// checkFileType refuses a mode that is not a regular file or block device.
func checkFileType(mode uint32) error {
	kind := "a special file"
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFBLK:
		return nil
	case unix.S_IFIFO:
		kind = "a named pipe (FIFO)"
	case unix.S_IFDIR:
		kind = "a directory"
	case unix.S_IFCHR:
		kind = "a character device"
	case unix.S_IFSOCK:
		kind = "a socket"
	}
	return &fileTypeError{kind}
}

// CheckFile reports, without opening it, whether path can be a disk image:
// it must exist and be a regular file or a block device (a FIFO would make
// whoever opens it wait for a writer, for ever). Errors name path.
func CheckFile(path string) error {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Stat(path, &st) }); err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if err := checkFileType(st.Mode); err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	return nil
}

// openImageFile opens the image file at path, for reading and writing when
// write is set, and takes the locks of mode m on it. It never blocks on the
// file's type: a FIFO or a device other than a block device is refused,
// before it is opened where possible (opening some devices does things),
// and checked again on the open file. Errors do not name path.
func openImageFile(path string, write bool, m lockMode) (*os.File, fileID, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Stat(path, &st) }); err != nil {
		return nil, fileID{}, err
	}
	if err := checkFileType(st.Mode); err != nil {
		return nil, fileID{}, err
	}
	flag := unix.O_RDONLY
	if write {
		flag = unix.O_RDWR
	}
	// O_NONBLOCK: should path have become a FIFO since the stat, the open
	// returns at once instead of waiting for a writer.
	var fd int
	err := ignoringEINTR(func() error {
		var err error
		fd, err = unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		return err
	})
	if err != nil {
		return nil, fileID{}, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fileID{}, fmt.Errorf("stat: %w", err)
	}
	if err := checkFileType(st.Mode); err != nil {
		unix.Close(fd)
		return nil, fileID{}, err
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fileID{}, fmt.Errorf("clear O_NONBLOCK: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	id := fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	if err := lockFile(f, path, id, m); err != nil {
		f.Close()
		return nil, fileID{}, err
	}
	return f, id, nil
}

// ignoringEINTR calls fn until it fails with something other than EINTR.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// PathCause returns the cause of a *fs.PathError in err's chain, dropping
// the operation and path that callers already name in their own message
// (errors.Is still sees fs.ErrNotExist); other errors are returned as they
// are. vmtui's packages format errors about files with it:
// fmt.Errorf("open %q: %w", path, disk.PathCause(err)).
func PathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// engine is what an image engine (qcow2.Image, qcow.Image) gives every
// format's adapter.
type engine interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Size() int64
	Flush() error
	Close() error // closes the backing image the engine was given too
}

// engineImage adapts an engine to Image, naming the file in its errors; the
// adapter of each format adds Format and Status.
type engineImage[E engine] struct {
	img     E
	path    string
	backing Image // nil without a backing file
}

// ReadAt reads the virtual disk; it returns io.EOF, unwrapped, only past
// the end, as io.ReaderAt says.
func (q *engineImage[E]) ReadAt(p []byte, off int64) (int, error) {
	n, err := q.img.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %q at %d: %w", q.path, off, err)
	}
	return n, err
}

func (q *engineImage[E]) WriteAt(p []byte, off int64) (int, error) {
	n, err := q.img.WriteAt(p, off)
	if err != nil {
		err = fmt.Errorf("write %q at %d: %w", q.path, off, err)
	}
	return n, err
}

func (q *engineImage[E]) Size() int64 { return q.img.Size() }

func (q *engineImage[E]) Flush() error {
	if err := q.img.Flush(); err != nil {
		return fmt.Errorf("flush %q: %w", q.path, err)
	}
	return nil
}

// Close closes the image and its backing chain.
func (q *engineImage[E]) Close() error {
	if err := q.img.Close(); err != nil {
		return fmt.Errorf("close %q: %w", q.path, err)
	}
	return nil
}

// qcow2Image is an open qcow2 image with its backing chain.
type qcow2Image struct{ engineImage[*qcow2.Image] }

func (q *qcow2Image) Format() Format { return FormatQcow2 }

// WriteZeroes makes [off, off+n) read as zeros.
func (q *qcow2Image) WriteZeroes(off, n int64) error {
	if err := q.img.WriteZeroes(off, n); err != nil {
		return fmt.Errorf("write zeroes to %q at %d: %w", q.path, off, err)
	}
	return nil
}

// Status resolves the extent at off through the backing chain.
func (q *qcow2Image) Status(off, n int64) (Extent, error) {
	if err := checkRange(off, n, q.Size()); err != nil {
		return Extent{}, err
	}
	e, err := q.img.Status(off, n)
	if err != nil {
		return Extent{}, fmt.Errorf("status of %q at %d: %w", q.path, off, err)
	}
	if e.Offset != off || e.Length <= 0 || e.Length > n {
		return Extent{}, fmt.Errorf("status of %q at %d: got an extent of %d bytes at %d", q.path, off, e.Length, e.Offset)
	}
	if e.Kind != ExtentBacking {
		return e, nil
	}
	if q.backing == nil || off >= q.backing.Size() {
		e.Kind = ExtentZero
		return e, nil
	}
	if end := q.backing.Size(); off+e.Length > end {
		e.Length = end - off
	}
	b, err := q.backing.Status(off, e.Length)
	if err != nil {
		return Extent{}, err
	}
	return Extent{Offset: off, Length: b.Length, Kind: b.Kind, Compressed: b.Compressed}, nil
}

// checkRange validates the arguments of Status.
func checkRange(off, n, size int64) error {
	if off < 0 || off >= size || n <= 0 {
		return fmt.Errorf("status of %d bytes at %d: out of range for a disk of %d bytes", n, off, size)
	}
	return nil
}
