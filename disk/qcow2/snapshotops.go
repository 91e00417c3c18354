package qcow2

// Creating, applying and deleting internal snapshots, with the on-disk
// result QEMU 7.2's qcow2_snapshot_create, qcow2_snapshot_goto and
// qcow2_snapshot_delete give.
//
// QEMU changes refcounts and OFLAG_COPIED flags in place, one table after
// the other: a process killed in between leaves flags that disagree with
// the refcounts, which qemu-img check counts as corruptions (this engine's
// first version did so, in TestSnapshotCrash). The engine instead
// writes the whole new state beside the old one, past the end of the file
// (a new active L1 table, copies of its L2 tables with the COPIED flags the
// new refcounts call for, the new snapshot table, copies of the refcount
// blocks that change and a new refcount table), syncs, and switches to it
// with one write of the header's bytes 24 to 71 (disk size, L1 table,
// refcount table, snapshot table), within one sector. Killed before that
// write, the image is as before (the clusters past its old end are
// unreferenced, with refcount 0); after it, as after, with exact refcounts:
// the old structures are free in the new refcount blocks.
//
// Data clusters and L2 tables reachable from several L1 tables (the active
// one and snapshots') have a refcount of one per L1 table that reaches them;
// the writer copies any cluster whose refcount is not 1 before writing it.

import "fmt"

// readL2Raw returns the L2 table at host offset off, from the cache when
// it holds it, else read from the file without caching it. Called with
// img.mu held, with no dirty table in the cache.
func (img *Image) readL2Raw(off int64, where string) ([]byte, error) {
	if off%img.cs != 0 || off >= img.fileSize {
		return nil, formatErr(-1, "%s: L2 table offset %#x is unaligned or past the end of the file", where, off)
	}
	if t := img.l2.tables[off]; t != nil {
		return t.data, nil
	}
	b := make([]byte, img.cs)
	if err := img.readMeta(b, off); err != nil {
		return nil, fmt.Errorf("qcow2: read L2 table at %#x: %w", off, err)
	}
	return b, nil
}

// l1Refs calls fn for every cluster the L1 table l1 reaches, once per
// reference: each L2 table (l2 true), each data cluster (zero clusters with a
// preallocated one too), each cluster holding compressed data. where names
// the table in errors. Called with img.mu held, with no dirty table in the
// cache.
func (img *Image) l1Refs(l1 []l1Entry, where string, fn func(c int64, l2 bool)) error {
	for i, e := range l1 {
		off := e.l2Offset()
		if off == 0 {
			continue
		}
		if e.reserved() != 0 {
			return formatErr(-1, "%s: L1 entry %d has reserved bits set (%#x)", where, i, uint64(e))
		}
		b, err := img.readL2Raw(off, where)
		if err != nil {
			return err
		}
		fn(off/img.cs, true)
		for j := int64(0); j < img.l2Entries; j++ {
			d := l2At(b, j, img.extL2)
			switch typ := d.entry.typ(img.extL2); {
			case typ == clusterCompressed:
				coff, size := d.entry.compressedRange(img.clusterBits)
				if coff+size > img.fileSize+img.cs {
					return formatErr(-1, "%s: compressed data at %#x is past the end of the file", where, coff)
				}
				for c := coff / img.cs; c <= (coff+size-1)/img.cs; c++ {
					fn(c, false)
				}
			case d.entry.offset() != 0:
				h := d.entry.offset()
				if d.entry.reserved() != 0 || h%img.cs != 0 || h >= img.fileSize {
					return formatErr(-1, "%s: L2 table at %#x: entry %d (%#x) is invalid", where, off, j, uint64(d.entry))
				}
				fn(h/img.cs, false)
			}
		}
	}
	return nil
}

// readSnapshotL1 reads the L1 table of snapshot sn, checking that it lies
// in the file and within QEMU's bounds.
func (img *Image) readSnapshotL1(sn *Snapshot) ([]l1Entry, error) {
	n := int64(sn.l1Size)
	if sn.l1Offset%uint64(img.cs) != 0 || n*8 > maxL1Bytes || int64(sn.l1Offset) >= img.fileSize || int64(sn.l1Offset)+n*8 > img.fileSize {
		if n == 0 {
			return nil, nil
		}
		return nil, formatErr(-1, "snapshot %s (%s): L1 table of %d entries at %#x is invalid", sn.ID, sn.Name, n, sn.l1Offset)
	}
	b := make([]byte, n*8)
	if err := img.readMeta(b, int64(sn.l1Offset)); err != nil {
		return nil, fmt.Errorf("qcow2: read L1 table of snapshot %s: %w", sn.ID, err)
	}
	return decodeTable[l1Entry](b), nil
}

// clusterRange calls fn for the clusters of n bytes at byte offset off.
func (img *Image) clusterRange(off, n int64, fn func(c int64)) {
	if off == 0 || n <= 0 {
		return
	}
	for c := off / img.cs; c <= (off+n-1)/img.cs; c++ {
		fn(c)
	}
}

// snapshotWritable checks that the image can take snapshot changes and
// writes back what it has cached. Called with img.mu held.
func (img *Image) snapshotWritable() error {
	if err := img.checkWritable(0, 0); err != nil {
		return err
	}
	if img.hdr.RefcountOrder == 0 {
		return &UnsupportedError{Feature: "internal snapshots with 1-bit refcounts (clusters cannot be shared)"}
	}
	return img.flushLocked()
}

