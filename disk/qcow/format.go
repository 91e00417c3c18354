package qcow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Magic is the first four bytes of every qcow image, version 1 or 2: "QFI\xfb".
const Magic = 0x514649fb

// Version is the only version of the original format.
const Version = 1

// HeaderSize is the size of the fixed header.
const HeaderSize = 48

// Encryption methods (header bytes 32-35).
const (
	CryptNone = 0
	CryptAES  = 1
)

// Limits, as QEMU 7.2's block/qcow.c enforces them.
const (
	MinClusterBits = 9  // 512 bytes
	MaxClusterBits = 16 // 64 KiB
	MinL2Bits      = 6  // an L2 table of 512 bytes
	MaxL2Bits      = 13 // an L2 table of 64 KiB

	maxBackingNameLen = 1023
	maxL1Entries      = math.MaxInt32 / 8
)

// compressedFlag marks an L2 entry of a compressed cluster.
const compressedFlag = uint64(1) << 63

// Header is the fixed header of a qcow image, with the backing file name
// it points at.
type Header struct {
	Version           uint32
	BackingFileOffset uint64
	BackingFileSize   uint32
	Mtime             uint32
	Size              uint64 // in bytes, as stored
	ClusterBits       uint8
	L2Bits            uint8
	CryptMethod       uint32
	L1TableOffset     uint64

	BackingFile string
}

// ClusterSize is the cluster size in bytes.
func (h *Header) ClusterSize() int64 { return 1 << h.ClusterBits }

// L2Entries is the number of entries of an L2 table.
func (h *Header) L2Entries() int64 { return 1 << h.L2Bits }

// L1Entries is the number of entries of the L1 table.
func (h *Header) L1Entries() int64 {
	shift := uint(h.ClusterBits) + uint(h.L2Bits)
	return int64((h.Size + (1 << shift) - 1) >> shift)
}

// VirtualSize is the disk's size: as in QEMU, whole 512-byte sectors.
func (h *Header) VirtualSize() int64 { return int64(h.Size &^ 511) }

// Encrypted reports whether the image's clusters are AES-encrypted.
func (h *Header) Encrypted() bool { return h.CryptMethod != CryptNone }

// FormatError reports a damaged or hostile image: what is wrong, and where.
type FormatError struct {
	Msg string
}

func (e *FormatError) Error() string { return "qcow: " + e.Msg }

func formatErr(f string, args ...any) error { return &FormatError{Msg: fmt.Sprintf(f, args...)} }

// ErrNotQcow is returned for a file without the qcow magic.
var ErrNotQcow = errors.New("qcow: not a qcow image")

// encode returns the 48 header bytes.
func (h *Header) encode() []byte {
	b := make([]byte, HeaderSize)
	binary.BigEndian.PutUint32(b[0:], Magic)
	binary.BigEndian.PutUint32(b[4:], h.Version)
	binary.BigEndian.PutUint64(b[8:], h.BackingFileOffset)
	binary.BigEndian.PutUint32(b[16:], h.BackingFileSize)
	binary.BigEndian.PutUint32(b[20:], h.Mtime)
	binary.BigEndian.PutUint64(b[24:], h.Size)
	b[32] = h.ClusterBits
	b[33] = h.L2Bits
	binary.BigEndian.PutUint32(b[36:], h.CryptMethod)
	binary.BigEndian.PutUint64(b[40:], h.L1TableOffset)
	return b
}

// ParseHeader reads and validates the header of the qcow image in r, a
// file of fileSize bytes, with the same limits as QEMU and, beyond QEMU,
// with every offset checked against the file's size. It does not read the
// L1 table.
func ParseHeader(r io.ReaderAt, fileSize int64) (*Header, error) {
	b := make([]byte, HeaderSize)
	if n, err := r.ReadAt(b, 0); n < HeaderSize {
		if err == nil || errors.Is(err, io.EOF) {
			if n >= 4 && binary.BigEndian.Uint32(b) == Magic {
				return nil, formatErr("header truncated: the file has %d bytes, the header %d", fileSize, HeaderSize)
			}
			return nil, ErrNotQcow
		}
		return nil, fmt.Errorf("read header: %w", err)
	}
	if binary.BigEndian.Uint32(b) != Magic {
		return nil, ErrNotQcow
	}
	h := &Header{
		Version:           binary.BigEndian.Uint32(b[4:]),
		BackingFileOffset: binary.BigEndian.Uint64(b[8:]),
		BackingFileSize:   binary.BigEndian.Uint32(b[16:]),
		Mtime:             binary.BigEndian.Uint32(b[20:]),
		Size:              binary.BigEndian.Uint64(b[24:]),
		ClusterBits:       b[32],
		L2Bits:            b[33],
		CryptMethod:       binary.BigEndian.Uint32(b[36:]),
		L1TableOffset:     binary.BigEndian.Uint64(b[40:]),
	}
	if h.Version != Version {
		return nil, formatErr("unsupported qcow version %d", h.Version)
	}
	if h.Size <= 1 {
		return nil, formatErr("image size %d is too small (must be at least 2 bytes)", h.Size)
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, formatErr("cluster_bits %d out of range (cluster size must be between 512 and 64k)", h.ClusterBits)
	}
	if h.L2Bits < MinL2Bits || h.L2Bits > MaxL2Bits {
		return nil, formatErr("l2_bits %d out of range (L2 table size must be between 512 and 64k)", h.L2Bits)
	}
	if h.CryptMethod != CryptNone && h.CryptMethod != CryptAES {
		return nil, formatErr("invalid encryption method %d in qcow header", h.CryptMethod)
	}
	shift := uint(h.ClusterBits) + uint(h.L2Bits)
	if h.Size > math.MaxUint64-(uint64(1)<<shift) || h.Size > math.MaxInt64 {
		return nil, formatErr("image too large: size %d", h.Size)
	}
	l1 := h.L1Entries()
	if l1 > maxL1Entries {
		return nil, formatErr("image too large: %d L1 entries", l1)
	}
	if h.L1TableOffset > uint64(fileSize) || uint64(l1)*8 > uint64(fileSize)-h.L1TableOffset {
		return nil, formatErr("L1 table (%d entries at offset %d) is past the end of the file (%d bytes)", l1, h.L1TableOffset, fileSize)
	}
	if h.BackingFileOffset != 0 {
		n := uint64(h.BackingFileSize)
		if n > maxBackingNameLen {
			return nil, formatErr("backing file name too long (%d bytes)", n)
		}
		if h.BackingFileOffset > uint64(fileSize) || n > uint64(fileSize)-h.BackingFileOffset {
			return nil, formatErr("backing file name (%d bytes at offset %d) is past the end of the file (%d bytes)", n, h.BackingFileOffset, fileSize)
		}
		name := make([]byte, n)
		if _, err := r.ReadAt(name, int64(h.BackingFileOffset)); err != nil {
			return nil, fmt.Errorf("read backing file name: %w", err)
		}
		// QEMU keeps the name as a C string: a NUL ends it.
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		h.BackingFile = string(name)
	}
	return h, nil
}
