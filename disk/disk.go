// Package disk opens, creates, converts, checks, commits and resizes the
// disk images of vmtui's virtual machines: qcow2 (with its backing chain) and
// raw, detected by content, never by file name.
//
// # Security
//
// Images are untrusted input. Opening one never panics and never allocates
// more than a bounded multiple of its metadata (see package qcow2); a backing
// chain is limited to MaxChainDepth images and a loop is an error. Backing
// files are always opened read-only.
package disk

import (
	"io"
	"vmtui/disk/qcow2"
)

// Format is an image format.
type Format string

const (
	FormatQcow2 Format = "qcow2"
	FormatRaw   Format = "raw"
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
