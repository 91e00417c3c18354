package qcow2

// Internal snapshots: the snapshot table (docs/interop/qcow2.txt,
// "Snapshots"), read and written as QEMU 7.2's qcow2_read_snapshots and
// qcow2_write_snapshots do. The operations that change them are in
// snapshotops.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// snapshotExtraSize is the extra data QEMU 7.2 writes: vm_state_size_large,
// disk_size and icount.
const snapshotExtraSize = 24

// maxSnapshotName bounds the ID and name of a new snapshot (the table's
// fields are 16-bit lengths; QEMU's names are bounded by the QMP string
// size, far less in practice).
const maxSnapshotName = 1024

// ErrSnapshotNotFound is returned when no snapshot has the given ID or name.
var ErrSnapshotNotFound = errors.New("qcow2: snapshot not found")

// Snapshot is one entry of an image's snapshot table.
type Snapshot struct {
	ID   string // unique within the image; QEMU numbers them "1", "2", …
	Name string // the tag; QEMU allows duplicates, vmtui refuses to make them
	// Date is when the snapshot was taken (date_sec, date_nsec).
	Date time.Time
	// VMClock is the guest's clock at the snapshot (vm_clock_nsec); 0 for
	// disk-only snapshots.
	VMClock time.Duration
	// VMStateSize is the size of the saved VM state (RAM and devices) in
	// bytes; 0 for disk-only snapshots.
	VMStateSize uint64
	// DiskSize is the virtual disk size at the snapshot.
	DiskSize uint64
	// ICount is the instruction count for record/replay, -1 when the entry
	// has none (QEMU before 5.0 and v2 entries without it).
	ICount int64

	l1Offset uint64
	l1Size   uint32
	// unknownExtra is extra data beyond what this package knows, kept.
	unknownExtra []byte
}

// decodeSnapshots parses nb entries of the snapshot table held in b (which
// starts at the table's offset). diskSize is the image's size, what entries
// without extra data say.
// It returns the entries and the table's size in bytes.
func decodeSnapshots(b []byte, nb uint32, diskSize uint64, tableOff int64) ([]Snapshot, int64, error) {
	be := binary.BigEndian
	var sns []Snapshot
	off := 0
	for i := 0; i < int(nb); i++ {
		off = (off + 7) &^ 7
		if off+checkSnapshotHeader > len(b) {
			return nil, 0, formatErr(tableOff+int64(off), "snapshot table entry %d is cut short", i)
		}
		h := b[off:]
		sn := Snapshot{
			l1Offset:    be.Uint64(h[0:]),
			l1Size:      be.Uint32(h[8:]),
			Date:        time.Unix(int64(be.Uint32(h[16:])), int64(be.Uint32(h[20:]))),
			VMClock:     time.Duration(be.Uint64(h[24:])),
			VMStateSize: uint64(be.Uint32(h[32:])),
			DiskSize:    diskSize,
			ICount:      -1,
		}
		idSize, nameSize := int(be.Uint16(h[12:])), int(be.Uint16(h[14:]))
		extra := int(be.Uint32(h[36:]))
		if extra > checkMaxSnapshotExtra {
			return nil, 0, formatErr(tableOff+int64(off), "snapshot table entry %d has %d bytes of extra data (at most %d)", i, extra, checkMaxSnapshotExtra)
		}
		off += checkSnapshotHeader
		if off+extra+idSize+nameSize > len(b) {
			return nil, 0, formatErr(tableOff+int64(off), "snapshot table entry %d is cut short", i)
		}
		x := b[off : off+extra]
		if len(x) >= 8 {
			sn.VMStateSize = be.Uint64(x[0:])
		}
		if len(x) >= 16 {
			sn.DiskSize = be.Uint64(x[8:])
		}
		if len(x) >= 24 {
			sn.ICount = int64(be.Uint64(x[16:]))
		}
		if len(x) > snapshotExtraSize {
			sn.unknownExtra = append([]byte(nil), x[snapshotExtraSize:]...)
		}
		off += extra
		sn.ID = string(b[off : off+idSize])
		off += idSize
		sn.Name = string(b[off : off+nameSize])
		off += nameSize
		sns = append(sns, sn)
	}
	return sns, int64(off), nil
}

