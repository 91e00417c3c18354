package qcow2

// The check of the tables that only some images have: internal snapshots
// and persistent dirty bitmaps.

import (
	"context"
	"encoding/binary"
)

// readSnapshotTable parses the snapshot table (qcow2_read_snapshots).
func (c *checker) readSnapshotTable(ctx context.Context) error {
	h := c.h
	if h.NbSnapshots == 0 {
		return nil
	}
	var hdr [checkSnapshotHeader]byte
	be := binary.BigEndian
	off := int64(h.SnapshotsOffset)
	// Entries past the end of the file have no extra data.
	extras := make([]int64, h.NbSnapshots) // at most 65536, checked by parseHeader
	for i := 0; i < int(h.NbSnapshots); i++ {
		if err := cancelled(ctx, int64(i)); err != nil {
			return err
		}
		off = (off + 7) &^ 7
		if off >= c.fileSize {
			// The rest of the table lies past the end of the file and
			// reads as zeros: entries without L1 tables, names or extra
			// data. The reference check reports the overhang.
			off += int64(int(h.NbSnapshots)-i) * checkSnapshotHeader
			break
		}
		if err := c.readAt(hdr[:], off); err != nil {
			c.checkError("ERROR: could not read snapshot table entry %d at %#x: %v", i, off, err)
			return nil
		}
		sn := checkSnapshot{
			l1Offset: be.Uint64(hdr[0:]),
			l1Size:   be.Uint32(hdr[8:]),
		}
		idSize := int64(be.Uint16(hdr[12:]))
		nameSize := int64(be.Uint16(hdr[14:]))
		extra := int64(be.Uint32(hdr[36:]))
		extras[i] = extra
		off += checkSnapshotHeader
		if extra > checkMaxSnapshotExtra {
			c.corruption("ERROR: Too much extra metadata in snapshot table entry %d (%d bytes)", i, extra)
		}
		off += extra
		if idSize+nameSize > 0 && off+idSize+nameSize-int64(h.SnapshotsOffset) <= checkMaxSnapshotTable {
			strs := make([]byte, idSize+nameSize) // at most 128 KiB
			if err := c.readAt(strs, off); err != nil {
				c.checkError("ERROR: could not read snapshot table entry %d at %#x: %v", i, off, err)
				return nil
			}
			sn.id, sn.name = string(strs[:idSize]), string(strs[idSize:])
		}
		off += idSize + nameSize
		if off-int64(h.SnapshotsOffset) > checkMaxSnapshotTable {
			c.corruption("ERROR: snapshot table is too big (more than %d bytes)", checkMaxSnapshotTable)
			return nil
		}
		c.snapshots = append(c.snapshots, sn)
	}
	if off-int64(h.SnapshotsOffset) > checkMaxSnapshotTable {
		c.corruption("ERROR: snapshot table is too big (more than %d bytes)", checkMaxSnapshotTable)
		return nil
	}
	c.snapshotsSize = off - int64(h.SnapshotsOffset)
	// A version 3 entry has at least the 16 bytes of extra data that hold
	// the VM state size and the disk size.
	if h.Version >= 3 {
		for i, extra := range extras {
			if extra < checkSnapshotMinExtra {
				c.corruption("ERROR snapshot table entry %d is incomplete", i)
			}
		}
	}
	return nil
}

