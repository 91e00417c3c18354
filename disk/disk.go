// Package disk opens, creates, converts, checks, commits and resizes the
// disk images of vmtui's virtual machines: qcow2 and the original qcow
// (version 1; package qcow), with their backing chains, and raw, detected by
// content, never by file name.
//
// Open returns an Image whose Status resolves the whole backing chain;
// Create, Convert, Info, Check, Commit and Resize work on paths, as the
// qemu-img subcommands of the same names do.
//
// # Security
//
// Images are untrusted input. Opening one never panics and never allocates
// more than a bounded multiple of its metadata (see package qcow2); a backing
// chain is limited to MaxChainDepth images and a loop (the same file by
// device and inode, whatever its name) is an error. Backing files are always
// opened read-only, except the one Commit writes into. A backing file name is
// resolved relative to the directory of the image that names it, so an image
// can make vmtui read any file the user can read, as it can make QEMU do; the
// backing format recorded in the image is honoured, so a raw backing file is
// never probed as qcow2. Only regular files and block devices are opened, in
// a way that cannot block: a FIFO or another special file, as an image or a
// backing file, is refused at once.
//
// Every image file is locked while it is open as QEMU locks the images it
// uses (lock.go), so that vmtui never writes an image a running QEMU uses,
// nor reads one it writes (but with ForceShare), and QEMU does not start on
// an image vmtui is writing.
package disk

import (
	"errors"
	"io"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/imageformat"
)

// Format is an image format (the names are package imageformat's, which
// config shares without importing the engine).
type Format = imageformat.Format

const (
	FormatQcow2 = imageformat.Qcow2
	FormatRaw   = imageformat.Raw
	FormatQcow  = imageformat.Qcow // the original qcow, version 1
)

// MaxChainDepth bounds the images in a backing chain, the top one included.
const MaxChainDepth = 16

// Image is an open disk image of any supported format.
type Image interface {
	io.ReaderAt
	io.WriterAt
	// Size is the virtual size in bytes.
	Size() int64
	// Format is the image's format.
	Format() Format
	// Status returns the extent that starts at off (0 <= off < Size()), at
	// most n bytes long, resolved through the whole backing chain: its Kind
	// is ExtentData or ExtentZero, never ExtentBacking. Ranges unallocated
	// down to the bottom of the chain, and ranges past the end of a shorter
	// backing image, are ExtentZero.
	Status(off, n int64) (Extent, error)
	// Flush makes everything written so far durable.
	Flush() error
	// Close flushes and releases the image and its backing chain.
	Close() error
}

// Extent is a run of the virtual disk with one status; see qcow2.Extent.
type Extent = qcow2.Extent

// Status kinds of an Extent.
const (
	ExtentData    = qcow2.ExtentData
	ExtentZero    = qcow2.ExtentZero
	ExtentBacking = qcow2.ExtentBacking
)

// ErrCheckNotSupported is returned by Check for formats that have no
// metadata to check (raw); qemu-img check exits 63 in that case.
var ErrCheckNotSupported = errors.New("disk: format does not support checks")

// ErrShrink is returned by Resize for a size below the current one.
var ErrShrink = errors.New("disk: shrinking an image is not supported")
