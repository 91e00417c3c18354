package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmtui/vmtui/disk/qcow"
	"github.com/vmtui/vmtui/disk/qcow2"
)

// openQcow opens the qcow (version 1) image in f, at depth len(c.names)
// of the chain; it owns f.
func (c *chain) openQcow(f *os.File, path string, write bool) (Image, error) {
	q := &qcowImage{engineImage[*qcow.Image]{path: path}}
	opener := func(bname string) (qcow.Backing, error) {
		// qcow records no backing format: it is probed.
		b, err := c.openBacking(path, bname, "")
		if err != nil {
			return nil, err
		}
		q.backing = b
		return b, nil
	}
	img, err := qcow.Open(f, qcow.Options{ReadOnly: !write, OpenBacking: opener, Passphrase: c.passphrase})
	if err != nil {
		if c.err != nil {
			return nil, c.err
		}
		return nil, err
	}
	q.img = img
	return q, nil
}

// qcowImage is an open qcow (version 1) image with its backing chain.
type qcowImage struct{ engineImage[*qcow.Image] }

func (q *qcowImage) Format() Format { return FormatQcow }

// Status resolves the extent at off through the backing chain.
func (q *qcowImage) Status(off, n int64) (Extent, error) {
	if err := checkRange(off, n, q.Size()); err != nil {
		return Extent{}, err
	}
	e, err := q.img.Status(off, n)
	if err != nil {
		return Extent{}, fmt.Errorf("status of %q at %d: %w", q.path, off, err)
	}
	if k := extentKind(e.Kind); k != ExtentBacking {
		return Extent{Offset: off, Length: e.Length, Kind: k, Compressed: e.Compressed}, nil
	}
	if q.backing == nil || off >= q.backing.Size() {
		return Extent{Offset: off, Length: e.Length, Kind: ExtentZero}, nil
	}
	b, err := q.backing.Status(off, min(e.Length, q.backing.Size()-off))
	if err != nil {
		return Extent{}, err
	}
	return Extent{Offset: off, Length: b.Length, Kind: b.Kind, Compressed: b.Compressed}, nil
}

// describeQcow fills info from the header of the qcow image in f, a file
// of size bytes, with what qemu-img info says of one.
func describeQcow(info *ImageInfo, f *os.File, size int64) error {
	h, err := qcow.ParseHeader(f, size)
	if err != nil {
		return err
	}
	info.VirtualSize = h.VirtualSize()
	info.ClusterSize = h.ClusterSize()
	info.Encrypted = h.Encrypted()
	if h.BackingFile != "" {
		info.BackingFilename = h.BackingFile
		info.FullBackingFilename = backingPath(info.Filename, h.BackingFile)
	}
	return nil
}

// checkQcow checks the qcow image in f; it repairs nothing.
func checkQcow(ctx context.Context, f *os.File, mode qcow2.RepairMode) (*qcow2.CheckResult, error) {
	if mode != qcow2.RepairNone {
		return nil, errors.New("qcow images cannot be repaired (convert the image to qcow2 with vmtui disk convert, then repair that)")
	}
	r, err := qcow.Check(ctx, f)
	if err != nil {
		return nil, err
	}
	return &qcow2.CheckResult{
		Corruptions:        r.Corruptions,
		Leaks:              r.Leaks,
		TotalClusters:      r.TotalClusters,
		AllocatedClusters:  r.AllocatedClusters,
		FragmentedClusters: r.FragmentedClusters,
		CompressedClusters: r.CompressedClusters,
		ImageEndOffset:     r.ImageEndOffset,
		Messages:           r.Messages,
	}, nil
}

