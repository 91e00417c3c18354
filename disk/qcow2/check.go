package qcow2

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Check rebuilds the refcounts of the image in f from its metadata and
// compares them with the stored ones, as qemu-img check does, repairing what
// mode asks for. It works on images Open refuses for inconsistency.
//
// Check follows QEMU 7.2's qcow2_check_refcounts: it counts one reference
// for the header cluster, the active L1 table and every L2 table and data
// cluster it reaches, each internal snapshot's L1 table and what it reaches,
// the snapshot table, the refcount table and blocks, and (when the bitmaps
// autoclear bit says they are consistent) the bitmap directory, tables and
// data. A stored refcount below the computed one is a corruption, one above
// it a leak. OFLAG_COPIED is verified on the active L1 and L2 tables.
// Messages and counters use qemu-img check's words and rules.
//
// RepairLeaks lowers leaked refcounts to the computed value. RepairAll also
// raises refcounts that are too low and fixes OFLAG_COPIED flags; when that
// needs a refcount block that does not exist (or one that is itself damaged),
// it changes nothing and returns the unrepaired result with an error saying
// that the refcount structure must be rebuilt. After a repair the image is
// checked again and the counters describe the repaired image, with
// LeaksFixed and CorruptionsFixed from the repair, as qemu-img reports them.
// The dirty bit is cleared when the repaired image is consistent, and with
// RepairAll the corrupt bit too.
//
// Memory is bounded by the file size: one refcount of the image's width per
// host cluster of the file, one cluster-sized buffer, and tables no larger
// than the part of them that lies inside the file.
//
// Check stops soon after ctx is cancelled and returns ctx's error; a repair
// so interrupted has written only whole refcount blocks and table entries,
// each of which is a repair of its own, so the image is no worse than
// before (the dirty and corrupt bits stay as they were).
func Check(ctx context.Context, f File, mode RepairMode) (*CheckResult, error) {
	if mode < RepairNone || mode > RepairAll {
		return nil, fmt.Errorf("qcow2: check: unknown repair mode %d", mode)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("qcow2: check: %w", err)
	}
	size := fi.Size()
	// Tables past the end of a truncated file are corruptions to report,
	// not a reason to refuse the check.
	h, err := parseHeader(f, size, true)
	if err != nil {
		return nil, err
	}
	c, err := newChecker(f, h, size)
	if err != nil {
		return nil, err
	}
	if err := c.run(ctx); err != nil {
		return nil, err
	}
	res := c.res
	if mode == RepairNone {
		return res, nil
	}

	// Damage beyond refcounts (bad table pointers, unaligned or
	// out-of-file offsets) hides references: clusters they pointed at
	// look leaked, and freeing them could hand live data out again. Like
	// qemu-img, refuse to repair such an image rather than guess.
	if structural := res.Corruptions - c.copiedErrs - c.tooLow; structural > 0 {
		return res, fmt.Errorf("qcow2: check: %d corruptions in the image's tables cannot be repaired by refcount changes; not repairing (copy the data out with vmtui disk convert)", structural)
	}
	if mode == RepairLeaks && res.Corruptions > 0 {
		return res, fmt.Errorf("qcow2: check: the image has %d corruptions; repairing only leaks would leave it corrupt (use -r all)", res.Corruptions)
	}
	corruptionsBefore := res.Corruptions
	fixed, err := c.repair(ctx, mode)
	if err != nil {
		return res, err
	}
	if fixed.leaks > 0 || fixed.corruptions > 0 {
		c.msg("The following inconsistencies were found and repaired:")
		c.msg(fmt.Sprintf("    %d leaked clusters", fixed.leaks))
		c.msg(fmt.Sprintf("    %d corruptions", fixed.corruptions))
		c.msg("Double checking the fixed image now...")
		again, err := newChecker(f, h, size)
		if err != nil {
			return res, err
		}
		if err := again.run(ctx); err != nil {
			return nil, err
		}
		res = again.res
		res.Messages = append(c.res.Messages, res.Messages...)
		res.LeaksFixed = fixed.leaks
		// A repaired refcount can also resolve OFLAG_COPIED errors that
		// were counted against it, so corruptions fixed is what the
		// repair made disappear.
		res.CorruptionsFixed = fixed.corruptions
		if d := corruptionsBefore - res.Corruptions; d > res.CorruptionsFixed {
			res.CorruptionsFixed = d
		}
	}
	if res.Corruptions == 0 && res.Leaks == 0 && res.CheckErrors == 0 {
		bits := uint64(IncompatDirty)
		if mode == RepairAll {
			bits |= IncompatCorrupt
		}
		if err := checkClearIncompat(f, h, bits); err != nil {
			return res, err
		}
	}
	return res, nil
}

