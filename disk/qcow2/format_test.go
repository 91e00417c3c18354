package qcow2

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestRefcountWidths(t *testing.T) {
	for order := uint32(0); order <= 6; order++ {
		entries := int64(512*8) >> order
		block := make([]byte, 512)
		max := maxRefcount(order)
		want := make([]uint64, entries)
		for i := range want {
			want[i] = uint64(i*7+3) & max
			setRefcount(block, int64(i), order, want[i])
		}
		for i := range want {
			if got := refcount(block, int64(i), order); got != want[i] {
				t.Fatalf("order %d entry %d: got %d, want %d", order, i, got, want[i])
			}
		}
		// Setting one entry must leave its neighbours alone.
		setRefcount(block, 1, order, 0)
		if got := refcount(block, 0, order); got != want[0] {
			t.Errorf("order %d: entry 0 changed to %d by setting entry 1 (want %d)", order, got, want[0])
		}
		if got := refcount(block, 2, order); got != want[2] {
			t.Errorf("order %d: entry 2 changed to %d by setting entry 1 (want %d)", order, got, want[2])
		}
	}
	// The layout QEMU uses for sub-byte widths: entry 0 in the low bits.
	b := []byte{0}
	setRefcount(b, 0, 0, 1)
	if b[0] != 0x01 {
		t.Errorf("1-bit entry 0 set: byte %#x, want 0x01", b[0])
	}
	b[0] = 0
	setRefcount(b, 1, 2, 0xf)
	if b[0] != 0xf0 {
		t.Errorf("4-bit entry 1 set: byte %#x, want 0xf0", b[0])
	}
	b16 := make([]byte, 4)
	setRefcount(b16, 1, 4, 0x1234)
	if !bytes.Equal(b16, []byte{0, 0, 0x12, 0x34}) {
		t.Errorf("16-bit entry 1: bytes % x, want big-endian 00 00 12 34", b16)
	}
}

func TestCompressedDescriptor(t *testing.T) {
	tests := []struct {
		clusterBits uint32
		off, size   int64
	}{
		{16, 0x1501e0, 160},
		{16, 0x50000, 65534},
		{9, 0x200, 300},
		{9, 0x3ff, 2},
		{21, 0x7ff_ffff_0000, 2<<20 - 2},
		{12, 0x1000 + 511, 513},
	}
	for _, tt := range tests {
		e := compressedEntry(tt.off, tt.size, tt.clusterBits)
		if !e.compressed() {
			t.Fatalf("%+v: entry %#x lacks the compressed flag", tt, uint64(e))
		}
		off, size := e.compressedRange(tt.clusterBits)
		if off != tt.off {
			t.Errorf("%+v: offset got %#x, want %#x", tt, off, tt.off)
		}
		// The decoded size covers the data, rounded up to the sector end.
		end := (tt.off + tt.size + 511) &^ 511
		if off+size != end {
			t.Errorf("%+v: decoded range ends at %#x, want %#x", tt, off+size, end)
		}
	}
	// An entry QEMU 7.2 wrote (64 KiB clusters): one additional sector at 0x1501e0.
	e := l2Entry(0x40400000001501e0)
	off, size := e.compressedRange(16)
	if off != 0x1501e0 || size != 2*512-0x1e0 {
		t.Errorf("QEMU entry: got offset %#x size %d, want 0x1501e0 and %d", off, size, 2*512-0x1e0)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		opts CreateOptions
	}{
		{"default", CreateOptions{}},
		{"v2", CreateOptions{Compat: "0.10"}},
		{"512 bytes with backing", CreateOptions{ClusterSize: 512, BackingFile: "../base.img", BackingFormat: "raw"}},
		{"zstd lazy 2M", CreateOptions{ClusterSize: 2 << 20, CompressionType: CompressionZstd, LazyRefcounts: true, RefcountBits: 64}},
		{"1-bit refcounts", CreateOptions{RefcountBits: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHeader(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			h.RefcountTableOffset = uint64(h.ClusterSize())
			h.RefcountTableClusters = 1
			b, err := h.marshal()
			if err != nil {
				t.Fatal(err)
			}
			file := make([]byte, 2*h.ClusterSize())
			copy(file, b)
			got, err := ParseHeader(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			got.Features = nil
			if !reflect.DeepEqual(got, h) {
				t.Errorf("parsed header differs:\ngot  %+v\nwant %+v", got, h)
			}
		})
	}
}

func TestNewHeaderRefuses(t *testing.T) {
	tests := []struct {
		name string
		opts CreateOptions
	}{
		{"cluster size not a power of two", CreateOptions{ClusterSize: 3000}},
		{"cluster size too big", CreateOptions{ClusterSize: 4 << 20}},
		{"refcount width 3", CreateOptions{RefcountBits: 3}},
		{"refcount width 128", CreateOptions{RefcountBits: 128}},
		{"v2 with 8-bit refcounts", CreateOptions{Compat: "0.10", RefcountBits: 8}},
		{"v2 with zstd", CreateOptions{Compat: "0.10", CompressionType: CompressionZstd}},
		{"unknown compat", CreateOptions{Compat: "2.0"}},
		{"backing without format", CreateOptions{BackingFile: "base"}},
		{"preallocation full", CreateOptions{Preallocation: "full"}},
	}
	for _, tt := range tests {
		if _, err := newHeader(tt.opts); err == nil {
			t.Errorf("%s: newHeader(%+v) succeeded, want an error", tt.name, tt.opts)
		}
	}
}

func TestParseHeaderNotQcow2(t *testing.T) {
	for _, data := range [][]byte{[]byte("hello, this is a raw disk image with some text in it, long enough for a header"), make([]byte, 2)} {
		_, err := ParseHeader(bytes.NewReader(data), int64(len(data)))
		if !errors.Is(err, ErrNotQcow2) && len(data) >= 4 {
			t.Errorf("ParseHeader(%q): got %v, want ErrNotQcow2", data[:4], err)
		}
		if err == nil {
			t.Errorf("ParseHeader of %d bytes succeeded", len(data))
		}
	}
}
