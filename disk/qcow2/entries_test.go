package qcow2

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestL1Entry(t *testing.T) {
	tests := []struct {
		raw      uint64
		l2Offset int64
		copied   bool
		reserved uint64
	}{
		{0, 0, false, 0},
		{0x8000000000050000, 0x50000, true, 0},
		{0x0000000000050000, 0x50000, false, 0},
		{0x00fffffffffffe00, 0x00fffffffffffe00, false, 0},
		{0x8000000000050200, 0x50200, true, 0}, // unaligned for big clusters: check says so, not the decoder
		{0x8100000000050001, 0x50000, true, 0x0100000000000001},
		{0x7f000000000001ff, 0, false, 0x7f000000000001ff},
	}
	for _, tt := range tests {
		e := l1Entry(tt.raw)
		if e.l2Offset() != tt.l2Offset || e.copied() != tt.copied || e.reserved() != tt.reserved {
			t.Errorf("l1Entry(%#x): offset %#x copied %v reserved %#x; want %#x %v %#x",
				tt.raw, e.l2Offset(), e.copied(), e.reserved(), tt.l2Offset, tt.copied, tt.reserved)
		}
		if got := e.withCopied(!tt.copied).withCopied(tt.copied); got != e {
			t.Errorf("l1Entry(%#x): withCopied round trip gave %#x", tt.raw, uint64(got))
		}
		if got := e.withCopied(true); !got.copied() || got.l2Offset() != tt.l2Offset {
			t.Errorf("l1Entry(%#x).withCopied(true) = %#x", tt.raw, uint64(got))
		}
	}
	if e := newL1Entry(0x30000); uint64(e) != 0x8000000000030000 {
		t.Errorf("newL1Entry(0x30000) = %#x, want 0x8000000000030000", uint64(e))
	}
}