// encodeSnapshots builds the snapshot table as QEMU writes it: each entry
// 8-byte aligned, with 24 bytes of extra data (and any unknown extra data
// kept after them).
func encodeSnapshots(sns []Snapshot) []byte {
	be := binary.BigEndian
	var b []byte
	for _, sn := range sns {
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		var h [checkSnapshotHeader + snapshotExtraSize]byte
		be.PutUint64(h[0:], sn.l1Offset)
		be.PutUint32(h[8:], sn.l1Size)
		be.PutUint16(h[12:], uint16(len(sn.ID)))
		be.PutUint16(h[14:], uint16(len(sn.Name)))
		be.PutUint32(h[16:], uint32(sn.Date.Unix()))
		be.PutUint32(h[20:], uint32(sn.Date.Nanosecond()))
		be.PutUint64(h[24:], uint64(sn.VMClock))
		be.PutUint32(h[32:], uint32(sn.VMStateSize)) // as QEMU: the low bits; the extra data has all
		be.PutUint32(h[36:], uint32(snapshotExtraSize+len(sn.unknownExtra)))
		be.PutUint64(h[40:], sn.VMStateSize)
		be.PutUint64(h[48:], sn.DiskSize)
		be.PutUint64(h[56:], uint64(sn.ICount))
		b = append(b, h[:]...)
		b = append(b, sn.unknownExtra...)
		b = append(b, sn.ID...)
		b = append(b, sn.Name...)
	}
	return b
}

// loadSnapshots reads the snapshot table and returns its entries and size
// in bytes. Called with img.mu held.
func (img *Image) loadSnapshots() ([]Snapshot, int64, error) {
	return readSnapshots(img.f, &img.hdr, img.fileSize)
}

// ReadSnapshots reads the snapshot table of the image in r, of fileSize
// bytes, whose header is h (from ParseHeader), without opening it.
func ReadSnapshots(r io.ReaderAt, h *Header, fileSize int64) ([]Snapshot, error) {
	sns, _, err := readSnapshots(r, h, fileSize)
	return sns, err
}

func readSnapshots(r io.ReaderAt, h *Header, fileSize int64) ([]Snapshot, int64, error) {
	nb := h.NbSnapshots
	if nb == 0 {
		return nil, 0, nil
	}
	off := int64(h.SnapshotsOffset)
	// Read what the file holds, bounded by QEMU's table limit, in pieces
	// of growing size so that a small table costs a small read.
	n := min(fileSize-off, checkMaxSnapshotTable)
	if n <= 0 {
		return nil, 0, formatErr(int64(fieldSnapshotsOffset.off), "snapshot table at %#x is past the end of the file", off)
	}
	size := min(n, max(h.ClusterSize(), int64(nb)*64))
	for {
		b := make([]byte, size)
		if k, err := r.ReadAt(b, off); err != nil && !(err == io.EOF && int64(k) == size) {
			return nil, 0, fmt.Errorf("qcow2: read snapshot table: %w", err)
		}
		sns, tsize, err := decodeSnapshots(b, nb, h.Size&^511, off)
		if err == nil || size == n {
			return sns, tsize, err
		}
		size = min(n, size*4)
	}
}

// Snapshots returns the image's internal snapshots, in table order.
func (img *Image) Snapshots() ([]Snapshot, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return nil, ErrClosed
	}
	sns, _, err := img.loadSnapshots()
	return sns, err
}

// findSnapshot returns the index of the snapshot whose ID is idOrName, else
// of the first whose name is, as QEMU's find_snapshot_by_id_or_name.
func findSnapshot(sns []Snapshot, idOrName string) int {
	for i, sn := range sns {
		if sn.ID == idOrName {
			return i
		}
	}
	for i, sn := range sns {
		if sn.Name == idOrName {
			return i
		}
	}
	return -1
}

// newSnapshotID is one more than the largest numeric ID, as QEMU's find_new_snapshot_id.
func newSnapshotID(sns []Snapshot) string {
	maxID := uint64(0)
	for _, sn := range sns {
		if v, err := strconv.ParseUint(sn.ID, 10, 64); err == nil && v > maxID {
			maxID = v
		}
	}
	return strconv.FormatUint(maxID+1, 10)
}
