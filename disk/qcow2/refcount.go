package qcow2

import (
	"fmt"
)

// Refcounts are kept exact (vmtui never sets the dirty bit). Allocation
// only ever takes clusters whose refcount is zero, searching upward from
// nextFree, and never hands out a cluster freed since the last Flush: freed
// clusters wait in freeAfterSync until the metadata that dropped them is on
// disk. A crash can therefore leak clusters but never leave a reference to a
// cluster whose refcount is zero.

// loadReftable reads the refcount table. Called with img.mu held.
func (img *Image) loadReftable() error {
	n := int64(img.hdr.RefcountTableClusters) * img.cs / 8 // ParseHeader bounded this to 8 MiB
	buf := make([]byte, n*8)
	if err := img.readMeta(buf, int64(img.hdr.RefcountTableOffset)); err != nil {
		return fmt.Errorf("qcow2: read refcount table: %w", err)
	}
	img.reftable = decodeTable[refTableEntry](buf)
	return nil
}

// refblock returns the refcount block covering cluster index c, or nil when
// none is allocated. Called with img.mu held.
func (img *Image) refblock(c int64) (*table, error) {
	b := c / img.rbEntries
	if b >= int64(len(img.reftable)) {
		return nil, nil
	}
	e := img.reftable[b]
	off := e.blockOffset()
	if off == 0 {
		return nil, nil
	}
	if t := img.refblocks[off]; t != nil {
		return t, nil
	}
	if e.reserved() != 0 || off < 0 || off%img.cs != 0 || off >= img.fileSize {
		return nil, formatErr(int64(img.hdr.RefcountTableOffset)+b*8, "refcount table entry %d (%#x) is invalid or past the end of the file", b, uint64(e))
	}
	t := &table{off: off, data: make([]byte, img.cs)}
	if err := img.readMeta(t.data, off); err != nil {
		return nil, fmt.Errorf("qcow2: read refcount block at %#x: %w", off, err)
	}
	img.refblocks[off] = t
	return t, nil
}

// refcount returns the refcount of cluster index c. Called with img.mu held.
func (img *Image) refcount(c int64) (uint64, error) {
	t, err := img.refblock(c)
	if err != nil || t == nil {
		return 0, err
	}
	return refcount(t.data, c%img.rbEntries, img.hdr.RefcountOrder), nil
}

// addRefcount adds delta to the refcount of cluster index c, allocating a
// refcount block (and growing the refcount table) when c has none.
// Called with img.mu held.
func (img *Image) addRefcount(c int64, delta int64) error {
	t, err := img.refblock(c)
	if err != nil {
		return err
	}
	if t == nil {
		if delta < 0 {
			return fmt.Errorf("qcow2: refcount of cluster %d would drop below zero", c)
		}
		if t, err = img.newRefblock(c / img.rbEntries); err != nil {
			return err
		}
	}
	i := c % img.rbEntries
	v := refcount(t.data, i, img.hdr.RefcountOrder)
	nv := int64(v) + delta
	if nv < 0 {
		return fmt.Errorf("qcow2: refcount of cluster %d would drop below zero", c)
	}
	if uint64(nv) > maxRefcount(img.hdr.RefcountOrder) {
		return fmt.Errorf("qcow2: refcount of cluster %d would exceed %d", c, maxRefcount(img.hdr.RefcountOrder))
	}
	setRefcount(t.data, i, img.hdr.RefcountOrder, uint64(nv))
	t.dirty = true
	return nil
}

// newRefblock allocates the refcount block for block index b.
// Called with img.mu held.
func (img *Image) newRefblock(b int64) (*table, error) {
	if b >= int64(len(img.reftable)) {
		if err := img.growReftable(b + 1); err != nil {
			return nil, err
		}
		if img.reftable[b] != 0 { // growing the table may have made it
			return img.refblock(b * img.rbEntries)
		}
	}
	c, err := img.findFree(1)
	if err != nil {
		return nil, err
	}
	off := c * img.cs
	t := &table{off: off, data: make([]byte, img.cs), dirty: true}
	img.refblocks[off] = t
	img.reftable[b] = refTableEntry(off)
	img.reftableDirty = true
	img.nextFree = c + 1
	img.growFile(off + img.cs)
	// The block's own refcount, often in itself.
	if err := img.addRefcount(c, 1); err != nil {
		return nil, err
	}
	return t, nil
}

// growReftable moves the refcount table to a new, larger place that has at
// least need entries. The header switches to it on the next flush.
// Called with img.mu held.
func (img *Image) growReftable(need int64) error {
	// Room for the blocks the new table and its blocks will need, and slack.
	want := need + need/2 + 2
	clusters := (want*8 + img.cs - 1) / img.cs
	if clusters*img.cs > maxRefTableBytes {
		return fmt.Errorf("qcow2: refcount table would exceed %d bytes", maxRefTableBytes)
	}
	c, err := img.findFree(clusters)
	if err != nil {
		return err
	}
	old := img.hdr.RefcountTableOffset
	oldClusters := int64(img.hdr.RefcountTableClusters)
	nt := make([]refTableEntry, clusters*img.cs/8)
	copy(nt, img.reftable)
	img.reftable = nt
	img.hdr.RefcountTableOffset = uint64(c * img.cs)
	img.hdr.RefcountTableClusters = uint32(clusters)
	img.reftableDirty, img.reftableMoved = true, true
	img.nextFree = c + clusters
	img.growFile((c + clusters) * img.cs)
	for i := int64(0); i < clusters; i++ {
		if err := img.addRefcount(c+i, 1); err != nil {
			return err
		}
	}
	for i := int64(0); i < oldClusters; i++ {
		img.freeAfterSync = append(img.freeAfterSync, int64(old)/img.cs+i)
	}
	return nil
}

// findFree returns the first run of n clusters at or after nextFree whose
// refcounts are all zero. Called with img.mu held.
func (img *Image) findFree(n int64) (int64, error) {
	start := img.nextFree
	for i := int64(0); i < n; {
		rc, err := img.refcount(start + i)
		if err != nil {
			return 0, err
		}
		if rc != 0 {
			start += i + 1
			i = 0
			continue
		}
		i++
	}
	return start, nil
}

// alloc allocates n contiguous clusters and returns the host offset of the first.
// Called with img.mu held.
func (img *Image) alloc(n int64) (int64, error) {
	c, err := img.findFree(n)
	if err != nil {
		return 0, err
	}
	img.nextFree = c + n
	for i := int64(0); i < n; i++ {
		if err := img.addRefcount(c+i, 1); err != nil {
			return 0, err
		}
	}
	// Allocating a refcount block may have taken a cluster in the run.
	if img.nextFree != c+n {
		for i := int64(0); i < n; i++ {
			if rc, _ := img.refcount(c + i); rc != 1 {
				return 0, fmt.Errorf("qcow2: internal error: cluster %d allocated twice", c+i)
			}
		}
	}
	return c * img.cs, nil
}

// growFile records that the file now reaches end.
func (img *Image) growFile(end int64) {
	if end > img.fileSize {
		img.fileSize = end
	}
}

// freeEntry drops one reference to the clusters that entry e points to, once
// the metadata no longer pointing to them is on disk.
// Called with img.mu held.
func (img *Image) freeEntry(e l2Entry) {
	switch {
	case e.compressed():
		off, size := e.compressedRange(img.clusterBits)
		for c := off / img.cs; c <= (off+size-1)/img.cs; c++ {
			img.freeAfterSync = append(img.freeAfterSync, c)
		}
	case e.offset() != 0:
		img.freeAfterSync = append(img.freeAfterSync, e.offset()/img.cs)
	}
}
