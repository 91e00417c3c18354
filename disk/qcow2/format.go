// Package qcow2 reads, writes, creates and checks QEMU copy-on-write
// version 2 and 3 disk images.
//
// The on-disk format is specified in QEMU's docs/interop/qcow2.txt. This
// file holds the on-disk structures and constants; reader.go the read path,
// writer.go allocation and the ordered metadata write-back, check.go the
// consistency check.
//
// # Security
//
// Every count and offset read from an image is checked against the file's
// size and against QEMU's own limits before anything is allocated, so a
// hostile image can make Open or ReadAt fail with a *FormatError but cannot
// make them panic or allocate more than a small multiple of the image's own
// metadata. Compressed clusters are decompressed into a buffer of exactly one
// cluster. Backing files are opened by the caller's BackingOpener, which is
// where chain depth and loops are bounded.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Magic is the first four bytes of every qcow2 image: "QFI\xfb".
const Magic = 0x514649fb

// Limits, as QEMU 7.2 enforces them.
const (
	MinClusterBits     = 9  // 512 bytes
	MaxClusterBits     = 21 // 2 MiB
	DefaultClusterBits = 16 // 64 KiB

	maxBackingNameLen = 1023
	maxL1Bytes        = 32 << 20 // QCOW_MAX_L1_SIZE
	maxRefTableBytes  = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxSnapshots      = 65536
	maxExtensionBytes = 1 << 20 // a sanity bound; extensions live in cluster 0
)

// Header lengths.
const (
	v2HeaderLength = 72
	v3HeaderLength = 104 // without the compression_type field
	headerLength   = 112 // what QEMU and vmtui write: with compression_type and padding
)

// Incompatible feature bits (header bytes 72-79).
const (
	IncompatDirty              = 1 << 0
	IncompatCorrupt            = 1 << 1
	IncompatDataFile           = 1 << 2
	IncompatCompression        = 1 << 3
	IncompatExtendedL2         = 1 << 4
	incompatKnown       uint64 = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression | IncompatExtendedL2
)

// Compatible feature bits (header bytes 80-87).
const CompatLazyRefcounts = 1 << 0

// Autoclear feature bits (header bytes 88-95).
const (
	AutoclearBitmaps            = 1 << 0
	AutoclearRawDataFile        = 1 << 1
	autoclearKnown       uint64 = AutoclearBitmaps | AutoclearRawDataFile
)

// Header extension types.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441
)

// CompressionType is the algorithm of compressed clusters (header byte 104).
type CompressionType uint8

const (
	CompressionZlib CompressionType = 0 // raw deflate, no zlib header
	CompressionZstd CompressionType = 1
)