// createQcow makes a qcow (version 1) image, as qemu-img create -f qcow.
func createQcow(path string, opts CreateOptions) error {
	switch {
	case opts.Preallocation != "" && opts.Preallocation != "off":
		return fmt.Errorf("preallocation %q is not supported for qcow images (want off)", opts.Preallocation)
	case opts.Compat != "" || opts.RefcountBits != 0 || opts.LazyRefcounts:
		return errors.New("compat, refcount bits and lazy refcounts are qcow2 options, not qcow ones")
	}
	bits, err := qcowClusterBits(opts.ClusterSize)
	if err != nil {
		return err
	}
	qopts := qcow.CreateOptions{Size: opts.Size, ClusterBits: bits}
	if opts.BackingFile != "" {
		base, size, err := openNewBacking(path, opts)
		if err != nil {
			return err
		}
		bft := base.Format()
		base.Close()
		if opts.BackingFormat != "" && bft != opts.BackingFormat {
			return fmt.Errorf("backing file %q is %s, not %s", backingPath(path, opts.BackingFile), bft, opts.BackingFormat)
		}
		qopts.Size = size
		qopts.BackingFile = opts.BackingFile
	}
	f, err := createFile(path)
	if err != nil {
		return err
	}
	err = qcow.Create(f, qopts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return PathCause(err)
	}
	return nil
}

// qcowClusterBits returns the cluster_bits of a qcow cluster of cs bytes,
// 0 (the default) when cs is 0.
func qcowClusterBits(cs int64) (uint8, error) {
	if cs == 0 {
		return 0, nil
	}
	bits := uint8(0)
	for ; bits < 63 && int64(1)<<bits < cs; bits++ {
	}
	if int64(1)<<bits != cs || bits < qcow.MinClusterBits || bits > qcow.MaxClusterBits {
		return 0, fmt.Errorf("cluster size %d: a qcow cluster is a power of two from 512 bytes to 64 KiB", cs)
	}
	return bits, nil
}

// newQcowOutput makes the qcow output of a conversion in f, of size bytes;
// it owns f.
func newQcowOutput(f *os.File, path string, size int64, opts ConvertOptions) (*qcow.Image, error) {
	if opts.Compress && opts.CompressionType != qcow2.CompressionZlib {
		f.Close()
		return nil, fmt.Errorf("qcow compresses with zlib only, not %s", opts.CompressionType)
	}
	bits, err := qcowClusterBits(opts.ClusterSize)
	if err != nil {
		f.Close()
		return nil, err
	}
	qopts := qcow.CreateOptions{Size: size, ClusterBits: bits}
	// As for qcow2: the output is garbage until it has its name, and one
	// fsync at the end makes it durable.
	uf := unsyncedFile{f}
	if err := qcow.Create(uf, qopts); err != nil {
		f.Close()
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	img, err := qcow.Open(uf, qcow.Options{}) // closes f when it fails
	if err != nil {
		return nil, fmt.Errorf("open the new %q: %w", path, err)
	}
	return img, nil
}

// commitSource is what Commit needs of an overlay: its own status (with
// ExtentBacking for what it leaves to its backing file), its backing image
// and the name it records.
type commitSource struct {
	status      func(off, n int64) (Extent, error)
	backing     Image
	backingName string
}

// commitSourceOf returns the commitSource of a qcow2 or qcow image.
func commitSourceOf(img Image) (commitSource, bool) {
	switch q := img.(type) {
	case *qcow2Image:
		return commitSource{q.img.Status, q.backing, q.img.Header().BackingFile}, true
	case *qcowImage:
		status := func(off, n int64) (Extent, error) {
			e, err := q.img.Status(off, n)
			return Extent{Offset: e.Offset, Length: e.Length, Kind: extentKind(e.Kind), Compressed: e.Compressed}, err
		}
		h := q.img.Header()
		return commitSource{status, q.backing, h.BackingFile}, true
	}
	return commitSource{}, false
}

// QcowEncrypted reports whether the image at path is an AES-encrypted qcow
// image, which QEMU's emulators refuse to run. It reads the header only,
// and answers false for anything else, an unreadable file included.
func QcowEncrypted(path string) bool {
	f, _, err := openImageFile(path, false, lockNone)
	if err != nil {
		return false
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false
	}
	h, err := qcow.ParseHeader(f, size)
	return err == nil && h.Encrypted()
}

// extentKind is the Extent kind of a qcow extent kind.
func extentKind(k qcow.ExtentKind) qcow2.ExtentKind {
	switch k {
	case qcow.ExtentData:
		return ExtentData
	case qcow.ExtentZero:
		return ExtentZero
	}
	return ExtentBacking
}
