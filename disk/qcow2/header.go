package qcow2

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Header is the qcow2 header of cluster 0, with its extensions.
type Header struct {
	Version               uint32 // 2 or 3
	BackingFileOffset     uint64 // byte offset of the backing file name; 0 if none
	BackingFileSize       uint32 // length of the name in bytes, not NUL-terminated
	ClusterBits           uint32 // log2 of the cluster size in bytes
	Size                  uint64 // virtual disk size in bytes
	CryptMethod           uint32 // 0 none, 1 AES, 2 LUKS
	L1Size                uint32 // entries (8 bytes each) in the active L1 table
	L1TableOffset         uint64 // byte offset, cluster aligned
	RefcountTableOffset   uint64 // byte offset, cluster aligned
	RefcountTableClusters uint32 // size of the refcount table in clusters
	NbSnapshots           uint32 // entries in the snapshot table
	SnapshotsOffset       uint64 // byte offset, cluster aligned

	// Version 3 fields; for version 2 they read as zero, with RefcountOrder 4.
	IncompatibleFeatures uint64 // Incompat* bits
	CompatibleFeatures   uint64 // Compat* bits
	AutoclearFeatures    uint64 // Autoclear* bits
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

// headerField is the place of one fixed field of the header.
type headerField struct {
	off, width int // in bytes; the value is big-endian
}

func (f headerField) end() int { return f.off + f.width }

// fieldErr is a *FormatError about header field f.
func fieldErr(f headerField, format string, args ...any) error {
	return formatErr(int64(f.off), format, args...)
}

// The fixed fields of the header (docs/interop/qcow2.txt, "Header"): the
// one table of their offsets, by which the header is parsed, marshalled and
// rewritten field by field.
var (
	fieldMagic                 = headerField{0, 4}
	fieldVersion               = headerField{4, 4}
	fieldBackingFileOffset     = headerField{8, 8}
	fieldBackingFileSize       = headerField{16, 4}
	fieldClusterBits           = headerField{20, 4}
	fieldSize                  = headerField{24, 8}
	fieldCryptMethod           = headerField{32, 4}
	fieldL1Size                = headerField{36, 4}
	fieldL1TableOffset         = headerField{40, 8}
	fieldRefcountTableOffset   = headerField{48, 8}
	fieldRefcountTableClusters = headerField{56, 4}
	fieldNbSnapshots           = headerField{60, 4}
	fieldSnapshotsOffset       = headerField{64, 8}
	// Version 3.
	fieldIncompatibleFeatures = headerField{72, 8}
	fieldCompatibleFeatures   = headerField{80, 8}
	fieldAutoclearFeatures    = headerField{88, 8}
	fieldRefcountOrder        = headerField{96, 4}
	fieldHeaderLength         = headerField{100, 4}
	fieldCompressionType      = headerField{104, 1} // then 7 bytes of padding
)

// Header lengths.
const (
	v2HeaderLength = 72  // up to and with fieldSnapshotsOffset
	v3HeaderLength = 104 // up to and with fieldHeaderLength
	headerLength   = 112 // what QEMU and vmtui write: with compression_type and padding
)

// fields pairs each fixed field of the header, but the magic, with the
// Header member that holds it, in file order.
func (h *Header) fields() []struct {
	f headerField
	v any // *uint32, *uint64 or *CompressionType
} {
	return []struct {
		f headerField
		v any
	}{
		{fieldVersion, &h.Version},
		{fieldBackingFileOffset, &h.BackingFileOffset},
		{fieldBackingFileSize, &h.BackingFileSize},
		{fieldClusterBits, &h.ClusterBits},
		{fieldSize, &h.Size},
		{fieldCryptMethod, &h.CryptMethod},
		{fieldL1Size, &h.L1Size},
		{fieldL1TableOffset, &h.L1TableOffset},
		{fieldRefcountTableOffset, &h.RefcountTableOffset},
		{fieldRefcountTableClusters, &h.RefcountTableClusters},
		{fieldNbSnapshots, &h.NbSnapshots},
		{fieldSnapshotsOffset, &h.SnapshotsOffset},
		{fieldIncompatibleFeatures, &h.IncompatibleFeatures},
		{fieldCompatibleFeatures, &h.CompatibleFeatures},
		{fieldAutoclearFeatures, &h.AutoclearFeatures},
		{fieldRefcountOrder, &h.RefcountOrder},
		{fieldHeaderLength, &h.HeaderLength},
		{fieldCompressionType, &h.CompressionType},
	}
}

// decodeFields sets the members of h from the fixed fields that end at or
// before byte end of b.
func (h *Header) decodeFields(b []byte, end int) {
	be := binary.BigEndian
	for _, x := range h.fields() {
		if x.f.end() > end {
			continue
		}
		p := b[x.f.off:x.f.end()]
		switch v := x.v.(type) {
		case *uint32:
			*v = be.Uint32(p)
		case *uint64:
			*v = be.Uint64(p)
		case *CompressionType:
			*v = CompressionType(p[0])
		}
	}
}

// encodeFields puts the magic and the members of h into the fixed fields
// that end at or before len(b).
func (h *Header) encodeFields(b []byte) {
	be := binary.BigEndian
	be.PutUint32(b[fieldMagic.off:], Magic)
	for _, x := range h.fields() {
		if x.f.end() > len(b) {
			continue
		}
		p := b[x.f.off:x.f.end()]
		switch v := x.v.(type) {
		case *uint32:
			be.PutUint32(p, *v)
		case *uint64:
			be.PutUint64(p, *v)
		case *CompressionType:
			p[0] = byte(*v)
		}
	}
}

// writeFields writes the fixed fields from first to last, as h holds them,
// into the header of the image in w: the bytes from first's offset to the
// end of last.
func (h *Header) writeFields(w io.WriterAt, first, last headerField) error {
	var b [headerLength]byte
	h.encodeFields(b[:])
	if _, err := w.WriteAt(b[first.off:last.end()], int64(first.off)); err != nil {
		return fmt.Errorf("write header bytes %d-%d: %w", first.off, last.end()-1, err)
	}
	return nil
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
func (h *Header) l2EntrySize() int64 { return l2EntryBytes(h.ExtendedL2()) }

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
	if binary.BigEndian.Uint32(buf[fieldMagic.off:]) != Magic {
		return nil, ErrNotQcow2
	}
	h := &Header{}
	h.decodeFields(buf[:], v2HeaderLength)
	switch h.Version {
	case 2:
		h.RefcountOrder = 4
		h.HeaderLength = v2HeaderLength
	case 3:
		if fileSize < v3HeaderLength {
			return nil, formatErr(0, "file of %d bytes is too short for a version 3 header", fileSize)
		}
		h.decodeFields(buf[:], v3HeaderLength)
		if h.HeaderLength < v3HeaderLength || h.HeaderLength%8 != 0 {
			return nil, fieldErr(fieldHeaderLength, "invalid header length %d (want a multiple of 8, at least 104)", h.HeaderLength)
		}
	default:
		return nil, &UnsupportedError{Feature: fmt.Sprintf("qcow2 version %d", h.Version)}
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, fieldErr(fieldClusterBits, "cluster size 2^%d is out of range (512 bytes to 2 MiB)", h.ClusterBits)
	}
	cs := h.ClusterSize()
	if int64(h.HeaderLength) > cs {
		return nil, fieldErr(fieldHeaderLength, "header length %d exceeds the cluster size %d", h.HeaderLength, cs)
	}
	if int64(h.HeaderLength) > fileSize {
		return nil, fieldErr(fieldHeaderLength, "header length %d exceeds the file size %d", h.HeaderLength, fileSize)
	}
	if h.RefcountOrder > 6 {
		return nil, fieldErr(fieldRefcountOrder, "refcount order %d is out of range (0 to 6)", h.RefcountOrder)
	}
	if h.HeaderLength > v3HeaderLength {
		h.decodeFields(buf[:], headerLength)
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
			return nil, fieldErr(fieldCompressionType, "compression type bit set without a compression type")
		}
	}
	if h.CompressionType > CompressionZstd {
		return nil, &UnsupportedError{Feature: h.CompressionType.String()}
	}
	if h.CompressionType != CompressionZlib && h.IncompatibleFeatures&IncompatCompression == 0 {
		return nil, fieldErr(fieldCompressionType, "compression type %s without the compression type feature bit", h.CompressionType)
	}
	if h.ExtendedL2() && h.ClusterBits < 14 {
		return nil, fieldErr(fieldClusterBits, "extended L2 entries need clusters of at least 16 KiB, have %d", cs)
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
		return nil, fieldErr(fieldL1TableOffset, "L1 table offset %#x is past 2^63", h.L1TableOffset)
	}
	if h.L1TableOffset%uint64(cs) != 0 {
		return nil, fieldErr(fieldL1TableOffset, "L1 table offset %#x is not cluster aligned", h.L1TableOffset)
	}
	if int64(h.L1Size)*8 > maxL1Bytes {
		return nil, fieldErr(fieldL1Size, "L1 table of %d entries exceeds QEMU's limit of %d", h.L1Size, maxL1Bytes/8)
	}
	if h.L1Size > 0 && !tableFits(h.L1TableOffset, uint64(h.L1Size), 8, limit) {
		return nil, fieldErr(fieldL1TableOffset, "L1 table (%d entries at %#x) extends past the end of the file (%d bytes)", h.L1Size, h.L1TableOffset, fileSize)
	}
	if need := h.l1EntriesFor(h.Size); uint64(h.L1Size) < need {
		return nil, fieldErr(fieldL1Size, "L1 table of %d entries is too small for a virtual size of %d bytes (need %d)", h.L1Size, h.Size, need)
	}
	if h.RefcountTableOffset > math.MaxInt64 {
		return nil, fieldErr(fieldRefcountTableOffset, "refcount table offset %#x is past 2^63", h.RefcountTableOffset)
	}
	if h.RefcountTableOffset%uint64(cs) != 0 {
		return nil, fieldErr(fieldRefcountTableOffset, "refcount table offset %#x is not cluster aligned", h.RefcountTableOffset)
	}
	if h.RefcountTableClusters == 0 {
		return nil, fieldErr(fieldRefcountTableClusters, "refcount table has no clusters")
	}
	if int64(h.RefcountTableClusters)<<h.ClusterBits > maxRefTableBytes {
		return nil, fieldErr(fieldRefcountTableClusters, "refcount table of %d clusters exceeds QEMU's limit of %d bytes", h.RefcountTableClusters, maxRefTableBytes)
	}
	// The refcount table's last cluster may be cut short by the end of
	// the file (QEMU does not pad the file's last cluster).
	rtLimit := limit
	if !lenient {
		rtLimit += uint64(cs)
	}
	if !tableFits(h.RefcountTableOffset, uint64(h.RefcountTableClusters), uint64(cs), rtLimit) {
		return nil, fieldErr(fieldRefcountTableOffset, "refcount table (%d clusters at %#x) extends past the end of the file (%d bytes)", h.RefcountTableClusters, h.RefcountTableOffset, fileSize)
	}
	if h.NbSnapshots > maxSnapshots {
		return nil, fieldErr(fieldNbSnapshots, "%d snapshots exceed QEMU's limit of %d", h.NbSnapshots, maxSnapshots)
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
			return nil, fieldErr(fieldSnapshotsOffset, "snapshot table offset %#x is unaligned or past the end of the file", h.SnapshotsOffset)
		}
	}

	// The backing file name lies in cluster 0, after the header.
	if h.BackingFileOffset != 0 {
		if h.BackingFileSize > maxBackingNameLen {
			return nil, fieldErr(fieldBackingFileSize, "backing file name of %d bytes exceeds %d", h.BackingFileSize, maxBackingNameLen)
		}
		if h.BackingFileOffset < uint64(h.HeaderLength) || !tableFits(h.BackingFileOffset, uint64(h.BackingFileSize), 1, uint64(min(cs, fileSize))) {
			return nil, fieldErr(fieldBackingFileOffset, "backing file name (%d bytes at %d) is outside the header cluster", h.BackingFileSize, h.BackingFileOffset)
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
	b = make([]byte, hl, cs) // the fixed fields are put in at the end
	if h.Version >= 3 {
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
	h.encodeFields(b[:hl])
	if int64(len(b)) > cs {
		return nil, fmt.Errorf("qcow2: header, extensions and backing file name (%d bytes) do not fit in one %d-byte cluster", len(b), cs)
	}
	return b, nil
}
