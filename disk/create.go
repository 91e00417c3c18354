package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vmtui/vmtui/disk/qcow2"
)

// CreateOptions describe a new image.
type CreateOptions struct {
	// Format is FormatQcow2 (the default when empty), FormatRaw or
	// FormatQcow (which takes Size, BackingFile, BackingFormat and
	// ClusterSize only).
	Format Format
	// Size is the virtual size in bytes (qcow2 rounds it up to 512). With a
	// backing file, 0 takes the size of the backing image, and any other
	// size must equal it.
	Size int64

	// The rest apply to qcow2 only.

	// ClusterSize is 0 for 64 KiB, or a power of two from 512 to 2 MiB.
	ClusterSize int64
	// BackingFile is the backing file's name as stored in the new image;
	// a relative name is relative to the directory of the new image.
	BackingFile string
	// BackingFormat is the backing file's format; empty detects it by
	// content. It is recorded in the new image.
	BackingFormat Format
	// Preallocation is "off" (or empty) or "metadata".
	Preallocation   string
	CompressionType qcow2.CompressionType
	// Compat is "1.1" (the default when empty) or "0.10".
	Compat        string
	RefcountBits  int // 0 means 16
	LazyRefcounts bool
}

// Create makes a new image at path. It never overwrites: an existing path
// is an error wrapping fs.ErrExist. On failure nothing is left at path.
// The new image is locked for writing while it is made, and a backing file
// is read as a guest's backing file is (see Open): unlike qemu-img create,
// which shares it for external snapshots, Create refuses a base that a
// running QEMU writes, with an error wrapping ErrInUse, since an overlay on
// a disk that changes under it reads garbage.
func Create(path string, opts CreateOptions) error {
	if err := create(path, opts); err != nil {
		return fmt.Errorf("create %q: %w", path, err)
	}
	return nil
}

func create(path string, opts CreateOptions) error {
	if opts.Size < 0 {
		return fmt.Errorf("negative size %d", opts.Size)
	}
	switch opts.Format {
	case FormatRaw:
		return createRaw(path, opts)
	case FormatQcow2, "":
		return createQcow2(path, opts)
	case FormatQcow:
		return createQcow(path, opts)
	}
	return fmt.Errorf("unsupported image format %q (want qcow2, raw or qcow)", opts.Format)
}

// createFile creates path exclusively, locked for writing.
func createFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%w (remove it first or choose another name)", fs.ErrExist)
	}
	if err != nil {
		return nil, PathCause(err)
	}
	if err := lockFile(f, path, fileID{}, lockWrite); err != nil {
		// Only a program that opened the file in the instant since it was
		// created can hold it.
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

func createRaw(path string, opts CreateOptions) error {
	switch {
	case opts.BackingFile != "":
		return errors.New("a raw image cannot have a backing file")
	case opts.Preallocation != "" && opts.Preallocation != "off":
		return fmt.Errorf("preallocation %q is not supported for raw images (want off)", opts.Preallocation)
	}
	f, err := createFile(path)
	if err != nil {
		return err
	}
	err = f.Truncate(opts.Size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return PathCause(err)
	}
	return nil
}

func createQcow2(path string, opts CreateOptions) error {
	qopts := qcow2.CreateOptions{
		Size:            opts.Size,
		ClusterSize:     opts.ClusterSize,
		RefcountBits:    opts.RefcountBits,
		Compat:          opts.Compat,
		Preallocation:   opts.Preallocation,
		CompressionType: opts.CompressionType,
		LazyRefcounts:   opts.LazyRefcounts,
	}
	var base Image
	if opts.BackingFile != "" {
		var err error
		if base, qopts.Size, err = openNewBacking(path, opts); err != nil {
			return err
		}
		qopts.BackingFile = opts.BackingFile
		qopts.BackingFormat = string(base.Format())
	}
	f, err := createFile(path)
	if err != nil {
		if base != nil {
			base.Close()
		}
		return err
	}
	var backing qcow2.Backing
	if base != nil {
		backing = base
	}
	img, err := qcow2.Create(f, qopts, backing) // closes f and backing when it fails
	if err != nil {
		os.Remove(path)
		return err
	}
	if err := img.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// openNewBacking opens, read-only, the backing file opts name for a new
// image at path, and returns it with the new image's size: opts.Size, or
// the backing file's when that is 0 (any other size than its is refused).
func openNewBacking(path string, opts CreateOptions) (Image, int64, error) {
	ft, err := parseFormat(string(opts.BackingFormat))
	if err != nil {
		return nil, 0, fmt.Errorf("backing file %q: %w", opts.BackingFile, err)
	}
	p := backingPath(path, opts.BackingFile)
	c := &chain{names: []string{filepath.Base(path)}, ids: []fileID{{}}, writable: -1}
	base, err := c.open(p, ft, false, opts.BackingFile)
	if err != nil {
		if c.err != nil {
			err = c.err
		}
		return nil, 0, fmt.Errorf("open backing file %q: %w", p, err)
	}
	switch size := base.Size(); {
	case opts.Size == 0:
		return base, size, nil
	case opts.Size != size:
		base.Close()
		return nil, 0, fmt.Errorf("size %d differs from the size of the backing file %q (%d bytes); leave the size out to take the backing file's",
			opts.Size, p, size)
	}
	return base, opts.Size, nil
}

// BackingName is the name to record in a new overlay at overlay for the
// base image a person named base, from the directory cwd: an absolute name
// as it is; a relative one, meant from cwd, rewritten relative to the
// overlay's directory, which is how qcow2 readers (vmtui, QEMU, vmd)
// resolve it. The command line and the TUI both make overlays this way.
func BackingName(cwd, overlay, base string) string {
	if filepath.IsAbs(base) {
		return base
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(cwd, p)
	}
	rel, err := filepath.Rel(filepath.Dir(abs(overlay)), abs(base))
	if err != nil {
		return abs(base)
	}
	return rel
}