// CreateSnapshot takes a disk-only internal snapshot of the active state,
// named sn.Name, with sn's Date, VMClock and ICount, and returns it with its
// ID. It refuses a name that an existing snapshot has as its name or ID,
// and a VM state (sn.VMStateSize must be 0). No data is copied: the
// snapshot shares every cluster with the active state, which copies them
// on its next writes.
func (img *Image) CreateSnapshot(sn Snapshot) (Snapshot, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if sn.Name == "" || len(sn.Name) > maxSnapshotName {
		return Snapshot{}, fmt.Errorf("qcow2: snapshot name must have 1 to %d bytes", maxSnapshotName)
	}
	if sn.VMStateSize != 0 || sn.unknownExtra != nil {
		return Snapshot{}, &UnsupportedError{Feature: "saving a VM state in a snapshot (only QEMU can: snapshot-save)"}
	}
	if err := img.snapshotWritable(); err != nil {
		return Snapshot{}, err
	}
	sns, tableSize, err := img.loadSnapshots()
	if err != nil {
		return Snapshot{}, err
	}
	if findSnapshot(sns, sn.Name) >= 0 {
		return Snapshot{}, fmt.Errorf("qcow2: a snapshot named %q exists already", sn.Name)
	}
	if len(sns) >= maxSnapshots {
		return Snapshot{}, fmt.Errorf("qcow2: the image has %d snapshots, QEMU's limit", len(sns))
	}
	sn.ID = newSnapshotID(sns)
	sn.DiskSize = img.hdr.Size
	// The active L1 and L2 tables become the snapshot's as they are; the
	// active state gets copies. Only the data clusters gain a reference.
	sn.l1Offset, sn.l1Size = img.hdr.L1TableOffset, uint32(len(img.l1))
	c := newCommit(img)
	if err := img.l1Refs(img.l1, "active L1 table", func(cl int64, l2 bool) {
		if !l2 {
			c.delta.add(cl, 1)
		}
	}); err != nil {
		return Snapshot{}, err
	}
	img.clusterRange(int64(img.hdr.SnapshotsOffset), tableSize, func(cl int64) { c.delta.add(cl, -1) })
	c.srcL1, c.l1Len, c.size = img.l1, len(img.l1), img.hdr.Size
	c.sns = append(sns, sn)
	if err := c.run(); err != nil {
		return Snapshot{}, err
	}
	sn.unknownExtra = nil
	return sn, nil
}

// ApplySnapshot reverts the active state (the disk's contents and size) to
// the snapshot whose ID, else name, is idOrName. The snapshot stays; what
// was written since is gone. A snapshot with a VM state is applied to the
// disk only, as qemu-img snapshot -a does.
func (img *Image) ApplySnapshot(idOrName string) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.snapshotWritable(); err != nil {
		return err
	}
	sns, _, err := img.loadSnapshots()
	if err != nil {
		return err
	}
	i := findSnapshot(sns, idOrName)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrSnapshotNotFound, idOrName)
	}
	sn := &sns[i]
	snL1, err := img.readSnapshotL1(sn)
	if err != nil {
		return err
	}
	size := (sn.DiskSize + 511) &^ 511
	n := max(len(img.l1), len(snL1), int(img.hdr.l1EntriesFor(size)))
	if int64(n)*8 > maxL1Bytes {
		return formatErr(-1, "snapshot %s (%s): a disk of %d bytes needs an L1 table larger than %d bytes", sn.ID, sn.Name, size, maxL1Bytes)
	}
	c := newCommit(img)
	// The old active state's references go, its L1 table with them; the
	// snapshot's data clusters gain the new active state's.
	if err := img.l1Refs(img.l1, "active L1 table", func(cl int64, _ bool) { c.delta.add(cl, -1) }); err != nil {
		return err
	}
	img.clusterRange(int64(img.hdr.L1TableOffset), int64(len(img.l1))*8, func(cl int64) { c.delta.add(cl, -1) })
	if err := img.l1Refs(snL1, "snapshot "+sn.ID, func(cl int64, l2 bool) {
		if !l2 {
			c.delta.add(cl, 1)
		}
	}); err != nil {
		return err
	}
	c.srcL1, c.l1Len, c.size = snL1, n, size
	c.sns = sns
	c.keepTable = true
	return c.run()
}

// DeleteSnapshot deletes the snapshot whose ID, else name, is idOrName, and
// frees the clusters only it referenced.
func (img *Image) DeleteSnapshot(idOrName string) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.snapshotWritable(); err != nil {
		return err
	}
	sns, tableSize, err := img.loadSnapshots()
	if err != nil {
		return err
	}
	i := findSnapshot(sns, idOrName)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrSnapshotNotFound, idOrName)
	}
	sn := sns[i]
	snL1, err := img.readSnapshotL1(&sn)
	if err != nil {
		return err
	}
	c := newCommit(img)
	// The snapshot's references go, and its L1 table; the active L2 tables
	// are replaced by copies (whose COPIED flags may change), the active
	// L1 table by a new one.
	if err := img.l1Refs(snL1, "snapshot "+sn.ID, func(cl int64, _ bool) { c.delta.add(cl, -1) }); err != nil {
		return err
	}
	img.clusterRange(int64(sn.l1Offset), int64(len(snL1))*8, func(cl int64) { c.delta.add(cl, -1) })
	if err := img.l1Refs(img.l1, "active L1 table", func(cl int64, l2 bool) {
		if l2 {
			c.delta.add(cl, -1)
		}
	}); err != nil {
		return err
	}
	img.clusterRange(int64(img.hdr.L1TableOffset), int64(len(img.l1))*8, func(cl int64) { c.delta.add(cl, -1) })
	img.clusterRange(int64(img.hdr.SnapshotsOffset), tableSize, func(cl int64) { c.delta.add(cl, -1) })
	c.srcL1, c.l1Len, c.size = img.l1, len(img.l1), img.hdr.Size
	c.sns = append(sns[:i:i], sns[i+1:]...)
	return c.run()
}
