package qcow2

// Table entries. Every entry of the L1 table, of L2 tables, of the refcount
// table and of bitmap tables is read and written through the types in this
// file: the masks and shifts of docs/interop/qcow2.txt are written here and
// nowhere else.

import "encoding/binary"

// Bits and masks of table entries.
const (
	oflagCopied     = 1 << 63 // QCOW_OFLAG_COPIED: refcount exactly 1, writable in place
	oflagCompressed = 1 << 62 // QCOW_OFLAG_COMPRESSED
	oflagZero       = 1 << 0  // QCOW_OFLAG_ZERO (standard L2 entries of version 3)

	l1OffsetMask       = 0x00fffffffffffe00
	l1ReservedMask     = 0x7f000000000001ff
	l2OffsetMask       = 0x00fffffffffffe00
	l2ReservedMask     = 0x3f000000000001fe // standard clusters; bit 0 is the zero flag
	rtOffsetMask       = 0xfffffffffffffe00
	rtReservedMask     = 0x1ff
	bitmapOffsetMask   = 0x00fffffffffffe00
	bitmapReservedMask = 0xff000000000001fe
	bitmapAllOnes      = 1 << 0 // an unallocated bitmap cluster reads as all ones
)

// l1Entry is one entry of an L1 table: the host offset of an L2 table.
type l1Entry uint64

// newL1Entry is the entry of an L2 table at host offset off that nothing
// else references.
func newL1Entry(off int64) l1Entry { return l1Entry(off) | oflagCopied }

// l2Offset is the host offset of the L2 table; 0 if none.
func (e l1Entry) l2Offset() int64 { return int64(e & l1OffsetMask) }

// copied reports OFLAG_COPIED: the L2 table's refcount is exactly 1.
func (e l1Entry) copied() bool { return e&oflagCopied != 0 }

// withCopied returns e with OFLAG_COPIED set to c.
func (e l1Entry) withCopied(c bool) l1Entry {
	if c {
		return e | oflagCopied
	}
	return e &^ oflagCopied
}

// reserved returns the bits of e that must be zero.
func (e l1Entry) reserved() uint64 { return uint64(e) & l1ReservedMask }

// l2Entry is the cluster descriptor of an L2 entry: the whole entry of a
// standard L2 table, the first half of an extended one. Its layout depends
// on compressed(): a standard descriptor holds a host cluster offset and the
// zero flag, a compressed one the byte offset and sector count of the
// compressed data.
type l2Entry uint64

// dataEntry is the descriptor of a data cluster at host offset off that
// nothing else references.
func dataEntry(off int64) l2Entry { return l2Entry(off) | oflagCopied }

func (e l2Entry) compressed() bool { return e&oflagCompressed != 0 }

// copied reports OFLAG_COPIED: the data cluster's refcount is exactly 1.
// It is never set on compressed descriptors.
func (e l2Entry) copied() bool { return e&oflagCopied != 0 }

// withCopied returns e with OFLAG_COPIED set to c.
func (e l2Entry) withCopied(c bool) l2Entry {
	if c {
		return e | oflagCopied
	}
	return e &^ oflagCopied
}

// offset is the host offset of a standard descriptor's cluster, 0 if none.
func (e l2Entry) offset() int64 { return int64(e & l2OffsetMask) }

// zero reports the standard descriptor's zero flag (version 3; reserved with
// extended L2 entries, whose bitmap says which subclusters read as zeros).
func (e l2Entry) zero() bool { return e&oflagZero != 0 }

// reserved returns the reserved bits of a standard descriptor.
func (e l2Entry) reserved() uint64 { return uint64(e) & l2ReservedMask }

// compressedShift is the bit where a compressed descriptor's sector count
// starts: x = 62 - (cluster_bits - 8) in docs/interop/qcow2.txt. Bits 0 to
// x-1 hold the host byte offset, bits x to 61 the number of additional
// 512-byte sectors.
func compressedShift(clusterBits uint32) uint32 { return 62 - (clusterBits - 8) }

// compressedRange decodes a compressed descriptor into the host byte offset
// of the compressed data and its length rounded up to whole sectors, as QEMU's
// qcow2_parse_compressed_l2_entry does.
func (e l2Entry) compressedRange(clusterBits uint32) (off, size int64) {
	shift := compressedShift(clusterBits)
	offMask := uint64(1)<<shift - 1
	sizeMask := uint64(1)<<(clusterBits-8) - 1
	off = int64(uint64(e) & offMask)
	sectors := int64((uint64(e)>>shift)&sizeMask) + 1
	size = sectors*512 - off&511
	return off, size
}

// compressedEntry encodes a compressed descriptor for size bytes at host byte offset off.
func compressedEntry(off, size int64, clusterBits uint32) l2Entry {
	extra := uint64((off+size-1)/512 - off/512)
	return l2Entry(oflagCompressed | extra<<compressedShift(clusterBits) | uint64(off))
}

