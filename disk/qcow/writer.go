package qcow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/flate"
)

// alignUp rounds n up to a multiple of the cluster size.
func (m *Image) alignUp(n int64) int64 {
	cs := m.h.ClusterSize()
	return (n + cs - 1) &^ (cs - 1)
}

// allocate reserves n bytes at the end of the file, cluster-aligned when
// aligned is set (compressed clusters are packed, as QEMU packs them).
func (m *Image) allocate(n int64, aligned bool) (int64, error) {
	off := m.fileEnd
	if aligned {
		off = m.alignUp(off)
	}
	if off > math.MaxInt64-n || uint64(off+n) >= uint64(1)<<(63-uint(m.h.ClusterBits)) {
		return 0, fmt.Errorf("qcow: image file too large")
	}
	m.fileEnd = off + n
	return off, nil
}

// tableFor returns the L2 table that maps cluster ci, allocating a new one
// (in memory; Flush writes it before the L1 entry) when there is none.
func (m *Image) tableFor(ci int64) ([]uint64, error) {
	l1i := ci >> m.h.L2Bits
	if off := m.l1[l1i]; off != 0 {
		return m.table(off)
	}
	if err := m.roomForL2(); err != nil {
		return nil, err
	}
	off, err := m.allocate(m.h.L2Entries()*8, true)
	if err != nil {
		return nil, err
	}
	t := make([]uint64, m.h.L2Entries())
	m.l2[uint64(off)] = t
	m.dirtyL2[uint64(off)] = true
	m.l1[l1i] = uint64(off)
	m.dirtyL1[l1i] = true
	return t, nil
}

// WriteAt writes the virtual disk. A partial write to a cluster not yet
// allocated here copies the rest of the cluster from the backing chain (or
// from the compressed cluster it replaces). Data is written at once; the
// tables that point at it are written by Flush and Close, after it.
func (m *Image) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off > m.Size() || int64(len(p)) > m.Size()-off {
		return 0, fmt.Errorf("qcow: write of %d bytes at %d: past the end of the disk (%d bytes)", len(p), off, m.Size())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cacheOff = 0
	return m.eachCluster(p, off, m.writeCluster)
}

func (m *Image) writeCluster(ci, in int64, src []byte) error {
	kind, e, err := m.lookup(ci)
	if err != nil {
		return err
	}
	if kind == kPlain {
		_, err := m.f.WriteAt(src, int64(e)+in)
		return err
	}
	cs := m.h.ClusterSize()
	buf := src
	if int64(len(src)) < cs {
		buf = make([]byte, cs)
		if kind == kCompressed {
			data, err := m.decompress(e)
			if err != nil {
				return err
			}
			copy(buf, data)
		} else if err := m.readBacking(buf, ci*cs); err != nil {
			return err
		}
		copy(buf[in:], src)
	}
	t, err := m.tableFor(ci)
	if err != nil {
		return err
	}
	at, err := m.allocate(cs, true)
	if err != nil {
		return err
	}
	if _, err := m.f.WriteAt(buf, at); err != nil {
		return err
	}
	m.setEntry(ci, t, uint64(at))
	return nil
}

// setEntry points cluster ci at e in its L2 table t.
func (m *Image) setEntry(ci int64, t []uint64, e uint64) {
	t[ci&(m.h.L2Entries()-1)] = e
	m.dirtyL2[m.l1[ci>>m.h.L2Bits]] = true
}

// WriteCompressed writes one whole cluster at off (cluster-aligned; the
// last cluster may be short, and is padded with zeros) as a compressed
// cluster, or as a plain one when it does not compress. The cluster must
// not be allocated yet.
func (m *Image) WriteCompressed(off int64, data []byte) error {
	if m.readOnly {
		return ErrReadOnly
	}
	cs := m.h.ClusterSize()
	if off < 0 || off%cs != 0 || off >= m.Size() || int64(len(data)) > cs || int64(len(data)) < min(cs, m.Size()-off) {
		return fmt.Errorf("qcow: compressed write of %d bytes at %d: not one whole cluster", len(data), off)
	}
	if int64(len(data)) < cs {
		d := make([]byte, cs)
		copy(d, data)
		data = d
	}
	var out bytes.Buffer
	w, err := flate.NewWriter(&out, flate.DefaultCompression)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return m.WriteCompressedRaw(off, out.Bytes(), data)
}

