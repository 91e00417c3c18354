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
	"syscall"

	"vmtui/disk/qcow2"
)

// OpenOptions control Open.
type OpenOptions struct {
	// ReadOnly opens the image without write access. Backing files are
	// read-only whatever this says.
	ReadOnly bool
}

// Open opens the image at path, detecting its format by content (the qcow2
// magic, else raw), and its whole backing chain. Backing file names are
// resolved relative to the directory of the image that names them; a
// backing format recorded in an image is honoured, and probed by content
// when absent. The chain is bounded by MaxChainDepth and must not loop.
// Errors name path and, for a problem below it, the backing file.
func Open(path string, opts OpenOptions) (Image, error) {
	c := &chain{}
	img, err := c.open(path, "", !opts.ReadOnly, filepath.Base(path))
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	return img, nil
}

// DetectFormat reports the format of the image at path by its content.
func DetectFormat(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("detect format of %q: %w", path, pathErr(err))
	}
	defer f.Close()
	ft, err := probe(f)
	if err != nil {
		return "", fmt.Errorf("detect format of %q: %w", path, err)
	}
	return ft, nil
}

// probe tells qcow2 from raw by the first four bytes.
func probe(r io.ReaderAt) (Format, error) {
	var magic [4]byte
	n, err := r.ReadAt(magic[:], 0)
	if n < len(magic) {
		if err == nil || errors.Is(err, io.EOF) {
			return FormatRaw, nil // too short to be anything but raw
		}
		return "", fmt.Errorf("read magic: %w", err)
	}
	if binary.BigEndian.Uint32(magic[:]) == qcow2.Magic {
		return FormatQcow2, nil
	}
	return FormatRaw, nil
}

// parseFormat maps a backing format name to a Format; "" means probe.
func parseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatQcow2, FormatRaw:
		return Format(s), nil
	}
	return "", fmt.Errorf("unsupported image format %q (want qcow2 or raw)", s)
}

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
}

// open opens the image at path with the given format ("" probes), as the
// image at depth len(c.names) of the chain. name is how messages show it.
func (c *chain) open(path string, format Format, write bool, name string) (Image, error) {
	depth := len(c.names)
	if depth >= MaxChainDepth {
		return nil, &chainError{fmt.Sprintf("backing chain is longer than %d images: %s -> %s ...",
			MaxChainDepth, strings.Join(c.names, " -> "), name)}
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, pathErr(err)
	}
	id, err := statID(f)
	if err != nil {
		f.Close()
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
	switch format {
	case FormatRaw:
		img, err := newRaw(f, path, !write)
		if err != nil {
			f.Close()
			return nil, err
		}
		return img, nil
	case FormatQcow2:
		q := &qcow2Image{path: path}
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

// statID returns the device and inode of f.
func statID(f *os.File) (fileID, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, pathErr(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("stat %q: no device and inode", f.Name())
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// pathErr drops the operation and path of a *fs.PathError, which callers
// already name, keeping the cause (errors.Is still sees fs.ErrNotExist).
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// qcow2Image is an open qcow2 image with its backing chain.
type qcow2Image struct {
	img     *qcow2.Image
	path    string
	backing Image // nil without a backing file
}

// ReadAt reads the virtual disk; it returns io.EOF, unwrapped, only past
// the end, as io.ReaderAt says.
func (q *qcow2Image) ReadAt(p []byte, off int64) (int, error) {
	n, err := q.img.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %q at %d: %w", q.path, off, err)
	}
	return n, err
}

func (q *qcow2Image) WriteAt(p []byte, off int64) (int, error) {
	n, err := q.img.WriteAt(p, off)
	if err != nil {
		err = fmt.Errorf("write %q at %d: %w", q.path, off, err)
	}
	return n, err
}

func (q *qcow2Image) Size() int64    { return q.img.Size() }
func (q *qcow2Image) Format() Format { return FormatQcow2 }

func (q *qcow2Image) Flush() error {
	if err := q.img.Flush(); err != nil {
		return fmt.Errorf("flush %q: %w", q.path, err)
	}
	return nil
}

// Close closes the image and its backing chain.
func (q *qcow2Image) Close() error {
	// The engine closes the backing image it was given.
	if err := q.img.Close(); err != nil {
		return fmt.Errorf("close %q: %w", q.path, err)
	}
	return nil
}

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