// TestL2Entries decodes standard and extended L2 entries, as the spec lays
// them out: the descriptor big-endian at 8*i (standard) or 16*i (extended,
// followed by the subcluster bitmap).
func TestL2Entries(t *testing.T) {
	tests := []struct {
		name     string
		ext      bool
		entry    uint64
		bitmap   uint64
		typ      clusterType
		offset   int64
		copied   bool
		reserved uint64
		alloc    uint32
		zero     uint32
	}{
		{name: "unallocated", typ: clusterUnallocated},
		{name: "normal", entry: 0x8000000000070000, typ: clusterNormal, offset: 0x70000, copied: true},
		{name: "normal shared", entry: 0x0000000000070000, typ: clusterNormal, offset: 0x70000},
		{name: "zero plain", entry: 1, typ: clusterZeroPlain},
		{name: "zero preallocated", entry: 0x8000000000070001, typ: clusterZeroAlloc, offset: 0x70000, copied: true},
		{name: "reserved bits", entry: 0x0100000000070002, typ: clusterNormal, offset: 0x70000, reserved: 0x0100000000000002},
		{name: "compressed", entry: 0x40400000001501e0, typ: clusterCompressed},
		{name: "ext unallocated", ext: true, typ: clusterUnallocated},
		{name: "ext all zero", ext: true, bitmap: 0xffffffff00000000, typ: clusterUnallocated, zero: 0xffffffff},
		{name: "ext all allocated", ext: true, entry: 0x8000000000070000, bitmap: 0x00000000ffffffff, typ: clusterNormal, offset: 0x70000, copied: true, alloc: 0xffffffff},
		{name: "ext mixed", ext: true, entry: 0x8000000000070000, bitmap: 0x0000000f00000030, typ: clusterNormal, offset: 0x70000, copied: true, alloc: 0x30, zero: 0xf},
		// With extended L2 entries bit 0 is reserved, not the zero flag:
		// the cluster type ignores it, and readers refuse it.
		{name: "ext bit 0", ext: true, entry: 0x8000000000070001, bitmap: 1, typ: clusterNormal, offset: 0x70000, copied: true, alloc: 1},
		{name: "ext compressed", ext: true, entry: 0x40400000001501e0, typ: clusterCompressed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := l2Desc{entry: l2Entry(tt.entry), bitmap: l2Bitmap(tt.bitmap)}
			e := d.entry
			if got := e.typ(tt.ext); got != tt.typ {
				t.Errorf("typ = %d, want %d", got, tt.typ)
			}
			if tt.typ != clusterCompressed {
				if e.offset() != tt.offset || e.copied() != tt.copied || e.reserved() != tt.reserved {
					t.Errorf("offset %#x copied %v reserved %#x; want %#x %v %#x",
						e.offset(), e.copied(), e.reserved(), tt.offset, tt.copied, tt.reserved)
				}
			}
			if d.bitmap.alloc() != tt.alloc || d.bitmap.zero() != tt.zero {
				t.Errorf("bitmap %#x: alloc %#x zero %#x, want %#x %#x", tt.bitmap, d.bitmap.alloc(), d.bitmap.zero(), tt.alloc, tt.zero)
			}

			// The entry's place and byte order in a table.
			size := l2EntryBytes(tt.ext)
			table := make([]byte, 4*size)
			putL2(table, 2, tt.ext, d)
			want := make([]byte, 4*size)
			binary.BigEndian.PutUint64(want[2*size:], tt.entry)
			if tt.ext {
				binary.BigEndian.PutUint64(want[2*size+8:], tt.bitmap)
			}
			if !bytes.Equal(table, want) {
				t.Errorf("putL2 at index 2:\ngot  % x\nwant % x", table, want)
			}
			if got := l2At(table, 2, tt.ext); got != d {
				t.Errorf("l2At(2) = %+v, want %+v", got, d)
			}
			// Past the end of a table cut short: unallocated.
			if got := l2At(table[:3*size-1], 2, tt.ext); got != (l2Desc{}) {
				t.Errorf("l2At of an entry cut short = %+v, want zero", got)
			}
		})
	}
	if got, want := bitmapAllAlloc.alloc(), uint32(0xffffffff); got != want || bitmapAllAlloc.zero() != 0 {
		t.Errorf("bitmapAllAlloc: alloc %#x zero %#x", got, bitmapAllAlloc.zero())
	}
	if bitmapAllZero.alloc() != 0 || bitmapAllZero.zero() != 0xffffffff {
		t.Errorf("bitmapAllZero: alloc %#x zero %#x", bitmapAllZero.alloc(), bitmapAllZero.zero())
	}
	if e := dataEntry(0x70000); uint64(e) != 0x8000000000070000 || e.typ(false) != clusterNormal {
		t.Errorf("dataEntry(0x70000) = %#x", uint64(e))
	}
}

// TestCompressedDescriptors decodes compressed descriptors of several
// cluster sizes, written out bit by bit from docs/interop/qcow2.txt: with
// x = 62 - (cluster_bits - 8), bits 0 to x-1 hold the host byte offset and
// bits x to 61 the number of 512-byte sectors after the first.
func TestCompressedDescriptors(t *testing.T) {
	tests := []struct {
		clusterBits uint32
		raw         uint64
		off, size   int64 // decoded: the sectors' bytes from off
		dataLen     int64 // a compressed length that encodes to raw
	}{
		// 512-byte clusters: x = 61, one bit of sector count.
		{9, 1<<62 | 0<<61 | 0x200, 0x200, 512, 300},
		{9, 1<<62 | 1<<61 | 0x3ff, 0x3ff, 2*512 - 511, 2},
		{9, 1<<62 | 1<<61 | 1<<60, 1 << 60, 1024, 513}, // the offset's top bit
		// 4 KiB clusters: x = 58, four bits.
		{12, 1<<62 | 2<<58 | 0x11ff, 0x11ff, 3*512 - 511, 1025},
		{12, 1<<62 | 7<<58 | 0x3000, 0x3000, 8 * 512, 4096},
		// 64 KiB clusters: x = 54, eight bits; an entry QEMU 7.2 wrote.
		{16, 0x40400000001501e0, 0x1501e0, 2*512 - 0x1e0, 160},
		{16, 1<<62 | 127<<54 | 0x50000, 0x50000, 128 * 512, 65534},
		// 2 MiB clusters: x = 49, thirteen bits.
		{21, 1<<62 | 4095<<49 | 0x7ff_ffff_0000, 0x7ff_ffff_0000, 4096 * 512, 2<<20 - 2},
		{21, 1<<62 | 8191<<49 | 0x200, 0x200, 8192 * 512, 4 << 20},
	}
	for _, tt := range tests {
		e := l2Entry(tt.raw)
		for _, ext := range []bool{false, true} {
			if e.typ(ext) != clusterCompressed {
				t.Errorf("cluster bits %d, entry %#x, extended L2 %v: type %d, want compressed", tt.clusterBits, tt.raw, ext, e.typ(ext))
			}
		}
		off, size := e.compressedRange(tt.clusterBits)
		if off != tt.off || size != tt.size {
			t.Errorf("cluster bits %d, entry %#x: offset %#x size %d; want %#x %d", tt.clusterBits, tt.raw, off, size, tt.off, tt.size)
		}
		if got := compressedEntry(tt.off, tt.dataLen, tt.clusterBits); uint64(got) != tt.raw {
			t.Errorf("cluster bits %d: compressedEntry(%#x, %d) = %#x, want %#x", tt.clusterBits, tt.off, tt.dataLen, uint64(got), tt.raw)
		}
	}
}

