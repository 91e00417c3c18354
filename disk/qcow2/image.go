package qcow2

import "errors"

// errTODO marks engine methods still being written in this session.
var errTODO = errors.New("qcow2: not implemented yet")

// Image is an open qcow2 image. Its methods are safe for concurrent use.
type Image struct {
	f    File
	name string
	hdr  Header
}

// Open opens the qcow2 image in f. Unless opts.ReadOnly, writes are allowed;
// an image marked corrupt opens read-only only.
func Open(f File, opts Options) (*Image, error) { return nil, errTODO }

// Create writes a new image into f, which must be empty, and returns it open
// for writing. backing is the already opened backing image (nil without one).
func Create(f File, opts CreateOptions, backing Backing) (*Image, error) { return nil, errTODO }

// Header returns a copy of the image's header.
func (img *Image) Header() Header { return img.hdr }

// Size returns the virtual size in bytes.
func (img *Image) Size() int64 { return int64(img.hdr.Size) }

// Backing returns the backing image, or nil.
func (img *Image) Backing() Backing { return nil }

// ReadAt reads the virtual disk; it returns io.EOF only past the end.
func (img *Image) ReadAt(p []byte, off int64) (int, error) { return 0, errTODO }

// WriteAt writes the virtual disk, allocating clusters (with copy-on-write
// from the backing chain for partial clusters) as needed.
func (img *Image) WriteAt(p []byte, off int64) (int, error) { return 0, errTODO }

// WriteZeroes makes [off, off+n) read as zeros, with zero clusters (v3)
// where whole clusters are covered, freeing what they held.
func (img *Image) WriteZeroes(off, n int64) error { return errTODO }

// WriteCompressed writes one whole cluster, compressed with the image's
// compression type, at the cluster-aligned virtual offset off, which must be
// unallocated. data is len ClusterSize (or the rest of the disk for the last
// cluster). Data that does not compress is written uncompressed.
func (img *Image) WriteCompressed(off int64, data []byte) error { return errTODO }

// WriteCompressedRaw is WriteCompressed for data compressed already by the
// caller (with Compress), so compression can run on many goroutines.
func (img *Image) WriteCompressedRaw(off int64, compressed []byte, plain []byte) error {
	return errTODO
}

// Status returns the extent that starts at off, at most n bytes long, as
// this image alone describes it (ExtentBacking for what reads from below).
func (img *Image) Status(off, n int64) (Extent, error) { return Extent{}, errTODO }

// Resize grows the virtual disk to size bytes.
func (img *Image) Resize(size int64) error { return errTODO }

// Flush writes all cached metadata in crash-safe order and syncs the file:
// everything written before Flush returns survives a crash.
func (img *Image) Flush() error { return errTODO }

// Close flushes and closes the image, its file and its backing image.
func (img *Image) Close() error { return errTODO }