func (c CompressionType) String() string {
	switch c {
	case CompressionZlib:
		return "zlib"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression type %d", uint8(c))
}

// ParseCompressionType maps "zlib" (or "deflate") and "zstd" to a CompressionType.
func ParseCompressionType(s string) (CompressionType, error) {
	switch strings.ToLower(s) {
	case "zlib", "deflate", "":
		return CompressionZlib, nil
	case "zstd":
		return CompressionZstd, nil
	}
	return 0, fmt.Errorf("qcow2: unknown compression type %q (want zlib or zstd)", s)
}

// Table entry bits.
const (
	oflagCopied     = 1 << 63
	oflagCompressed = 1 << 62
	oflagZero       = 1 << 0

	l1OffsetMask   = 0x00fffffffffffe00
	l1ReservedMask = 0x7f000000000001ff
	l2OffsetMask   = 0x00fffffffffffe00
	l2ReservedMask = 0x3f000000000001fe // standard clusters; bit 0 is the zero flag
	rtOffsetMask   = 0xfffffffffffffe00
	rtReservedMask = 0x1ff
)

// l1Entry is one entry of the L1 table: the offset of an L2 table.
type l1Entry uint64

func (e l1Entry) l2Offset() int64  { return int64(e & l1OffsetMask) }
func (e l1Entry) copied() bool     { return e&oflagCopied != 0 }
func (e l1Entry) reserved() uint64 { return uint64(e) & l1ReservedMask }

// l2Entry is the first (or only) word of an L2 table entry: a cluster descriptor.
type l2Entry uint64

func (e l2Entry) compressed() bool { return e&oflagCompressed != 0 }
func (e l2Entry) copied() bool     { return e&oflagCopied != 0 }

// offset is the host offset of a standard (uncompressed) cluster, 0 if none.
func (e l2Entry) offset() int64 { return int64(e & l2OffsetMask) }

// zero reports the standard descriptor's zero flag (v3, not with extended L2).
func (e l2Entry) zero() bool { return e&oflagZero != 0 }

// reserved returns the reserved bits of a standard descriptor.
func (e l2Entry) reserved() uint64 { return uint64(e) & l2ReservedMask }

// compressedRange decodes a compressed descriptor into the host byte offset
// of the compressed data and its length rounded up to whole sectors, as QEMU's
// qcow2_parse_compressed_l2_entry does.
func (e l2Entry) compressedRange(clusterBits uint32) (off, size int64) {
	shift := 62 - (clusterBits - 8)
	offMask := uint64(1)<<shift - 1
	sizeMask := uint64(1)<<(clusterBits-8) - 1
	off = int64(uint64(e) & offMask)
	sectors := int64((uint64(e)>>shift)&sizeMask) + 1
	size = sectors*512 - off&511
	return off, size
}

// compressedEntry encodes a compressed descriptor for size bytes at host byte offset off.
func compressedEntry(off, size int64, clusterBits uint32) l2Entry {
	shift := 62 - (clusterBits - 8)
	extra := uint64((off+size-1)/512 - off/512)
	return l2Entry(oflagCompressed | extra<<shift | uint64(off))
}

// Subcluster bitmap of an extended L2 entry.
const (
	subclusters         = 32
	subAllocMask        = 0x00000000ffffffff
	subZeroShift        = 32
	subAllocAll  uint64 = subAllocMask
)

// refTableEntry is one entry of the refcount table: the offset of a refcount block.
type refTableEntry uint64

func (e refTableEntry) blockOffset() int64 { return int64(e & rtOffsetMask) }
func (e refTableEntry) reserved() uint64   { return uint64(e) & rtReservedMask }

// Header is the qcow2 header of cluster 0, with its extensions.
type Header struct {
	Version               uint32
	BackingFileOffset     uint64 // byte offset of the backing file name; 0 if none
	BackingFileSize       uint32 // length of the name in bytes, not NUL-terminated
	ClusterBits           uint32 // log2 of the cluster size in bytes
	Size                  uint64 // virtual disk size in bytes
	CryptMethod           uint32 // 0 none, 1 AES, 2 LUKS
	L1Size                uint32 // entries in the active L1 table
	L1TableOffset         uint64 // byte offset, cluster aligned
	RefcountTableOffset   uint64 // byte offset, cluster aligned
	RefcountTableClusters uint32 // size of the refcount table in clusters
	NbSnapshots           uint32
	SnapshotsOffset       uint64 // byte offset, cluster aligned

	// Version 3 fields; for version 2 they read as zero, with RefcountOrder 4.
	IncompatibleFeatures uint64
	CompatibleFeatures   uint64
	AutoclearFeatures    uint64
	RefcountOrder        uint32 // log2 of the refcount width in bits
	HeaderLength         uint32 // bytes of header before the extensions
	CompressionType      CompressionType

	// From the header extensions and the backing name.
	BackingFile   string
	BackingFormat string
	Features      []FeatureName // the feature name table, if present
	Bitmaps       *BitmapsExtension

	// unknownFields are additional header fields beyond byte 112 that this
	// package does not know; they are preserved when the header is rewritten.
	unknownFields []byte
	// unknownExts are extensions this package does not know, preserved in order.
	unknownExts []extension
}

// FeatureName is one entry of the feature name table extension.
type FeatureName struct {
	Type uint8 // 0 incompatible, 1 compatible, 2 autoclear
	Bit  uint8
	Name string
}

// BitmapsExtension locates the persistent dirty bitmaps directory.
type BitmapsExtension struct {
	Count           uint32
	DirectorySize   uint64
	DirectoryOffset uint64
}

type extension struct {
	typ  uint32
	data []byte
}

// ClusterSize returns the cluster size in bytes.
func (h *Header) ClusterSize() int64 { return 1 << h.ClusterBits }

// RefcountBits returns the width of a refcount in bits.
func (h *Header) RefcountBits() int { return 1 << h.RefcountOrder }

// ExtendedL2 reports whether L2 entries carry subcluster bitmaps.
func (h *Header) ExtendedL2() bool { return h.IncompatibleFeatures&IncompatExtendedL2 != 0 }

// Dirty reports the dirty bit: refcounts may be inconsistent.
func (h *Header) Dirty() bool { return h.IncompatibleFeatures&IncompatDirty != 0 }

// Corrupt reports the corrupt bit.
func (h *Header) Corrupt() bool { return h.IncompatibleFeatures&IncompatCorrupt != 0 }

// LazyRefcounts reports the lazy refcounts compatible bit.
func (h *Header) LazyRefcounts() bool { return h.CompatibleFeatures&CompatLazyRefcounts != 0 }

// l2EntrySize is the size of one L2 entry in bytes.
func (h *Header) l2EntrySize() int64 {
	if h.ExtendedL2() {
		return 16
	}
	return 8
}

// l2Entries is the number of entries in one L2 table.
func (h *Header) l2Entries() int64 { return h.ClusterSize() / h.l2EntrySize() }

// l1EntriesFor returns the L1 size needed for a virtual size; it does not
// wrap for sizes near 2^64.
func (h *Header) l1EntriesFor(size uint64) uint64 {
	span := uint64(h.ClusterSize()) * uint64(h.l2Entries())
	n := size / span
	if size%span != 0 {
		n++
	}
	return n
}

// refcountBlockEntries is the number of refcounts in one refcount block.
func (h *Header) refcountBlockEntries() int64 {
	return h.ClusterSize() * 8 >> h.RefcountOrder
}

// FormatError reports a malformed image: what is wrong, and where.
type FormatError struct {
	Offset int64 // byte offset in the image file of the bad structure, or -1
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return "qcow2: " + e.Msg
	}
	return fmt.Sprintf("qcow2: %s (at byte %d)", e.Msg, e.Offset)
}

