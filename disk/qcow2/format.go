package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
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