// QEMU limits that only check needs.
const (
	checkMaxSnapshotExtra    = 1024
	checkMaxSnapshotTable    = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE
	checkMaxBitmaps          = 65535
	checkMaxBitmapDir        = 1024 * checkMaxBitmaps
	checkMaxBitmapTable      = 0x8000000
	checkMaxBitmapPhys       = 0x20000000
	checkBitmapReservedFlags = 0xfffffffc
	checkBitmapDirEntry      = 24
	checkSnapshotHeader      = 40
	checkSnapshotMinExtra    = 16 // vm_state_size_large and disk_size

	// checkMaxMessages bounds CheckResult.Messages on hostile images.
	checkMaxMessages = 10000
)

// checkSnapshot is what check needs from one snapshot table entry.
type checkSnapshot struct {
	l1Offset uint64
	l1Size   uint32
	id, name string
}

// checker holds the state of one pass over an image.
type checker struct {
	f        File
	h        *Header
	fileSize int64
	cs       int64
	order    uint32

	// nb is the number of host clusters compared: the file size in
	// clusters, grown by one if a reference ends in the cluster after a
	// file end that is cluster aligned (as QEMU reallocates its array).
	nb       int64
	capacity int64
	computed []byte // refcounts computed from the metadata, image width
	stored   []byte // refcounts read from the refcount blocks, image width

	reftable []refTableEntry
	// badBlock marks reftable indexes whose refcount block could not be
	// read; the stored refcounts they cover are unknown.
	badBlock map[int64]bool
	// damagedRefblocks is set when a refcount table entry or block is
	// damaged: only a rebuilt refcount structure could repair that.
	damagedRefblocks bool
	// copiedErrs counts the OFLAG_COPIED errors found without repair.
	copiedErrs int
	// tooLow counts clusters whose stored refcount is below their references.
	tooLow int
	// meta marks clusters that hold metadata other than L2 tables; repair
	// never writes an L2 table over them.
	meta []uint64

	snapshots     []checkSnapshot
	snapshotsSize int64

	buf []byte // one cluster, or less for a file smaller than a cluster

	res        *CheckResult
	suppressed int
}

func newChecker(f File, h *Header, fileSize int64) (*checker, error) {
	cs := h.ClusterSize()
	nb := (fileSize + cs - 1) / cs
	c := &checker{
		f:        f,
		h:        h,
		fileSize: fileSize,
		cs:       cs,
		order:    h.RefcountOrder,
		nb:       nb,
		capacity: nb + 1,
		badBlock: map[int64]bool{},
		res:      &CheckResult{},
	}
	arrayBytes := (c.capacity<<c.order + 7) / 8
	c.computed = make([]byte, arrayBytes)
	c.stored = make([]byte, arrayBytes)
	c.meta = make([]uint64, (c.capacity+63)/64)
	// An L2 entry cut by the end of the file is read with zeros: round
	// up to the largest entry.
	bufSize := min(cs, (fileSize+15)&^15)
	c.buf = make([]byte, bufSize)
	virt := h.Size &^ 511
	total := virt / uint64(cs)
	if virt%uint64(cs) != 0 {
		total++
	}
	c.res.TotalClusters = int64(total)
	return c, nil
}

// msg records one detail line.
func (c *checker) msg(s string) {
	if len(c.res.Messages) >= checkMaxMessages {
		c.suppressed++
		return
	}
	c.res.Messages = append(c.res.Messages, s)
}

func (c *checker) corruption(format string, args ...any) {
	c.res.Corruptions++
	c.msg(fmt.Sprintf(format, args...))
}

func (c *checker) checkError(format string, args ...any) {
	c.res.CheckErrors++
	c.msg(fmt.Sprintf(format, args...))
}