func TestRefTableAndBitmapEntries(t *testing.T) {
	for _, tt := range []struct {
		raw      uint64
		off      int64
		reserved uint64
	}{
		{0, 0, 0},
		{0x20000, 0x20000, 0},
		{0x20001, 0x20000, 1},
		{0x201ff, 0x20000, 0x1ff},
	} {
		e := refTableEntry(tt.raw)
		if e.blockOffset() != tt.off || e.reserved() != tt.reserved {
			t.Errorf("refTableEntry(%#x): offset %#x reserved %#x; want %#x %#x", tt.raw, e.blockOffset(), e.reserved(), tt.off, tt.reserved)
		}
	}
	for _, tt := range []struct {
		raw      uint64
		off      int64
		allOnes  bool
		reserved uint64
	}{
		{0, 0, false, 0},
		{1, 0, true, 0},
		{0x90000, 0x90000, false, 0},
		{0x0100000000090002, 0x90000, false, 0x0100000000000002},
	} {
		e := bitmapTableEntry(tt.raw)
		if e.offset() != tt.off || e.allOnes() != tt.allOnes || e.reserved() != tt.reserved {
			t.Errorf("bitmapTableEntry(%#x): offset %#x all ones %v reserved %#x; want %#x %v %#x",
				tt.raw, e.offset(), e.allOnes(), e.reserved(), tt.off, tt.allOnes, tt.reserved)
		}
	}
}

func TestTables(t *testing.T) {
	l1 := []l1Entry{newL1Entry(0x30000), 0, newL1Entry(0x50000)}
	b := encodeTable(l1)
	want := []byte{
		0x80, 0, 0, 0, 0, 0x03, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		0x80, 0, 0, 0, 0, 0x05, 0, 0,
	}
	if !bytes.Equal(b, want) {
		t.Errorf("encodeTable:\ngot  % x\nwant % x", b, want)
	}
	got := decodeTable[l1Entry](append(b, 1, 2, 3)) // a partial entry is dropped
	if len(got) != 3 || got[0] != l1[0] || got[1] != 0 || got[2] != l1[2] {
		t.Errorf("decodeTable = %#x, want %#x", got, l1)
	}
	if e := tableEntry[l1Entry](b, 2); e != l1[2] {
		t.Errorf("tableEntry(2) = %#x", uint64(e))
	}
	for _, i := range []int64{-1, 3} {
		if e := tableEntry[l1Entry](b, i); e != 0 {
			t.Errorf("tableEntry(%d) past the table = %#x, want 0", i, uint64(e))
		}
	}
	if e := tableEntry[l1Entry](b[:23], 2); e != 0 {
		t.Errorf("tableEntry of an entry cut short = %#x, want 0", uint64(e))
	}
}
