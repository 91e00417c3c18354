package qcow2

// Creating, applying and deleting internal snapshots, as QEMU 7.2's
// qcow2_snapshot_create, qcow2_snapshot_goto and qcow2_snapshot_delete do,
// in the engine's crash-safe order: refcounts are raised (and synced) before
// any on-disk structure references what they count, and lowered only once
// the references are gone from the disk. Each operation switches over with
// one header write of a few bytes within one sector (the snapshot table's
// count and offset, or the disk size and the L1 table's size and offset),
// so a process killed at any instant leaves the old state or the new one,
// with at most leaked clusters.
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
// reference: each L2 table, each data cluster (zero clusters with a
// preallocated one too), each cluster holding compressed data. where names
// the table in errors. Called with img.mu held, with no dirty table in the
// cache.
func (img *Image) l1Refs(l1 []l1Entry, where string, fn func(c int64) error) error {
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
		if err := fn(off / img.cs); err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			d := l2At(b, j, img.extL2)
			switch typ := d.entry.typ(img.extL2); {
			case typ == clusterCompressed:
				coff, size := d.entry.compressedRange(img.clusterBits)
				if coff+size > img.fileSize+img.cs {
					return formatErr(-1, "%s: compressed data at %#x is past the end of the file", where, coff)
				}
				for c := coff / img.cs; c <= (coff+size-1)/img.cs; c++ {
					if err := fn(c); err != nil {
						return err
					}
				}
			case d.entry.offset() != 0:
				h := d.entry.offset()
				if d.entry.reserved() != 0 || h%img.cs != 0 || h >= img.fileSize {
					return formatErr(-1, "%s: L2 table at %#x: entry %d (%#x) is invalid", where, off, j, uint64(d.entry))
				}
				if err := fn(h / img.cs); err != nil {
					return err
				}
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

// writeNewTable allocates clusters for b, writes it there and returns its
// offset; 0 for an empty b. The clusters' refcounts reach the disk with the
// next flush, before anything references them.
func (img *Image) writeNewTable(b []byte, what string) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	off, err := img.alloc((int64(len(b)) + img.cs - 1) / img.cs)
	if err != nil {
		return 0, err
	}
	if _, err := img.f.WriteAt(b, off); err != nil {
		return 0, fmt.Errorf("qcow2: write %s: %w", what, err)
	}
	img.growFile(off + int64(len(b)))
	img.dataDirty = true
	return off, nil
}

// freeRange queues the clusters of n bytes at off to be freed after the next sync.
func (img *Image) freeRange(off, n int64) {
	if off == 0 || n <= 0 {
		return
	}
	for c := off / img.cs; c <= (off+n-1)/img.cs; c++ {
		img.freeAfterSync = append(img.freeAfterSync, c)
	}
}

// switchSnapshotTable writes sns as the new snapshot table and points the
// header at it with one write; the old table (oldSize bytes) is freed.
func (img *Image) switchSnapshotTable(sns []Snapshot, oldSize int64) error {
	b := encodeSnapshots(sns)
	if len(b) > checkMaxSnapshotTable {
		return fmt.Errorf("qcow2: snapshot table would exceed %d bytes", checkMaxSnapshotTable)
	}
	off, err := img.writeNewTable(b, "snapshot table")
	if err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	nh := img.hdr
	nh.NbSnapshots, nh.SnapshotsOffset = uint32(len(sns)), uint64(off)
	if err := nh.writeFields(img.f, fieldNbSnapshots, fieldSnapshotsOffset); err != nil {
		return fmt.Errorf("qcow2: switch snapshot table: %w", err)
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	oldOff := int64(img.hdr.SnapshotsOffset)
	img.hdr.NbSnapshots, img.hdr.SnapshotsOffset = nh.NbSnapshots, nh.SnapshotsOffset
	img.freeRange(oldOff, oldSize)
	return nil
}

// snapshotWritable checks that the image can take snapshot changes. Called
// with img.mu held.
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
	sns, oldSize, err := img.loadSnapshots()
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
	sn.l1Size = uint32(len(img.l1))

	// 1. The snapshot's L1 table: a copy of the active one.
	l1 := make([]l1Entry, len(img.l1))
	for i, e := range img.l1 {
		l1[i] = e.withCopied(false)
	}
	off, err := img.writeNewTable(encodeTable(l1), "snapshot L1 table")
	if err != nil {
		return Snapshot{}, err
	}
	sn.l1Offset = uint64(off)
	// 2. Every cluster the active table reaches gets one more reference;
	// on disk before anything references them.
	if err := img.l1Refs(img.l1, "active L1 table", func(c int64) error { return img.addRefcount(c, 1) }); err != nil {
		return Snapshot{}, err
	}
	if err := img.flushLocked(); err != nil {
		return Snapshot{}, err
	}
	// 3. Nothing the active table reaches is its own any more: COPIED goes.
	if err := img.setCopiedFlags(); err != nil {
		return Snapshot{}, err
	}
	if err := img.flushLocked(); err != nil {
		return Snapshot{}, err
	}
	// 4. The new table, and the header switched to it.
	if err := img.switchSnapshotTable(append(sns, sn), oldSize); err != nil {
		return Snapshot{}, err
	}
	if err := img.flushLocked(); err != nil {
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
	// What the active state holds now, to be released after the switch;
	// collected first, so that a damaged table stops us before any change.
	var old []int64
	if err := img.l1Refs(img.l1, "active L1 table", func(c int64) error { old = append(old, c); return nil }); err != nil {
		return err
	}
	// 1. The snapshot's clusters get one more reference, and the new
	// active L1 table its place: on disk before the header points at them.
	if err := img.l1Refs(snL1, "snapshot "+sn.ID, func(c int64) error { return img.addRefcount(c, 1) }); err != nil {
		return err
	}
	l1 := make([]l1Entry, n)
	for i, e := range snL1 {
		l1[i] = e.withCopied(false)
	}
	off, err := img.writeNewTable(encodeTable(l1), "L1 table")
	if err != nil {
		return err
	}
	if off == 0 { // a disk of size 0 has an empty L1 table: keep its offset
		off = int64(img.hdr.L1TableOffset)
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	// 2. The switch: disk size, L1 size and offset in one header write.
	nh := img.hdr
	nh.Size, nh.L1Size, nh.L1TableOffset = size, uint32(n), uint64(off)
	if err := nh.writeFields(img.f, fieldSize, fieldL1TableOffset); err != nil {
		return fmt.Errorf("qcow2: switch to snapshot %s: %w", sn.ID, err)
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	oldL1Off, oldL1Len := int64(img.hdr.L1TableOffset), int64(len(img.l1))*8
	img.hdr.Size, img.hdr.L1Size, img.hdr.L1TableOffset = nh.Size, nh.L1Size, nh.L1TableOffset
	img.l1 = l1
	img.l1Dirty = false
	// 3. The old active state's references go; its L2 tables leave the cache.
	img.l2 = newTableCache(img.l2.max)
	img.freeAfterSync = append(img.freeAfterSync, old...)
	if uint64(oldL1Off) != nh.L1TableOffset {
		img.freeRange(oldL1Off, oldL1Len)
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	// 4. Clusters now referenced once get their COPIED flags back.
	if err := img.setCopiedFlags(); err != nil {
		return err
	}
	return img.flushLocked()
}

// DeleteSnapshot deletes the snapshot whose ID, else name, is idOrName, and
// frees the clusters only it referenced.
func (img *Image) DeleteSnapshot(idOrName string) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.snapshotWritable(); err != nil {
		return err
	}
	sns, oldSize, err := img.loadSnapshots()
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
	var refs []int64
	if err := img.l1Refs(snL1, "snapshot "+sn.ID, func(c int64) error { refs = append(refs, c); return nil }); err != nil {
		return err
	}
	// 1. The table without it; from then on its clusters are unreferenced.
	rest := append(sns[:i:i], sns[i+1:]...)
	if err := img.switchSnapshotTable(rest, oldSize); err != nil {
		return err
	}
	// 2. Its references go, and its L1 table.
	img.freeAfterSync = append(img.freeAfterSync, refs...)
	img.freeRange(int64(sn.l1Offset), int64(len(snL1))*8)
	if err := img.flushLocked(); err != nil {
		return err
	}
	// 3. Clusters now referenced once get their COPIED flags back.
	if err := img.setCopiedFlags(); err != nil {
		return err
	}
	return img.flushLocked()
}

// setCopiedFlags sets OFLAG_COPIED in the active L1 and L2 tables exactly
// where the refcount of what they point to is 1 (qcow2_update_snapshot_refcount
// with addend 0). Only L2 tables of the active state alone get flags set;
// shared ones only lose flags, which is right for every table sharing them.
// The refcounts on disk must be the ones in memory. Called with img.mu held.
func (img *Image) setCopiedFlags() error {
	for i, e := range img.l1 {
		off := e.l2Offset()
		if off == 0 {
			continue
		}
		rc, err := img.refcount(off / img.cs)
		if err != nil {
			return err
		}
		if want := e.withCopied(rc == 1); want != e {
			img.l1[i] = want
			img.l1Dirty = true
		}
		t, err := img.l2Table(int64(i))
		if err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			d := l2At(t.data, j, img.extL2)
			if d.entry.compressed() || d.entry.offset() == 0 {
				continue
			}
			drc, err := img.refcount(d.entry.offset() / img.cs)
			if err != nil {
				return err
			}
			want := d.entry.withCopied(drc == 1 && rc == 1)
			if want != d.entry {
				d.entry = want
				putL2(t.data, j, img.extL2, d)
				t.dirty = true
			}
		}
	}
	return nil
}