// clusterType classifies a descriptor as QEMU's qcow2_get_cluster_type does.
type clusterType int

const (
	clusterUnallocated clusterType = iota // reads from the backing file, or as zeros
	clusterZeroPlain                      // zero flag, no host cluster
	clusterZeroAlloc                      // zero flag, with a preallocated host cluster
	clusterNormal                         // a host cluster (with extended L2: some subclusters may not be allocated)
	clusterCompressed
)

// typ returns e's cluster type in an image with (extL2) or without
// extended L2 entries.
func (e l2Entry) typ(extL2 bool) clusterType {
	switch {
	case e.compressed():
		return clusterCompressed
	case e.zero() && !extL2:
		if e.offset() != 0 {
			return clusterZeroAlloc
		}
		return clusterZeroPlain
	case e.offset() == 0:
		return clusterUnallocated
	}
	return clusterNormal
}

// subclusters is the number of subclusters of a cluster with extended L2 entries.
const subclusters = 32

// l2Bitmap is the second half of an extended L2 entry: bit s (0 to 31) says
// that subcluster s is allocated, bit 32+s that it reads as zeros.
type l2Bitmap uint64

const (
	bitmapAllAlloc l2Bitmap = 1<<subclusters - 1
	bitmapAllZero  l2Bitmap = bitmapAllAlloc << subclusters
)

// alloc returns the allocation bits, subcluster s in bit s.
func (b l2Bitmap) alloc() uint32 { return uint32(b) }

// zero returns the reads-as-zeros bits, subcluster s in bit s.
func (b l2Bitmap) zero() uint32 { return uint32(b >> subclusters) }

// l2Desc is one L2 entry: its descriptor and, in an image with extended L2
// entries, its subcluster bitmap (0 otherwise).
type l2Desc struct {
	entry  l2Entry
	bitmap l2Bitmap
}

// l2EntryBytes is the size of one L2 entry.
func l2EntryBytes(extL2 bool) int64 {
	if extL2 {
		return 16
	}
	return 8
}

// l2At returns entry i of the L2 table in b. An entry that b does not hold
// whole (a table cut short by the end of the file) reads as unallocated.
func l2At(b []byte, i int64, extL2 bool) l2Desc {
	sz := l2EntryBytes(extL2)
	if i < 0 || (i+1)*sz > int64(len(b)) {
		return l2Desc{}
	}
	d := l2Desc{entry: l2Entry(binary.BigEndian.Uint64(b[i*sz:]))}
	if extL2 {
		d.bitmap = l2Bitmap(binary.BigEndian.Uint64(b[i*sz+8:]))
	}
	return d
}

// putL2 sets entry i of the L2 table in b; without extended L2 entries
// d.bitmap must be 0.
func putL2(b []byte, i int64, extL2 bool, d l2Desc) {
	sz := l2EntryBytes(extL2)
	binary.BigEndian.PutUint64(b[i*sz:], uint64(d.entry))
	if extL2 {
		binary.BigEndian.PutUint64(b[i*sz+8:], uint64(d.bitmap))
	}
}

// refTableEntry is one entry of the refcount table: the offset of a refcount block.
type refTableEntry uint64

// blockOffset is the host offset of the refcount block, 0 if none.
func (e refTableEntry) blockOffset() int64 { return int64(e & rtOffsetMask) }

// reserved returns the bits of e that must be zero.
func (e refTableEntry) reserved() uint64 { return uint64(e) & rtReservedMask }

// bitmapTableEntry is one entry of a persistent dirty bitmap's table: the
// offset of a cluster of bitmap data.
type bitmapTableEntry uint64

// offset is the host offset of the bitmap data cluster, 0 if none.
func (e bitmapTableEntry) offset() int64 { return int64(e & bitmapOffsetMask) }

// allOnes reports that an unallocated data cluster reads as all ones.
func (e bitmapTableEntry) allOnes() bool { return e&bitmapAllOnes != 0 }

// reserved returns the bits of e that must be zero.
func (e bitmapTableEntry) reserved() uint64 { return uint64(e) & bitmapReservedMask }

// tableEntry returns entry i of a table of 8-byte entries held in b; an
// entry that b does not hold whole reads as zero.
func tableEntry[E ~uint64](b []byte, i int64) E {
	if i < 0 || i*8+8 > int64(len(b)) {
		return 0
	}
	return E(binary.BigEndian.Uint64(b[i*8:]))
}

// decodeTable decodes a table of 8-byte entries; a partial last entry is dropped.
func decodeTable[E ~uint64](b []byte) []E {
	t := make([]E, len(b)/8)
	for i := range t {
		t[i] = E(binary.BigEndian.Uint64(b[i*8:]))
	}
	return t
}

// encodeTable encodes a table of 8-byte entries.
func encodeTable[E ~uint64](t []E) []byte {
	b := make([]byte, len(t)*8)
	for i, e := range t {
		binary.BigEndian.PutUint64(b[i*8:], uint64(e))
	}
	return b
}