// WriteCompressedRaw is WriteCompressed with the cluster compressed
// already: compressed is plain (padded with zeros to a whole cluster) as
// raw deflate. When compressed is not shorter than a cluster, plain is
// written as a plain cluster.
func (m *Image) WriteCompressedRaw(off int64, compressed, plain []byte) error {
	if m.readOnly {
		return ErrReadOnly
	}
	cs := m.h.ClusterSize()
	if off < 0 || off%cs != 0 || off >= m.Size() || int64(len(plain)) > cs || int64(len(plain)) < min(cs, m.Size()-off) {
		return fmt.Errorf("qcow: compressed write of %d bytes at %d: not one whole cluster", len(plain), off)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cacheOff = 0
	ci := off / cs
	kind, _, err := m.lookup(ci)
	if err != nil {
		return err
	}
	if kind != kUnalloc {
		return fmt.Errorf("qcow: compressed write at %d: the cluster is allocated already", off)
	}
	if len(compressed) == 0 || int64(len(compressed)) >= cs {
		return m.writeCluster(ci, 0, plain)
	}
	t, err := m.tableFor(ci)
	if err != nil {
		return err
	}
	at, err := m.allocate(int64(len(compressed)), false)
	if err != nil {
		return err
	}
	if _, err := m.f.WriteAt(compressed, at); err != nil {
		return err
	}
	e := compressedFlag | uint64(len(compressed))<<(63-uint(m.h.ClusterBits)) | uint64(at)
	m.setEntry(ci, t, e)
	return nil
}

// Flush makes what was written durable, in a crash-safe order: the data,
// then the L2 tables, then the L1 entries, with an fsync after each step.
func (m *Image) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushLocked()
}

func (m *Image) flushLocked() error {
	if m.readOnly {
		return nil
	}
	if len(m.dirtyL2) == 0 && len(m.dirtyL1) == 0 {
		return m.f.Sync()
	}
	if err := m.f.Sync(); err != nil {
		return err
	}
	for off := range m.dirtyL2 {
		t := m.l2[off]
		raw := make([]byte, len(t)*8)
		for i, e := range t {
			binary.BigEndian.PutUint64(raw[i*8:], e)
		}
		if _, err := m.f.WriteAt(raw, int64(off)); err != nil {
			return fmt.Errorf("write L2 table at %d: %w", off, err)
		}
	}
	clear(m.dirtyL2)
	if err := m.f.Sync(); err != nil {
		return err
	}
	for i := range m.dirtyL1 {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], m.l1[i])
		if _, err := m.f.WriteAt(b[:], int64(m.h.L1TableOffset)+i*8); err != nil {
			return fmt.Errorf("write L1 entry %d: %w", i, err)
		}
	}
	clear(m.dirtyL1)
	return m.f.Sync()
}

// CreateOptions describe a new image.
type CreateOptions struct {
	Size        int64  // virtual size in bytes; rounded up to 512
	BackingFile string // name stored in the header, as given
	// ClusterBits and L2Bits are 0 for QEMU's choice: 4 KiB clusters and
	// 512-entry L2 tables, or with a backing file 512-byte clusters and
	// 4096-entry tables.
	ClusterBits, L2Bits uint8
}

// Create writes a new, empty image into f (which should be empty), as
// qemu-img create -f qcow makes it.
func Create(f File, opts CreateOptions) error {
	if opts.Size <= 0 || opts.Size > math.MaxInt64-511 {
		return fmt.Errorf("qcow: create: invalid size %d", opts.Size)
	}
	h := &Header{Version: Version, Size: uint64((opts.Size + 511) &^ 511), ClusterBits: 12, L2Bits: 9}
	hsize := uint64(HeaderSize)
	if opts.BackingFile != "" {
		if len(opts.BackingFile) > maxBackingNameLen {
			return fmt.Errorf("qcow: create: backing file name too long (%d bytes)", len(opts.BackingFile))
		}
		h.BackingFileOffset = hsize
		h.BackingFileSize = uint32(len(opts.BackingFile))
		hsize += uint64(len(opts.BackingFile))
		h.ClusterBits, h.L2Bits = 9, 12
	}
	if opts.ClusterBits != 0 {
		h.ClusterBits = opts.ClusterBits
	}
	if opts.L2Bits != 0 {
		h.L2Bits = opts.L2Bits
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits || h.L2Bits < MinL2Bits || h.L2Bits > MaxL2Bits {
		return fmt.Errorf("qcow: create: cluster_bits %d or l2_bits %d out of range", h.ClusterBits, h.L2Bits)
	}
	hsize = (hsize + 7) &^ 7
	h.L1TableOffset = hsize
	l1 := h.L1Entries()
	if l1 > maxL1Entries {
		return fmt.Errorf("qcow: create: size %d too large", opts.Size)
	}
	buf := make([]byte, hsize)
	copy(buf, h.encode())
	copy(buf[HeaderSize:], opts.BackingFile)
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return err
	}
	// The L1 table reads as zeros: extend the file over it, in whole sectors.
	if err := f.Truncate(int64(hsize) + (l1*8+511)&^511); err != nil {
		return err
	}
	return f.Sync()
}