// readAt fills p from the file at off; bytes past the end of the file read
// as zeros, as they do for QEMU.
func (c *checker) readAt(p []byte, off int64) error {
	if off >= c.fileSize || off < 0 {
		clear(p)
		return nil
	}
	n, err := c.f.ReadAt(p, off)
	if err == io.EOF || (err == nil && n == len(p)) {
		clear(p[n:])
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readTable reads up to n bytes of a table of 8-byte entries at off, but
// only the entries that start inside the file: the returned slice may be
// shorter than n, and what it lacks is zeros. An entry cut by the end of the
// file is kept, its missing bytes zeros, as QEMU reads it.
func (c *checker) readTable(off uint64, n int64) ([]byte, error) {
	if off >= uint64(c.fileSize) || n <= 0 {
		return nil, nil
	}
	if avail := c.fileSize - int64(off); n > avail {
		n = min(n, (avail+7)&^7)
	}
	b := make([]byte, n)
	if err := c.readAt(b, int64(off)); err != nil {
		return nil, err
	}
	return b, nil
}

func (c *checker) markMeta(off uint64, n int64) {
	if n <= 0 || off >= uint64(c.capacity*c.cs) {
		return
	}
	first := int64(off) / c.cs
	last := (int64(off) + n - 1) / c.cs
	if last >= c.capacity {
		last = c.capacity - 1
	}
	for k := first; k <= last; k++ {
		c.meta[k/64] |= 1 << (k % 64)
	}
}

func (c *checker) isMeta(k int64) bool {
	return k >= 0 && k < c.capacity && c.meta[k/64]&(1<<(k%64)) != 0
}

// incRefs counts one reference to every host cluster that [off, off+size)
// touches (qcow2_inc_refcounts_imrt).
func (c *checker) incRefs(off uint64, size int64) {
	if size <= 0 {
		return
	}
	// The last cluster of an image may be short, so a reference may
	// extend past the end of the file by less than a cluster.
	end := off + uint64(size)
	if end < off || end >= uint64(c.fileSize)+uint64(c.cs) {
		c.corruption("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", off, size)
		return
	}
	first := int64(off) / c.cs
	last := int64(end-1) / c.cs
	for k := first; k <= last; k++ {
		if k >= c.capacity {
			c.checkError("ERROR: cluster %d is past the refcount array", k)
			return
		}
		if k >= c.nb {
			c.nb = k + 1
		}
		r := refcount(c.computed, k, c.order)
		if r == maxRefcount(c.order) {
			c.corruption("ERROR: overflow cluster offset=%#x", k*c.cs)
			c.msg("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
			continue
		}
		setRefcount(c.computed, k, c.order, r+1)
	}
}

// checkEvery is how many loop iterations of cheap work (refcounts
// compared, table entries looked at) pass between two looks at the context.
const checkEvery = 1 << 14

// cancelled returns ctx's error on every checkEvery-th i.
func cancelled(ctx context.Context, i int64) error {
	if i%checkEvery != 0 {
		return nil
	}
	return ctx.Err()
}

// run does one full check pass (qcow2_co_check_locked without repair). It
// fails only when ctx is cancelled.
func (c *checker) run(ctx context.Context) error {
	if err := c.readSnapshotTable(ctx); err != nil {
		return err
	}
	if err := c.calculate(ctx); err != nil {
		return err
	}
	highest, err := c.compare(ctx)
	if err != nil {
		return err
	}
	if _, err := c.checkCopied(ctx, false); err != nil {
		return err
	}
	c.res.ImageEndOffset = (highest + 1) * c.cs
	if c.suppressed > 0 {
		c.res.Messages = append(c.res.Messages, fmt.Sprintf("(%d more messages not shown)", c.suppressed))
		c.suppressed = 0
	}
	return nil
}

// calculate builds the computed refcounts (calculate_refcounts).
func (c *checker) calculate(ctx context.Context) error {
	h := c.h
	c.incRefs(0, c.cs)
	c.markMeta(0, c.cs)

	if err := c.checkL1(ctx, h.L1TableOffset, h.L1Size, true); err != nil {
		return err
	}

	for _, sn := range c.snapshots {
		if sn.l1Offset%uint64(c.cs) != 0 {
			c.corruption("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", sn.id, sn.name, sn.l1Offset)
			continue
		}
		if int64(sn.l1Size) > maxL1Bytes/8 {
			c.corruption("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted", sn.id, sn.name, sn.l1Size)
			continue
		}
		if err := c.checkL1(ctx, sn.l1Offset, sn.l1Size, false); err != nil {
			return err
		}
	}
	c.incRefs(h.SnapshotsOffset, c.snapshotsSize)
	c.markMeta(h.SnapshotsOffset, c.snapshotsSize)

	rtBytes := int64(h.RefcountTableClusters) << h.ClusterBits
	c.incRefs(h.RefcountTableOffset, rtBytes)
	c.markMeta(h.RefcountTableOffset, rtBytes)
	rt, err := c.readTable(h.RefcountTableOffset, rtBytes)
	if err != nil {
		c.checkError("ERROR: could not read the refcount table at %#x: %v", h.RefcountTableOffset, err)
	}
	// Entries past the end of the file read as zero (no block): keep only
	// those inside it.
	c.reftable = decodeTable[refTableEntry](rt)

	if err := c.checkBitmaps(ctx); err != nil {
		return err
	}
	return c.checkRefblocks(ctx)
}

// checkL1 counts an L1 table and everything it reaches (check_refcounts_l1).
func (c *checker) checkL1(ctx context.Context, off uint64, size uint32, active bool) error {
	if size == 0 {
		return nil
	}
	n := int64(size) * 8
	c.incRefs(off, n)
	c.markMeta(off, n)
	l1, err := c.readTable(off, n)
	if err != nil {
		c.checkError("ERROR: I/O error in check_refcounts_l1: %v", err)
		return nil
	}
	// Entries past the end of the file read as zero: unallocated.
	for i := int64(0); i < int64(len(l1)/8); i++ {
		e := tableEntry[l1Entry](l1, i)
		if e == 0 {
			continue
		}
		// Each L2 table is a cluster read and scanned: look every time.
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.reserved() != 0 {
			c.corruption("ERROR found L1 entry with reserved bits set: %x", uint64(e))
		}
		l2 := uint64(e.l2Offset())
		c.incRefs(l2, c.cs)
		if l2%uint64(c.cs) != 0 {
			c.corruption("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2)
		}
		c.checkL2(l2, active)
	}
	return nil
}

// readL2 reads the L2 table at off into c.buf; it returns the entries
// that start inside the file, one cut by its end completed with zeros (the
// rest are zero, hence unallocated).
func (c *checker) readL2(off uint64) ([]byte, error) {
	if off >= uint64(c.fileSize) {
		return nil, nil
	}
	n := c.cs
	if avail := c.fileSize - int64(off); n > avail {
		es := c.h.l2EntrySize()
		n = min(n, (avail+es-1)/es*es, int64(len(c.buf)))
	}
	b := c.buf[:n]
	if err := c.readAt(b, int64(off)); err != nil {
		return nil, err
	}
	return b, nil
}

// checkL2 counts the clusters an L2 table references (check_refcounts_l2);
// for the active table it also gathers the allocation statistics.
func (c *checker) checkL2(off uint64, active bool) {
	b, err := c.readL2(off)
	if err != nil {
		c.checkError("ERROR: I/O error in check_refcounts_l2: %v", err)
		return
	}
	var next uint64
	// Entries past the end of the file read as zero: unallocated.
	entries := min(c.h.l2Entries(), int64(len(b))/c.h.l2EntrySize())
	for i := int64(0); i < entries; i++ {
		d := l2At(b, i, c.h.ExtendedL2())
		e, bitmap := d.entry, d.bitmap
		typ := e.typ(c.h.ExtendedL2())
		if typ != clusterCompressed && e.reserved() != 0 {
			c.corruption("ERROR found l2 entry with reserved bits set: %x", uint64(e))
		}
		switch typ {
		case clusterCompressed:
			if e.copied() {
				coff, _ := e.compressedRange(c.h.ClusterBits)
				c.corruption("ERROR: coffset=%#x: copied flag must never be set for compressed clusters", coff)
				e = e.withCopied(false)
			}
			if bitmap != 0 {
				c.corruption("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=%#x", i, uint64(e))
				continue
			}
			coff, csize := e.compressedRange(c.h.ClusterBits)
			c.incRefs(uint64(coff), csize)
			if active {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
		case clusterZeroAlloc, clusterNormal:
			hoff := uint64(e.offset())
			if bitmap.alloc()&bitmap.zero() != 0 {
				c.corruption("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", hoff)
			}
			if hoff%uint64(c.cs) != 0 {
				hasData := !e.zero()
				if c.h.ExtendedL2() {
					hasData = bitmap.alloc() != 0
				}
				if hasData {
					c.corruption("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", hoff)
				} else {
					c.corruption("ERROR offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", hoff)
				}
			}
			if active {
				c.res.AllocatedClusters++
				if next != 0 && hoff != next {
					c.res.FragmentedClusters++
				}
				next = hoff + uint64(c.cs)
			}
			c.incRefs(hoff, c.cs)
		case clusterUnallocated:
			if bitmap.alloc() != 0 {
				c.corruption("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		}
	}
}

// checkRefblocks counts the refcount blocks and checks the refcount table
// (check_refblocks).
func (c *checker) checkRefblocks(ctx context.Context) error {
	for i, e := range c.reftable {
		if err := cancelled(ctx, int64(i)); err != nil {
			return err
		}
		off := uint64(e.blockOffset())
		if e.reserved() != 0 {
			c.corruption("ERROR refcount table entry %d has reserved bits set", i)
			c.damagedRefblocks = true
			continue
		}
		if off%uint64(c.cs) != 0 {
			c.corruption("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			c.damagedRefblocks = true
			continue
		}
		if off/uint64(c.cs) >= uint64(c.nb) {
			c.corruption("ERROR refcount block %d is outside image", i)
			c.damagedRefblocks = true
			continue
		}
		if off != 0 {
			c.incRefs(off, c.cs)
			c.markMeta(off, c.cs)
			k := int64(off) / c.cs
			if r := refcount(c.computed, k, c.order); r != 1 {
				c.corruption("ERROR refcount block %d refcount=%d", i, r)
				c.damagedRefblocks = true
			}
		}
	}
	return nil
}

// blockEntries is the number of refcounts in one refcount block.
func (c *checker) blockEntries() int64 { return c.h.refcountBlockEntries() }

// refblockOffset returns the offset of the refcount block with reftable
// index rt, 0 if there is none, or an error if the entry is unusable.
func (c *checker) refblockOffset(rt int64) (int64, error) {
	if rt >= int64(len(c.reftable)) {
		return 0, nil
	}
	off := c.reftable[rt].blockOffset()
	if off%c.cs != 0 {
		return 0, formatErr(int64(c.h.RefcountTableOffset)+rt*8, "refcount block offset %#x is not cluster aligned (reftable index %#x)", off, rt)
	}
	return int64(off), nil
}

// loadStored reads the stored refcounts of clusters [0, nb) into c.stored.
func (c *checker) loadStored(ctx context.Context) error {
	per := c.blockEntries()
	// Eight bytes of slack: the last entry of a short block may straddle
	// the end of the file, past which it reads as zeros.
	block := make([]byte, len(c.buf)+8)
	for rt := int64(0); rt*per < c.nb; rt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		off, err := c.refblockOffset(rt)
		if err != nil {
			c.badBlock[rt] = true
			continue
		}
		if off <= 0 || off >= c.fileSize {
			continue // none, or past the end of the file: zeros
		}
		n := int64(len(c.buf))
		if avail := c.fileSize - off; n > avail {
			n = avail
		}
		clear(block)
		if err := c.readAt(block[:n], off); err != nil {
			c.badBlock[rt] = true
			c.checkError("ERROR: could not read refcount block %d at %#x: %v", rt, off, err)
			continue
		}
		for j := int64(0); j < per && rt*per+j < c.nb; j++ {
			if (j<<c.order)/8 >= n {
				break // the rest of a short block reads as zeros
			}
			setRefcount(c.stored, rt*per+j, c.order, refcount(block, j, c.order))
		}
	}
	return nil
}

// storedRefcount returns the stored refcount of host cluster k.
func (c *checker) storedRefcount(k int64) (uint64, error) {
	per := c.blockEntries()
	rt := k / per
	if k < c.nb {
		if c.badBlock[rt] {
			return 0, errors.New("input/output error")
		}
		return refcount(c.stored, k, c.order), nil
	}
	off, err := c.refblockOffset(rt)
	if err != nil || off == 0 {
		return 0, err
	}
	// A cluster past the end of the file: read just its entry.
	j := k % per
	pos := off + (j<<c.order)/8
	var b [8]byte
	width := int64(1) << c.order / 8
	if width == 0 {
		width = 1
	}
	if err := c.readAt(b[:width], pos); err != nil {
		return 0, err
	}
	idx := j
	if c.order < 3 {
		idx = j % (8 >> c.order)
	} else {
		idx = 0
	}
	return refcount(b[:width], idx, c.order), nil
}

// compare compares computed and stored refcounts (compare_refcounts) and
// returns the highest cluster in use.
func (c *checker) compare(ctx context.Context) (int64, error) {
	if err := c.loadStored(ctx); err != nil {
		return 0, err
	}
	var highest int64
	for i := int64(0); i < c.nb; i++ {
		if err := cancelled(ctx, i); err != nil {
			return 0, err
		}
		if c.badBlock[i/c.blockEntries()] {
			c.checkError("Can't get refcount for cluster %d: Input/output error", i)
			continue
		}
		stored := refcount(c.stored, i, c.order)
		computed := refcount(c.computed, i, c.order)
		if stored > 0 || computed > 0 {
			highest = i
		}
		if stored == computed {
			continue
		}
		if stored < computed {
			c.tooLow++
			c.corruption("ERROR cluster %d refcount=%d reference=%d", i, stored, computed)
		} else {
			c.res.Leaks++
			c.msg(fmt.Sprintf("Leaked cluster %d refcount=%d reference=%d", i, stored, computed))
		}
	}
	return highest, nil
}

// checkFixed are what a repair fixed.
type checkFixed struct {
	leaks, corruptions int
}
