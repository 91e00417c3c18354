package qcow2

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// TestHeaderFieldTable: the fixed fields follow each other without gaps or
// overlaps from the magic to the compression type, each as wide as the
// Header member that holds it.
func TestHeaderFieldTable(t *testing.T) {
	var h Header
	next := fieldMagic.end()
	for _, x := range h.fields() {
		if x.f.off != next {
			t.Errorf("field at %d: want it at %d, right after the previous one", x.f.off, next)
		}
		width := map[string]int{"*uint32": 4, "*uint64": 8, "*qcow2.CompressionType": 1}[reflect.TypeOf(x.v).String()]
		if x.f.width != width {
			t.Errorf("field at %d: width %d, but its member is %T", x.f.off, x.f.width, x.v)
		}
		next = x.f.end()
	}
	if next != fieldCompressionType.end() || next != v3HeaderLength+1 {
		t.Errorf("fields end at %d, want %d", next, v3HeaderLength+1)
	}
	if fieldSnapshotsOffset.end() != v2HeaderLength || fieldHeaderLength.end() != v3HeaderLength {
		t.Errorf("version 2 fields end at %d, version 3 ones at %d; want %d and %d",
			fieldSnapshotsOffset.end(), fieldHeaderLength.end(), v2HeaderLength, v3HeaderLength)
	}
}

// qemuHeader is the first 112 bytes of an image made by QEMU 7.2's
// qemu-img create -f qcow2 -o cluster_size=65536,compression_type=zstd,lazy_refcounts=on h.qcow2 3G.
const qemuHeader = "514649fb000000030000000000000000" +
	"000000000000001000000000c0000000" +
	"00000000000000060000000000030000" +
	"00000000000100000000000100000000" +
	"00000000000000000000000000000008" +
	"00000000000000010000000000000000" +
	"00000004000000700100000000000000"

var qemuHeaderFields = Header{
	Version:               3,
	ClusterBits:           16,
	Size:                  3 << 30,
	L1Size:                6,
	L1TableOffset:         0x30000,
	RefcountTableOffset:   0x10000,
	RefcountTableClusters: 1,
	IncompatibleFeatures:  IncompatCompression,
	CompatibleFeatures:    CompatLazyRefcounts,
	RefcountOrder:         4,
	HeaderLength:          112,
	CompressionType:       CompressionZstd,
}

// TestHeaderFieldsQemu: the field table reads the header QEMU wrote, and
// writes it back byte for byte.
func TestHeaderFieldsQemu(t *testing.T) {
	b, err := hex.DecodeString(qemuHeader)
	if err != nil || len(b) != headerLength {
		t.Fatalf("bad test data: %d bytes, %v", len(b), err)
	}
	var h Header
	h.decodeFields(b, headerLength)
	if !reflect.DeepEqual(h, qemuHeaderFields) {
		t.Errorf("decoded:\ngot  %+v\nwant %+v", h, qemuHeaderFields)
	}
	out := make([]byte, headerLength)
	h.encodeFields(out)
	if !bytes.Equal(out, b) {
		t.Errorf("encoded:\ngot  %x\nwant %x", out, b)
	}
}

// TestHeaderFieldsRoundTrip: every field, set to a value that fills it,
// survives encoding and decoding, in the place the other fields leave it.
func TestHeaderFieldsRoundTrip(t *testing.T) {
	var h Header
	for i, x := range h.fields() {
		pattern := 0x0102030405060708 * uint64(i+1)
		switch v := x.v.(type) {
		case *uint32:
			*v = uint32(pattern)
		case *uint64:
			*v = pattern
		case *CompressionType:
			*v = CompressionType(pattern)
		}
	}
	b := make([]byte, headerLength)
	h.encodeFields(b)
	var got Header
	got.decodeFields(b, headerLength)
	if !reflect.DeepEqual(got, h) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, h)
	}
	if !bytes.Equal(b[fieldCompressionType.end():], make([]byte, headerLength-fieldCompressionType.end())) {
		t.Errorf("padding after the compression type is not zero: % x", b[fieldCompressionType.end():])
	}

	// Only the fields that fit are written and read: a version 2 header.
	v2 := make([]byte, v2HeaderLength)
	h.encodeFields(v2)
	if !bytes.Equal(v2, b[:v2HeaderLength]) {
		t.Errorf("version 2 header differs from the first %d bytes of the version 3 one", v2HeaderLength)
	}
	var g2 Header
	g2.decodeFields(b, v2HeaderLength)
	if g2.IncompatibleFeatures != 0 || g2.HeaderLength != 0 || g2.SnapshotsOffset != h.SnapshotsOffset {
		t.Errorf("decoding %d bytes: %+v", v2HeaderLength, g2)
	}
}

// TestHeaderWriteFields: rewriting a range of fields touches exactly their bytes.
func TestHeaderWriteFields(t *testing.T) {
	b, _ := hex.DecodeString(qemuHeader)
	file := &checkMemFile{data: bytes.Clone(b)}
	h := qemuHeaderFields
	h.Size, h.L1Size, h.L1TableOffset, h.CompatibleFeatures = 5<<30, 10, 0x70000, 0
	if err := h.writeFields(file, fieldSize, fieldL1TableOffset); err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(qemuHeader,
		"00000000c0000000"+"00000000"+"00000006"+"0000000000030000",
		"0000000140000000"+"00000000"+"0000000a"+"0000000000070000", 1)
	if got := hex.EncodeToString(file.data); got != want {
		t.Errorf("after writing bytes 24-47:\ngot  %s\nwant %s", got, want)
	}
}