func formatErr(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// Sentinel errors.
var (
	ErrNotQcow2   = errors.New("qcow2: not a qcow2 image")
	ErrReadOnly   = errors.New("qcow2: image is open read-only")
	ErrClosed     = errors.New("qcow2: image is closed")
	ErrCorrupt    = errors.New("qcow2: image is marked corrupt; cannot be opened read/write (run vmtui disk check)")
	ErrOutOfRange = errors.New("qcow2: access beyond the end of the virtual disk")
)

// UnsupportedError names an image feature this package refuses.
type UnsupportedError struct {
	Feature string
}

func (e *UnsupportedError) Error() string {
	return "qcow2: unsupported image feature: " + e.Feature
}

// headerReader is what header parsing reads from.
type headerReader interface {
	ReadAt(p []byte, off int64) (int, error)
}

// ParseHeader reads and validates the header and header extensions of an
// image of fileSize bytes. It refuses what cannot be read safely: unknown
// incompatible features, encryption and external data files.
func ParseHeader(r headerReader, fileSize int64) (*Header, error) {
	return parseHeader(r, fileSize, false)
}

// tableFits reports whether n entries of entrySize bytes starting at off end
// at or before limit, in a way that cannot wrap around.
func tableFits(off, n, entrySize, limit uint64) bool {
	return off <= limit && n <= (limit-off)/entrySize
}

// parseHeader is ParseHeader. With lenient (for Check), the L1, refcount and
// snapshot tables may lie past the end of the file, as QEMU lets them: they
// read as zeros there, and Check reports the references past the end as
// corruptions. Lengths and offsets are still bounded so that no sum of them
// wraps, and nothing is allocated by this function beyond one cluster.
func parseHeader(r headerReader, fileSize int64, lenient bool) (*Header, error) {
	var buf [headerLength]byte
	if fileSize < v2HeaderLength {
		if fileSize >= 4 {
			if _, err := r.ReadAt(buf[:4], 0); err == nil && binary.BigEndian.Uint32(buf[:4]) != Magic {
				return nil, ErrNotQcow2
			}
		}
		return nil, formatErr(0, "file of %d bytes is too short for a header", fileSize)
	}
	n := int64(headerLength)
	if fileSize < n {
		n = fileSize
	}
	if _, err := r.ReadAt(buf[:n], 0); err != nil {
		return nil, fmt.Errorf("qcow2: read header: %w", err)
	}
	be := binary.BigEndian
	if be.Uint32(buf[0:]) != Magic {
		return nil, ErrNotQcow2
	}
	h := &Header{
		Version:               be.Uint32(buf[4:]),
		BackingFileOffset:     be.Uint64(buf[8:]),
		BackingFileSize:       be.Uint32(buf[16:]),
		ClusterBits:           be.Uint32(buf[20:]),
		Size:                  be.Uint64(buf[24:]),
		CryptMethod:           be.Uint32(buf[32:]),
		L1Size:                be.Uint32(buf[36:]),
		L1TableOffset:         be.Uint64(buf[40:]),
		RefcountTableOffset:   be.Uint64(buf[48:]),
		RefcountTableClusters: be.Uint32(buf[56:]),
		NbSnapshots:           be.Uint32(buf[60:]),
		SnapshotsOffset:       be.Uint64(buf[64:]),
	}
	switch h.Version {
	case 2:
		h.RefcountOrder = 4
		h.HeaderLength = v2HeaderLength
	case 3:
		if fileSize < v3HeaderLength {
			return nil, formatErr(0, "file of %d bytes is too short for a version 3 header", fileSize)
		}
		h.IncompatibleFeatures = be.Uint64(buf[72:])
		h.CompatibleFeatures = be.Uint64(buf[80:])
		h.AutoclearFeatures = be.Uint64(buf[88:])
		h.RefcountOrder = be.Uint32(buf[96:])
		h.HeaderLength = be.Uint32(buf[100:])
		if h.HeaderLength < v3HeaderLength || h.HeaderLength%8 != 0 {
			return nil, formatErr(100, "invalid header length %d (want a multiple of 8, at least 104)", h.HeaderLength)
		}
	default:
		return nil, &UnsupportedError{Feature: fmt.Sprintf("qcow2 version %d", h.Version)}
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, formatErr(20, "cluster size 2^%d is out of range (512 bytes to 2 MiB)", h.ClusterBits)
	}
	cs := h.ClusterSize()
	if int64(h.HeaderLength) > cs {
		return nil, formatErr(100, "header length %d exceeds the cluster size %d", h.HeaderLength, cs)
	}
	if int64(h.HeaderLength) > fileSize {
		return nil, formatErr(100, "header length %d exceeds the file size %d", h.HeaderLength, fileSize)
	}
	if h.RefcountOrder > 6 {
		return nil, formatErr(96, "refcount order %d is out of range (0 to 6)", h.RefcountOrder)
	}
	if h.HeaderLength > v3HeaderLength {
		h.CompressionType = CompressionType(buf[104])
	}
	if h.HeaderLength > headerLength {
		extra := make([]byte, h.HeaderLength-headerLength) // bounded by the cluster size
		if _, err := r.ReadAt(extra, headerLength); err != nil {
			return nil, fmt.Errorf("qcow2: read additional header fields: %w", err)
		}
		h.unknownFields = extra
	}

	// Features this package cannot honour.
	if unknown := h.IncompatibleFeatures &^ incompatKnown; unknown != 0 {
		return nil, &UnsupportedError{Feature: fmt.Sprintf("unknown incompatible feature bits %#x", unknown)}
	}
	if h.CryptMethod != 0 {
		name := map[uint32]string{1: "AES", 2: "LUKS"}[h.CryptMethod]
		if name == "" {
			name = fmt.Sprintf("method %d", h.CryptMethod)
		}
		return nil, &UnsupportedError{Feature: "encryption (" + name + ")"}
	}
	if h.IncompatibleFeatures&IncompatDataFile != 0 {
		return nil, &UnsupportedError{Feature: "external data file"}
	}
	if h.IncompatibleFeatures&IncompatCompression != 0 {
		if h.HeaderLength <= v3HeaderLength || h.CompressionType == CompressionZlib {
			return nil, formatErr(104, "compression type bit set without a compression type")
		}
	}
	if h.CompressionType > CompressionZstd {
		return nil, &UnsupportedError{Feature: h.CompressionType.String()}
	}
	if h.CompressionType != CompressionZlib && h.IncompatibleFeatures&IncompatCompression == 0 {
		return nil, formatErr(104, "compression type %s without the compression type feature bit", h.CompressionType)
	}
	if h.ExtendedL2() && h.ClusterBits < 14 {
		return nil, formatErr(20, "extended L2 entries need clusters of at least 16 KiB, have %d", cs)
	}

	// Table locations. Every check is of the form off > limit ||
	// n > (limit-off)/entrySize, which cannot wrap, and no offset may have
	// its top bit set: it would be a negative int64 file offset.
	limit := uint64(fileSize)
	if lenient {
		// As QEMU's qcow2_validate_table: tables may lie past the end of
		// the file (they read as zeros there), but must end before 2^63.
		limit = math.MaxInt64
	}
	if h.L1TableOffset > math.MaxInt64 {
		return nil, formatErr(40, "L1 table offset %#x is past 2^63", h.L1TableOffset)
	}
	if h.L1TableOffset%uint64(cs) != 0 {
		return nil, formatErr(40, "L1 table offset %#x is not cluster aligned", h.L1TableOffset)
	}
	if int64(h.L1Size)*8 > maxL1Bytes {
		return nil, formatErr(36, "L1 table of %d entries exceeds QEMU's limit of %d", h.L1Size, maxL1Bytes/8)
	}
	if h.L1Size > 0 && !tableFits(h.L1TableOffset, uint64(h.L1Size), 8, limit) {
		return nil, formatErr(40, "L1 table (%d entries at %#x) extends past the end of the file (%d bytes)", h.L1Size, h.L1TableOffset, fileSize)
	}
	if need := h.l1EntriesFor(h.Size); uint64(h.L1Size) < need {
		return nil, formatErr(36, "L1 table of %d entries is too small for a virtual size of %d bytes (need %d)", h.L1Size, h.Size, need)
	}
	if h.RefcountTableOffset > math.MaxInt64 {
		return nil, formatErr(48, "refcount table offset %#x is past 2^63", h.RefcountTableOffset)
	}
	if h.RefcountTableOffset%uint64(cs) != 0 {
		return nil, formatErr(48, "refcount table offset %#x is not cluster aligned", h.RefcountTableOffset)
	}
	if h.RefcountTableClusters == 0 {
		return nil, formatErr(56, "refcount table has no clusters")
	}
	if int64(h.RefcountTableClusters)<<h.ClusterBits > maxRefTableBytes {
		return nil, formatErr(56, "refcount table of %d clusters exceeds QEMU's limit of %d bytes", h.RefcountTableClusters, maxRefTableBytes)
	}
	// The refcount table's last cluster may be cut short by the end of
	// the file (QEMU does not pad the file's last cluster).
	rtLimit := limit
	if !lenient {
		rtLimit += uint64(cs)
	}
	if !tableFits(h.RefcountTableOffset, uint64(h.RefcountTableClusters), uint64(cs), rtLimit) {
		return nil, formatErr(48, "refcount table (%d clusters at %#x) extends past the end of the file (%d bytes)", h.RefcountTableClusters, h.RefcountTableOffset, fileSize)
	}
	if h.NbSnapshots > maxSnapshots {
		return nil, formatErr(60, "%d snapshots exceed QEMU's limit of %d", h.NbSnapshots, maxSnapshots)
	}
	if h.NbSnapshots > 0 {
		snapLimit := limit
		if !lenient {
			// The table's entries have variable sizes: only its start
			// must lie inside the file.
			snapLimit = math.MaxInt64
		}
		if h.SnapshotsOffset%uint64(cs) != 0 || (!lenient && h.SnapshotsOffset >= uint64(fileSize)) ||
			!tableFits(h.SnapshotsOffset, uint64(h.NbSnapshots), checkSnapshotHeader, snapLimit) {
			return nil, formatErr(64, "snapshot table offset %#x is unaligned or past the end of the file", h.SnapshotsOffset)
		}
	}

	// The backing file name lies in cluster 0, after the header.
	if h.BackingFileOffset != 0 {
		if h.BackingFileSize > maxBackingNameLen {
			return nil, formatErr(16, "backing file name of %d bytes exceeds %d", h.BackingFileSize, maxBackingNameLen)
		}
		if h.BackingFileOffset < uint64(h.HeaderLength) || !tableFits(h.BackingFileOffset, uint64(h.BackingFileSize), 1, uint64(min(cs, fileSize))) {
			return nil, formatErr(8, "backing file name (%d bytes at %d) is outside the header cluster", h.BackingFileSize, h.BackingFileOffset)
		}
	}

	if err := h.parseExtensions(r, fileSize); err != nil {
		return nil, err
	}

	if h.BackingFileOffset != 0 {
		name := make([]byte, h.BackingFileSize) // at most 1023 bytes, checked above
		if _, err := r.ReadAt(name, int64(h.BackingFileOffset)); err != nil {
			return nil, fmt.Errorf("qcow2: read backing file name: %w", err)
		}
		h.BackingFile = string(name)
	}
	return h, nil
}

// parseExtensions reads the header extensions that follow the header.
func (h *Header) parseExtensions(r headerReader, fileSize int64) error {
	// Extensions end at the backing file name, or at the end of cluster 0.
	end := h.ClusterSize()
	if h.BackingFileOffset != 0 && h.BackingFileOffset < uint64(end) { // ParseHeader bounded it by the cluster
		end = int64(h.BackingFileOffset)
	}
	if end > fileSize {
		end = fileSize
	}
	off := int64(h.HeaderLength)
	var hdr [8]byte
	for off+8 <= end {
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return fmt.Errorf("qcow2: read header extension at %d: %w", off, err)
		}
		typ := binary.BigEndian.Uint32(hdr[0:])
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		if typ == extEnd {
			return nil
		}
		if off+8+n > end {
			return formatErr(off, "header extension %#x of %d bytes runs past the header cluster", typ, n)
		}
		data := make([]byte, n) // bounded by the cluster size above
		if _, err := r.ReadAt(data, off+8); err != nil {
			return fmt.Errorf("qcow2: read header extension at %d: %w", off, err)
		}
		switch typ {
		case extBackingFormat:
			h.BackingFormat = string(data)
		case extFeatureTable:
			for i := 0; i+48 <= len(data); i += 48 {
				name := data[i+2 : i+48]
				if j := indexByte(name, 0); j >= 0 {
					name = name[:j]
				}
				h.Features = append(h.Features, FeatureName{Type: data[i], Bit: data[i+1], Name: string(name)})
			}
		case extBitmaps:
			if len(data) < 24 {
				return formatErr(off, "bitmaps extension of %d bytes is too short", n)
			}
			h.Bitmaps = &BitmapsExtension{
				Count:           binary.BigEndian.Uint32(data[0:]),
				DirectorySize:   binary.BigEndian.Uint64(data[8:]),
				DirectoryOffset: binary.BigEndian.Uint64(data[16:]),
			}
		case extCrypto:
			return &UnsupportedError{Feature: "encryption header"}
		case extDataFile:
			return &UnsupportedError{Feature: "external data file " + fmt.Sprintf("%q", data)}
		default:
			h.unknownExts = append(h.unknownExts, extension{typ: typ, data: data})
		}
		off += 8 + (n+7)&^7
	}
	return nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// featureTable is the feature name table QEMU 7.2 writes.
var featureTable = []FeatureName{
	{0, 0, "dirty bit"},
	{0, 1, "corrupt bit"},
	{0, 2, "external data file"},
	{0, 3, "compression type"},
	{0, 4, "extended L2 entries"},
	{1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},
	{2, 1, "raw external data"},
}

// marshal renders cluster 0: the header, its extensions and the backing
// file name, as QEMU lays them out. It sets BackingFileOffset and
// BackingFileSize from BackingFile, and HeaderLength for version 3.
func (h *Header) marshal() ([]byte, error) {
	cs := h.ClusterSize()
	if len(h.BackingFile) > maxBackingNameLen {
		return nil, fmt.Errorf("qcow2: backing file name of %d bytes exceeds %d", len(h.BackingFile), maxBackingNameLen)
	}
	var b []byte
	be := binary.BigEndian
	hl := v2HeaderLength
	if h.Version >= 3 {
		hl = headerLength + len(h.unknownFields)
	}
	h.HeaderLength = uint32(hl)
	b = make([]byte, hl, cs)
	be.PutUint32(b[0:], Magic)
	be.PutUint32(b[4:], h.Version)
	be.PutUint32(b[20:], h.ClusterBits)
	be.PutUint64(b[24:], h.Size)
	be.PutUint32(b[32:], h.CryptMethod)
	be.PutUint32(b[36:], h.L1Size)
	be.PutUint64(b[40:], h.L1TableOffset)
	be.PutUint64(b[48:], h.RefcountTableOffset)
	be.PutUint32(b[56:], h.RefcountTableClusters)
	be.PutUint32(b[60:], h.NbSnapshots)
	be.PutUint64(b[64:], h.SnapshotsOffset)
	if h.Version >= 3 {
		be.PutUint64(b[72:], h.IncompatibleFeatures)
		be.PutUint64(b[80:], h.CompatibleFeatures)
		be.PutUint64(b[88:], h.AutoclearFeatures)
		be.PutUint32(b[96:], h.RefcountOrder)
		be.PutUint32(b[100:], h.HeaderLength)
		b[104] = byte(h.CompressionType)
		copy(b[headerLength:], h.unknownFields)
	}
	ext := func(typ uint32, data []byte) {
		var hd [8]byte
		be.PutUint32(hd[0:], typ)
		be.PutUint32(hd[4:], uint32(len(data)))
		b = append(b, hd[:]...)
		b = append(b, data...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	if h.BackingFile != "" && h.BackingFormat != "" {
		ext(extBackingFormat, []byte(h.BackingFormat))
	}
	if h.Version >= 3 && cs > 4096 {
		t := make([]byte, 48*len(featureTable))
		for i, f := range featureTable {
			t[i*48] = f.Type
			t[i*48+1] = f.Bit
			copy(t[i*48+2:i*48+48], f.Name)
		}
		ext(extFeatureTable, t)
	}
	if h.Bitmaps != nil {
		d := make([]byte, 24)
		be.PutUint32(d[0:], h.Bitmaps.Count)
		be.PutUint64(d[8:], h.Bitmaps.DirectorySize)
		be.PutUint64(d[16:], h.Bitmaps.DirectoryOffset)
		ext(extBitmaps, d)
	}
	for _, e := range h.unknownExts {
		ext(e.typ, e.data)
	}
	if h.Version >= 3 || len(b) > hl || h.BackingFile != "" {
		ext(extEnd, nil)
	}
	if h.BackingFile != "" {
		h.BackingFileOffset = uint64(len(b))
		h.BackingFileSize = uint32(len(h.BackingFile))
		b = append(b, h.BackingFile...)
	} else {
		h.BackingFileOffset, h.BackingFileSize = 0, 0
	}
	be.PutUint64(b[8:], h.BackingFileOffset)
	be.PutUint32(b[16:], h.BackingFileSize)
	if int64(len(b)) > cs {
		return nil, fmt.Errorf("qcow2: header, extensions and backing file name (%d bytes) do not fit in one %d-byte cluster", len(b), cs)
	}
	return b, nil
}

// refcount returns entry i of a refcount block of 2^order-bit entries.
// Sub-byte widths keep entry 0 in the least significant bits; wider ones are
// big-endian.
func refcount(block []byte, i int64, order uint32) uint64 {
	switch order {
	case 0, 1, 2:
		bits := uint(1) << order
		per := 8 / int64(bits)
		shift := uint(i%per) * bits
		return uint64(block[i/per]>>shift) & (1<<bits - 1)
	case 3:
		return uint64(block[i])
	case 4:
		return uint64(binary.BigEndian.Uint16(block[i*2:]))
	case 5:
		return uint64(binary.BigEndian.Uint32(block[i*4:]))
	default:
		return binary.BigEndian.Uint64(block[i*8:])
	}
}

// setRefcount sets entry i of a refcount block; v must fit in 2^order bits.
func setRefcount(block []byte, i int64, order uint32, v uint64) {
	switch order {
	case 0, 1, 2:
		bits := uint(1) << order
		per := 8 / int64(bits)
		shift := uint(i%per) * bits
		mask := byte(1<<bits-1) << shift
		block[i/per] = block[i/per]&^mask | byte(v<<shift)&mask
	case 3:
		block[i] = byte(v)
	case 4:
		binary.BigEndian.PutUint16(block[i*2:], uint16(v))
	case 5:
		binary.BigEndian.PutUint32(block[i*4:], uint32(v))
	default:
		binary.BigEndian.PutUint64(block[i*8:], v)
	}
}

// maxRefcount is the largest refcount a 2^order-bit entry holds.
func maxRefcount(order uint32) uint64 {
	if order >= 6 {
		return ^uint64(0)
	}
	return 1<<(uint(1)<<order) - 1
}
