package qcow2

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Writes go to data clusters at once; metadata (refcount blocks, the
// refcount table, L2 tables, the L1 table, header fields) changes in memory
// and reaches the file in flushLocked, in the order QEMU keeps:
//
//  1. refcount blocks, then fsync (which also makes the data durable);
//  2. the refcount table, then fsync; if it moved, the header's 12-byte
//     refcount table pointer, then fsync;
//  3. L2 tables, then fsync;
//  4. the L1 table, then fsync;
//  5. refcount decrements of clusters no longer referenced, then fsync.
//
// On-disk metadata thus never points at a cluster whose data, or whose
// refcount, is not yet on disk. A process killed at any instant leaves an
// image with at most leaked clusters.

// prepareWrite readies an image opened read-write. Called before the image
// is shared.
func (img *Image) prepareWrite() error {
	if img.hdr.Dirty() {
		// Refcounts may be stale (lazy refcounts, and whoever wrote it
		// crashed): rebuild them before allocating anything.
		// Open takes no context: this repair runs to its end.
		r, err := Check(context.Background(), img.f, RepairAll)
		if err != nil {
			return fmt.Errorf("qcow2: repair dirty image: %w", err)
		}
		if r.Corruptions > 0 {
			return fmt.Errorf("qcow2: dirty image has %d corruptions left after repair", r.Corruptions)
		}
		img.hdr.IncompatibleFeatures &^= IncompatDirty
	}
	if err := img.loadReftable(); err != nil {
		return err
	}
	if img.hdr.Version >= 3 && img.hdr.AutoclearFeatures != 0 {
		// Bitmaps and other autoclear features are not kept in step
		// with writes: clearing the bits tells QEMU they are stale.
		img.hdr.AutoclearFeatures = 0
		if err := img.hdr.writeFields(img.f, fieldAutoclearFeatures, fieldAutoclearFeatures); err != nil {
			return fmt.Errorf("qcow2: clear autoclear features: %w", err)
		}
		if err := img.f.Sync(); err != nil {
			return fmt.Errorf("qcow2: clear autoclear features: %w", err)
		}
	}
	// As QEMU does, search for free clusters from the start of the file,
	// so that space freed earlier is used again.
	img.nextFree = 0
	return nil
}

// clusterState is what a write must do to a guest cluster.
type clusterState int

const (
	stateInPlace clusterState = iota // an allocated, unshared, fully mapped cluster
	stateRewrite                     // an unshared host cluster to rewrite whole (zero-allocated, partial subclusters)
	stateNew                         // needs a new host cluster
)

// clusterLen is the number of bytes of guest cluster c inside the disk.
func (img *Image) clusterLen(c int64) int64 {
	return min(img.cs, int64(img.hdr.Size)-c*img.cs)
}

// state classifies guest cluster c for a write. Called with img.mu held.
func (img *Image) state(m l2Desc) (clusterState, error) {
	e := m.entry
	if e.compressed() || e.offset() == 0 {
		return stateNew, nil
	}
	rc, err := img.refcount(e.offset() / img.cs)
	if err != nil {
		return 0, err
	}
	if rc != 1 {
		return stateNew, nil // shared with a snapshot: copy on write
	}
	full := !e.zero()
	if img.extL2 {
		full = m.bitmap.alloc() == bitmapAllAlloc.alloc()
	}
	if full {
		return stateInPlace, nil
	}
	return stateRewrite, nil
}

// writableL2 returns the L2 table for guest cluster c, allocating it or
// copying it when it is shared. Called with img.mu held.
func (img *Image) writableL2(c int64) (*table, error) {
	l1i := c / img.l2Entries
	if l1i >= int64(len(img.l1)) {
		return nil, fmt.Errorf("qcow2: internal error: cluster %d beyond the L1 table", c)
	}
	old := img.l1[l1i].l2Offset()
	var src *table
	if old != 0 {
		t, err := img.l2Table(l1i)
		if err != nil {
			return nil, err
		}
		rc, err := img.refcount(old / img.cs)
		if err != nil {
			return nil, err
		}
		if rc == 1 {
			if !img.l1[l1i].copied() {
				img.l1[l1i] = img.l1[l1i].withCopied(true)
				img.l1Dirty = true
			}
			return t, nil
		}
		src = t // shared with a snapshot: copy it
	}
	if err := img.evictL2(); err != nil {
		return nil, err
	}
	off, err := img.alloc(1)
	if err != nil {
		return nil, err
	}
	t := &table{off: off, data: make([]byte, img.cs), dirty: true}
	if src != nil {
		copy(t.data, src.data)
		// Entries keep pointing at the same clusters, whose refcounts
		// already count the path through the snapshot's copy; only
		// COPIED flags must go, as those clusters stay shared.
		for i := int64(0); i < img.l2Entries; i++ {
			d := l2At(t.data, i, img.extL2)
			d.entry = d.entry.withCopied(false)
			putL2(t.data, i, img.extL2, d)
		}
		img.l2.remove(src)
		img.freeAfterSync = append(img.freeAfterSync, old/img.cs)
	}
	img.l2.add(t)
	img.growFile(off + img.cs)
	img.l1[l1i] = newL1Entry(off)
	img.l1Dirty = true
	return t, nil
}

// dataDesc is the L2 entry of a fully allocated, unshared cluster at host offset host.
func (img *Image) dataDesc(host int64) l2Desc {
	d := l2Desc{entry: dataEntry(host)}
	if img.extL2 {
		d.bitmap = bitmapAllAlloc
	}
	return d
}

func (img *Image) checkWritable(off, n int64) error {
	if img.closed {
		return ErrClosed
	}
	if img.readOnly {
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off+n > int64(img.hdr.Size) {
		return fmt.Errorf("%w: %d bytes at %d, disk size %d", ErrOutOfRange, n, off, img.hdr.Size)
	}
	return nil
}

// WriteAt writes the virtual disk, allocating clusters (with copy-on-write
// from the backing chain for partial clusters) as needed. Writes past the
// end of the disk fail; Resize grows it.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.checkWritable(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := img.writeLocked(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeLocked writes p at guest offset off. Called with img.mu held.
func (img *Image) writeLocked(p []byte, off int64) error {
	for len(p) > 0 {
		c := off >> img.clusterBits
		inner := off & (img.cs - 1)
		k := min(int64(len(p)), img.cs-inner)
		t, err := img.writableL2(c)
		if err != nil {
			return err
		}
		m := img.entryAt(t, c)
		st, err := img.state(m)
		if err != nil {
			return err
		}
		full := inner == 0 && k == img.clusterLen(c)
		switch {
		case st == stateInPlace:
			// Extend over following clusters mapped contiguously in place.
			host := m.entry.offset()
			n := k
			for next := c + 1; inner+n == (next-c)*img.cs && n < int64(len(p)) && next%img.l2Entries != 0; next++ {
				mm := img.entryAt(t, next)
				if mm.entry.offset() != host+(next-c)*img.cs {
					break
				}
				if s, err := img.state(mm); err != nil || s != stateInPlace {
					break
				}
				n = min(int64(len(p)), n+img.cs)
			}
			if err := img.writeData(p[:n], host+inner); err != nil {
				return err
			}
			k = n
		case full:
			// Whole clusters: allocate a run and write it in one go.
			r := int64(1)
			for next := c + 1; (r+1)*img.cs <= int64(len(p)) && next%img.l2Entries != 0; next++ {
				s, err := img.state(img.entryAt(t, next))
				if err != nil || s == stateInPlace {
					break
				}
				r++
			}
			k = r * img.cs
			if k > int64(len(p)) {
				k = int64(len(p)) // the disk's last, partial cluster
			}
			host, err := img.alloc(r)
			if err != nil {
				return err
			}
			if err := img.writeData(p[:k], host); err != nil {
				return err
			}
			for i := int64(0); i < r; i++ {
				img.freeEntry(img.entryAt(t, c+i).entry)
				img.setEntry(t, c+i, img.dataDesc(host+i*img.cs))
			}
		default:
			// Part of a cluster: merge with what it reads as now.
			buf := make([]byte, img.clusterLen(c))
			if err := img.readClusterLocked(buf, c); err != nil {
				return err
			}
			copy(buf[inner:], p[:k])
			host := m.entry.offset()
			if st == stateNew {
				if host, err = img.alloc(1); err != nil {
					return err
				}
			}
			if err := img.writeData(buf, host); err != nil {
				return err
			}
			if st == stateNew {
				img.freeEntry(m.entry)
			}
			img.setEntry(t, c, img.dataDesc(host))
		}
		p, off = p[k:], off+k
	}
	return nil
}

// readClusterLocked reads guest cluster c as it reads now. Called with img.mu held.
func (img *Image) readClusterLocked(buf []byte, c int64) error {
	segs, err := img.plan(c*img.cs, int64(len(buf)))
	if err != nil {
		return err
	}
	return img.readSegments(buf, c*img.cs, segs)
}

// writeData writes guest data at a host offset.
func (img *Image) writeData(p []byte, host int64) error {
	if _, err := img.f.WriteAt(p, host); err != nil {
		return fmt.Errorf("qcow2: write data at %#x: %w", host, err)
	}
	img.growFile(host + int64(len(p)))
	img.dataDirty = true
	return nil
}

// WriteZeroes makes [off, off+n) read as zeros: whole clusters become zero
// clusters (version 3) and release what they held; partial clusters and
// version 2 images get zeros written.
func (img *Image) WriteZeroes(off, n int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.checkWritable(off, n); err != nil {
		return err
	}
	var zeros []byte
	for n > 0 {
		c := off >> img.clusterBits
		inner := off & (img.cs - 1)
		k := min(n, img.cs-inner)
		m, err := img.lookup(c)
		if err != nil {
			return err
		}
		readsZero := img.backing == nil && m.entry == 0 && m.bitmap == 0
		switch {
		case readsZero:
		case inner == 0 && k == img.clusterLen(c) && img.hdr.Version >= 3:
			t, err := img.writableL2(c)
			if err != nil {
				return err
			}
			img.freeEntry(img.entryAt(t, c).entry)
			if img.extL2 {
				img.setEntry(t, c, l2Desc{bitmap: bitmapAllZero})
			} else {
				img.setEntry(t, c, l2Desc{entry: oflagZero})
			}
		default:
			if zeros == nil {
				zeros = make([]byte, img.cs)
			}
			if err := img.writeLocked(zeros[:k], off); err != nil {
				return err
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

// WriteCompressed writes one cluster, compressed with the image's
// compression type, at the cluster-aligned virtual offset off, which must be
// unallocated. data is the cluster's contents (shorter for the disk's last,
// partial cluster). Data that does not compress is written uncompressed.
func (img *Image) WriteCompressed(off int64, data []byte) error {
	plain := data
	if int64(len(data)) < img.cs {
		plain = make([]byte, img.cs) // QEMU compresses the zero-padded cluster
		copy(plain, data)
	}
	comp, err := Compress(img.hdr.CompressionType, nil, plain)
	if err != nil {
		return err
	}
	return img.WriteCompressedRaw(off, comp, data)
}

// WriteCompressedRaw is WriteCompressed for a cluster that the caller has
// compressed already with Compress (of the zero-padded whole cluster), so
// that compression can run on many goroutines. plain is the uncompressed
// data, written instead when compression did not pay.
func (img *Image) WriteCompressedRaw(off int64, compressed, plain []byte) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.checkWritable(off, int64(len(plain))); err != nil {
		return err
	}
	c := off >> img.clusterBits
	if off&(img.cs-1) != 0 || int64(len(plain)) != img.clusterLen(c) {
		return fmt.Errorf("qcow2: compressed write of %d bytes at %d is not one whole cluster", len(plain), off)
	}
	t, err := img.writableL2(c)
	if err != nil {
		return err
	}
	// As in QEMU, only a cluster with no host cluster (unallocated, or a
	// zero cluster without preallocation) can take compressed data.
	if m := img.entryAt(t, c); m.entry.compressed() || m.entry.offset() != 0 || m.bitmap.alloc() != 0 {
		return fmt.Errorf("qcow2: compressed write to cluster %d, which is allocated already", c)
	}
	if int64(len(compressed)) >= img.cs-1 || len(compressed) == 0 {
		return img.writeLocked(plain, off)
	}
	size := int64(len(compressed))
	var coff int64
	shareable := false
	if img.compNext != 0 && img.compNext+size <= img.compEnd {
		rc, err := img.refcount(img.compNext / img.cs)
		if err != nil {
			return err
		}
		shareable = rc < maxRefcount(img.hdr.RefcountOrder) // 1-bit refcounts cannot share
	}
	if shareable {
		coff = img.compNext
		if err := img.addRefcount(coff/img.cs, 1); err != nil {
			return err
		}
	} else {
		if coff, err = img.alloc(1); err != nil {
			return err
		}
		img.compEnd = coff + img.cs
	}
	if err := img.writeData(compressed, coff); err != nil {
		return err
	}
	img.forgetDecompressed()
	img.compNext = coff + size
	img.setEntry(t, c, l2Desc{entry: compressedEntry(coff, size, img.clusterBits)})
	return nil
}

// Flush writes all cached metadata in crash-safe order and syncs the file:
// everything written before Flush returns survives a crash.
func (img *Image) Flush() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return ErrClosed
	}
	return img.flushLocked()
}

// flushLocked writes metadata back in the order described at the top of
// this file. Called with img.mu held.
func (img *Image) flushLocked() error {
	if img.readOnly {
		return nil
	}
	sync := func(what string) error {
		if err := img.f.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync after %s: %w", what, err)
		}
		return nil
	}
	// 1. Refcount blocks, and the data written so far.
	wrote, err := img.writeRefblocks()
	if err != nil {
		return err
	}
	if wrote || img.dataDirty {
		if err := sync("refcount blocks"); err != nil {
			return err
		}
		img.dataDirty = false
	}
	// 2. The refcount table; a moved one is switched to in the header.
	if img.reftableDirty {
		if _, err := img.f.WriteAt(encodeTable(img.reftable), int64(img.hdr.RefcountTableOffset)); err != nil {
			return fmt.Errorf("qcow2: write refcount table: %w", err)
		}
		if err := sync("refcount table"); err != nil {
			return err
		}
		if img.reftableMoved {
			if err := img.hdr.writeFields(img.f, fieldRefcountTableOffset, fieldRefcountTableClusters); err != nil {
				return fmt.Errorf("qcow2: switch refcount table: %w", err)
			}
			if err := sync("refcount table switch"); err != nil {
				return err
			}
			img.reftableMoved = false
		}
		img.reftableDirty = false
	}
	// 3. L2 tables.
	wrote = false
	for _, t := range img.l2.tables {
		if !t.dirty {
			continue
		}
		if _, err := img.f.WriteAt(t.data, t.off); err != nil {
			return fmt.Errorf("qcow2: write L2 table at %#x: %w", t.off, err)
		}
		t.dirty, wrote = false, true
	}
	if wrote {
		if err := sync("L2 tables"); err != nil {
			return err
		}
	}
	// 4. The L1 table.
	if img.l1Dirty {
		if err := img.writeL1(img.l1, int64(img.hdr.L1TableOffset)); err != nil {
			return err
		}
		if err := sync("L1 table"); err != nil {
			return err
		}
		img.l1Dirty = false
	}
	// 5. Clusters nothing on disk points to any more.
	if len(img.freeAfterSync) > 0 {
		free := img.freeAfterSync
		img.freeAfterSync = nil
		for _, c := range free {
			if err := img.addRefcount(c, -1); err != nil {
				return err
			}
		}
		if _, err := img.writeRefblocks(); err != nil {
			return err
		}
		if err := sync("freeing clusters"); err != nil {
			return err
		}
		// Freed clusters are free on disk now: allocation may reuse them
		// once reads that looked them up before have finished.
		// A barrier: wait for the reads in flight to finish.
		img.ioGate.Lock()
		//lint:ignore SA2001 the empty critical section is the barrier
		img.ioGate.Unlock()
		img.forgetDecompressed()
		for _, c := range free {
			img.nextFree = min(img.nextFree, c)
		}
		// The host cluster being filled with compressed clusters may
		// have been freed, and could be reused for anything.
		img.compNext, img.compEnd = 0, 0
	}
	return nil
}

// writeRefblocks writes the dirty refcount blocks. Called with img.mu held.
func (img *Image) writeRefblocks() (bool, error) {
	wrote := false
	for _, t := range img.refblocks {
		if !t.dirty {
			continue
		}
		if _, err := img.f.WriteAt(t.data, t.off); err != nil {
			return wrote, fmt.Errorf("qcow2: write refcount block at %#x: %w", t.off, err)
		}
		t.dirty, wrote = false, true
	}
	return wrote, nil
}

// writeL1 writes an L1 table at off.
func (img *Image) writeL1(l1 []l1Entry, off int64) error {
	if _, err := img.f.WriteAt(encodeTable(l1), off); err != nil {
		return fmt.Errorf("qcow2: write L1 table: %w", err)
	}
	return nil
}

// Resize grows the virtual disk to size bytes (rounded up to 512). A
// larger L1 table is written in a new place and switched to with one
// header write.
func (img *Image) Resize(size int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.checkWritable(0, 0); err != nil {
		return err
	}
	size = (size + 511) &^ 511
	if size < int64(img.hdr.Size) {
		return fmt.Errorf("qcow2: shrinking from %d to %d bytes is not supported", img.hdr.Size, size)
	}
	return img.resizeLocked(size)
}

func (img *Image) resizeLocked(size int64) error {
	if err := img.flushLocked(); err != nil {
		return err
	}
	need := int64(img.hdr.l1EntriesFor(uint64(size)))
	if need*8 > maxL1Bytes {
		return fmt.Errorf("qcow2: a virtual size of %d bytes needs an L1 table larger than %d bytes", size, maxL1Bytes)
	}
	// The header's fields from the size to the L1 table's offset change
	// in one write.
	nh := img.hdr
	nh.Size = uint64(size)
	var oldL1 int64 = -1
	newL1 := img.l1
	if need > int64(len(img.l1)) {
		clusters := (need*8 + img.cs - 1) / img.cs
		off, err := img.alloc(clusters)
		if err != nil {
			return err
		}
		newL1 = make([]l1Entry, need)
		copy(newL1, img.l1)
		if err := img.writeL1(newL1, off); err != nil {
			return err
		}
		img.growFile(off + need*8)
		img.dataDirty = true
		// The new table and its refcounts reach the disk before the header points at it.
		if err := img.flushLocked(); err != nil {
			return err
		}
		nh.L1Size, nh.L1TableOffset = uint32(need), uint64(off)
		if len(img.l1) > 0 {
			oldL1 = int64(img.hdr.L1TableOffset)
		}
	}
	if err := nh.writeFields(img.f, fieldSize, fieldL1TableOffset); err != nil {
		return fmt.Errorf("qcow2: resize: %w", err)
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	if oldL1 >= 0 {
		for i := int64(0); i < (int64(len(img.l1))*8+img.cs-1)/img.cs; i++ {
			img.freeAfterSync = append(img.freeAfterSync, oldL1/img.cs+i)
		}
	}
	img.hdr.Size, img.hdr.L1Size, img.hdr.L1TableOffset = nh.Size, nh.L1Size, nh.L1TableOffset
	img.l1 = newL1
	return img.flushLocked()
}

// Close flushes and closes the image, its file and its backing image.
func (img *Image) Close() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return ErrClosed
	}
	err := img.flushLocked()
	img.closed = true
	if img.backing != nil {
		err = errors.Join(err, img.backing.Close())
	}
	return errors.Join(err, img.f.Close())
}

var _ io.ReaderAt = (*Image)(nil)
var _ io.WriterAt = (*Image)(nil)