// checkBitmaps counts the persistent bitmaps' clusters
// (qcow2_check_bitmaps_refcounts). QEMU ignores the bitmaps extension when
// the bitmaps autoclear bit is clear: a program without bitmap support
// wrote the image, the bitmaps are stale and their clusters are leaks.
func (c *checker) checkBitmaps(ctx context.Context) error {
	bm := c.h.Bitmaps
	if bm == nil || c.h.AutoclearFeatures&AutoclearBitmaps == 0 {
		return nil
	}
	if bm.Count == 0 || bm.Count > checkMaxBitmaps || bm.DirectorySize == 0 || bm.DirectorySize > checkMaxBitmapDir ||
		bm.DirectoryOffset%uint64(c.cs) != 0 {
		c.corruption("ERROR bitmaps extension: %d bitmaps, directory of %d bytes at %#x are invalid", bm.Count, bm.DirectorySize, bm.DirectoryOffset)
		return nil
	}
	c.incRefs(bm.DirectoryOffset, int64(bm.DirectorySize))
	c.markMeta(bm.DirectoryOffset, int64(bm.DirectorySize))
	if !tableFits(bm.DirectoryOffset, bm.DirectorySize, 1, uint64(c.fileSize)) {
		c.corruption("ERROR bitmap directory (%d bytes at %#x) extends past the end of the file", bm.DirectorySize, bm.DirectoryOffset)
		return nil
	}
	dir, err := c.readTable(bm.DirectoryOffset, int64(bm.DirectorySize))
	if err != nil {
		c.checkError("ERROR: could not read the bitmap directory at %#x: %v", bm.DirectoryOffset, err)
		return nil
	}
	type table struct {
		off  uint64
		size uint32
	}
	var tables []table
	be := binary.BigEndian
	pos := 0
	for pos < len(dir) {
		if pos+checkBitmapDirEntry > len(dir) {
			c.corruption("ERROR broken bitmap directory at %#x", bm.DirectoryOffset+uint64(pos))
			return nil
		}
		e := dir[pos:]
		tOff := be.Uint64(e[0:])
		tSize := be.Uint32(e[8:])
		flags := be.Uint32(e[12:])
		typ := e[16]
		gran := e[17]
		nameSize := int(be.Uint16(e[18:]))
		extra := int(be.Uint32(e[20:]))
		entrySize := (checkBitmapDirEntry + nameSize + extra + 7) &^ 7
		if len(tables) >= int(bm.Count) {
			c.corruption("ERROR more bitmaps found than the %d the header extension specifies", bm.Count)
			return nil
		}
		if extra < 0 || pos+entrySize > len(dir) || entrySize < checkBitmapDirEntry {
			c.corruption("ERROR broken bitmap directory at %#x", bm.DirectoryOffset+uint64(pos))
			return nil
		}
		phys := uint64(tSize) * uint64(c.cs)
		bad := extra != 0 || tSize == 0 || tOff == 0 || tOff%uint64(c.cs) != 0 || tSize > checkMaxBitmapTable ||
			gran > 31 || gran < 9 || flags&checkBitmapReservedFlags != 0 || nameSize > 1023 || typ != 1 ||
			phys > checkMaxBitmapPhys || c.h.Size > (phys*8)<<gran
		if bad {
			name := e[checkBitmapDirEntry+extra : checkBitmapDirEntry+extra+nameSize]
			c.corruption("ERROR bitmap '%s' doesn't satisfy the constraints", name)
			return nil
		}
		tables = append(tables, table{tOff, tSize})
		pos += entrySize
	}
	if len(tables) != int(bm.Count) {
		c.corruption("ERROR less bitmaps found than the %d the header extension specifies", bm.Count)
		return nil
	}
	for _, t := range tables {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int64(t.size) * 8
		c.incRefs(t.off, n)
		c.markMeta(t.off, n)
		tb, err := c.readTable(t.off, n)
		if err != nil {
			c.checkError("ERROR: could not read bitmap table at %#x: %v", t.off, err)
			continue
		}
		for i := int64(0); i < int64(len(tb)/8); i++ {
			e := tableEntry[bitmapTableEntry](tb, i)
			off := e.offset()
			if e.reserved() != 0 || (off != 0 && (e.allOnes() || off%c.cs != 0)) {
				c.corruption("ERROR bitmap table entry %d at %#x is invalid: %#x", i, t.off+uint64(i)*8, uint64(e))
				continue
			}
			if off != 0 {
				c.incRefs(uint64(off), c.cs)
			}
		}
	}
	return nil
}
