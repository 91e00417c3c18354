package qcow2

import (
	"io"
	"io/fs"
)

// File is the storage an image lives in; *os.File satisfies it.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// Backing is the image below a qcow2 image in its backing chain: what
// unallocated clusters read from. Reads past its Size read as zeros.
type Backing interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// BackingStatuser is implemented by backing images that can tell which ranges
// hold data, so that a chain's status can be resolved without reading.
type BackingStatuser interface {
	Status(off, n int64) (Extent, error)
}

// BackingOpener opens the backing file named in an image's header. name is
// the name as stored (relative names are relative to the directory of the
// image that names them); format is the backing format extension's value, or
// "" when the image does not say. The opener bounds chain depth and detects
// loops; it must open the backing image read-only.
type BackingOpener func(name, format string) (Backing, error)

// Options control Open.
type Options struct {
	ReadOnly bool
	// OpenBacking opens the backing file. When nil, an image with a backing
	// file fails to open with an error naming it.
	OpenBacking BackingOpener
	// CacheSize bounds the bytes of L2 tables kept in memory; 0 means 32 MiB.
	CacheSize int64
}

// CreateOptions describe a new image.
type CreateOptions struct {
	Size          int64  // virtual size in bytes; rounded up to 512
	ClusterSize   int64  // 0 means 64 KiB; a power of two from 512 to 2 MiB
	RefcountBits  int    // 0 means 16; a power of two from 1 to 64
	Compat        string // "1.1" (version 3, the default) or "0.10" (version 2)
	BackingFile   string // name stored in the header, as given
	BackingFormat string // "qcow2", "raw" or "qcow"; required with BackingFile
	// Preallocation is "off" (default) or "metadata": L2 tables and data
	// clusters allocated for the whole disk, reading as zeros.
	Preallocation   string
	CompressionType CompressionType
	LazyRefcounts   bool
}

// ExtentKind classifies a range of the virtual disk.
type ExtentKind int

const (
	// ExtentData is allocated in this image and holds data.
	ExtentData ExtentKind = iota
	// ExtentZero reads as zeros and is described by this image (a zero
	// cluster or subcluster, or unallocated with nothing beneath).
	ExtentZero
	// ExtentBacking is not allocated here: it reads from the backing image.
	ExtentBacking
)

func (k ExtentKind) String() string {
	switch k {
	case ExtentData:
		return "data"
	case ExtentZero:
		return "zero"
	case ExtentBacking:
		return "backing"
	}
	return "unknown"
}

// Extent is a run of the virtual disk with one status.
type Extent struct {
	Offset     int64 // virtual offset
	Length     int64
	Kind       ExtentKind
	Compressed bool // data held in compressed clusters
}

// CheckResult is the outcome of Check, with qemu-img check's counters.
type CheckResult struct {
	Corruptions        int
	Leaks              int
	CheckErrors        int
	CorruptionsFixed   int
	LeaksFixed         int
	TotalClusters      int64
	AllocatedClusters  int64
	FragmentedClusters int64
	CompressedClusters int64
	ImageEndOffset     int64
	// Messages are the detail lines, in the words qemu-img check uses
	// ("ERROR cluster 5 refcount=0 reference=1", "Leaked cluster 9 refcount=1 reference=0").
	Messages []string
}

// RepairMode selects what Check repairs.
type RepairMode int

const (
	RepairNone  RepairMode = iota
	RepairLeaks            // decrement over-counted refcounts
	RepairAll              // also raise refcounts that are too low and fix COPIED flags
)
