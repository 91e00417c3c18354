package qcow2

// Repairs made by Check: refcounts lowered (leaks) or raised, COPIED flags
// fixed, and the dirty and corrupt bits cleared once the image is consistent.

import (
	"context"
	"errors"
	"fmt"
)

// checkClearIncompat clears bits of the incompatible features field (header
// bytes 72-79) that are set, and syncs.
func checkClearIncompat(f File, h *Header, bits uint64) error {
	if h.Version < 3 || h.IncompatibleFeatures&bits == 0 {
		return nil
	}
	nh := *h
	nh.IncompatibleFeatures &^= bits
	if err := nh.writeFields(f, fieldIncompatibleFeatures, fieldIncompatibleFeatures); err != nil {
		return fmt.Errorf("qcow2: check: clear incompatible feature bits %#x: %w", h.IncompatibleFeatures&bits, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcow2: check: sync header: %w", err)
	}
	h.IncompatibleFeatures &^= bits
	return nil
}

// checkCopied verifies OFLAG_COPIED in the active L1 and L2 tables against
// the stored refcounts (check_oflag_copied); with repair it fixes them and
// returns how many it fixed. It stops with ctx's error when ctx is
// cancelled; each L1 entry and L2 table written before is a whole repair.
func (c *checker) checkCopied(ctx context.Context, repair bool) (fixed int, err error) {
	h := c.h
	l1, rerr := c.readTable(h.L1TableOffset, int64(h.L1Size)*8)
	if rerr != nil {
		c.checkError("ERROR: could not read the L1 table at %#x: %v", h.L1TableOffset, rerr)
		return 0, nil
	}
	word := "ERROR"
	if repair {
		word = "Repairing"
	}
	for i := int64(0); i < int64(h.L1Size); i++ {
		e := tableEntry[l1Entry](l1, i)
		if err := cancelled(ctx, i); err != nil {
			return fixed, err
		}
		l2 := e.l2Offset()
		if l2 == 0 {
			continue
		}
		// Each L2 table is a cluster read and scanned: look every time.
		if err := ctx.Err(); err != nil {
			return fixed, err
		}
		r, gerr := c.storedRefcount(l2 / c.cs)
		if gerr != nil {
			continue
		}
		if (r == 1) != e.copied() {
			c.corruption("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", word, i, uint64(e), r)
			if !repair {
				c.copiedErrs++
			} else {
				pos := int64(h.L1TableOffset) + i*8
				if _, werr := c.f.WriteAt(encodeTable([]l1Entry{e.withCopied(r == 1)}), pos); werr != nil {
					c.res.CheckErrors++
					return fixed, fmt.Errorf("qcow2: check: write L1 entry %d at %d: %w", i, pos, werr)
				}
				c.res.Corruptions--
				fixed++
			}
		}
		b, rerr := c.readL2(uint64(l2))
		if rerr != nil {
			c.checkError("ERROR: Could not read L2 table: %v", rerr)
			continue
		}
		dirty := 0
		entries := min(h.l2Entries(), int64(len(b))/h.l2EntrySize())
		for j := int64(0); j < entries; j++ {
			d := l2At(b, j, h.ExtendedL2())
			le := d.entry
			typ := le.typ(h.ExtendedL2())
			if typ != clusterNormal && typ != clusterZeroAlloc {
				continue
			}
			r, gerr := c.storedRefcount(le.offset() / c.cs)
			if gerr != nil {
				continue
			}
			if (r == 1) != le.copied() {
				c.corruption("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", word, uint64(le), r)
				if !repair {
					c.copiedErrs++
				} else {
					d.entry = le.withCopied(r == 1)
					putL2(b, j, h.ExtendedL2(), d)
					dirty++
				}
			}
		}
		if dirty == 0 {
			continue
		}
		if l2%c.cs != 0 || c.isMeta(l2/c.cs) {
			c.checkError("ERROR: Could not write L2 table at %#x; metadata overlap check failed", l2)
			continue
		}
		if _, werr := c.f.WriteAt(b, l2); werr != nil {
			c.res.CheckErrors++
			return fixed, fmt.Errorf("qcow2: check: write L2 table at %d: %w", l2, werr)
		}
		c.res.Corruptions -= dirty
		fixed += dirty
	}
	return fixed, nil
}

// blockWritable reports whether the refcount block with reftable index rt
// exists and can safely be rewritten: inside the file, aligned, and
// referenced by nothing but the refcount table.
func (c *checker) blockWritable(rt int64) (int64, bool) {
	if rt >= int64(len(c.reftable)) || c.badBlock[rt] {
		return 0, false
	}
	e := c.reftable[rt]
	off := e.blockOffset()
	if e.reserved() != 0 || off <= 0 || off%c.cs != 0 || off/c.cs >= c.nb { // bit 63 makes off negative
		return 0, false
	}
	if refcount(c.computed, off/c.cs, c.order) != 1 {
		return 0, false
	}
	return off, true
}

// repair applies mode to the refcounts found by run, then (RepairAll) the
// COPIED flags. Cancelled, it stops between two refcount blocks (or table
// writes), syncs what it wrote and returns ctx's error.
func (c *checker) repair(ctx context.Context, mode RepairMode) (checkFixed, error) {
	var fixed checkFixed
	per := c.blockEntries()
	if mode == RepairAll {
		// Nothing is written unless every refcount that must be raised
		// has a sound refcount block to hold it.
		if c.damagedRefblocks {
			return fixed, formatErr(int64(c.h.RefcountTableOffset),
				"check: the refcount table or a refcount block is damaged; the refcount structure must be rebuilt")
		}
		for i := int64(0); i < c.nb; i++ {
			if err := cancelled(ctx, i); err != nil {
				return fixed, err
			}
			s, cp := refcount(c.stored, i, c.order), refcount(c.computed, i, c.order)
			if s < cp {
				if _, ok := c.blockWritable(i / per); !ok {
					return fixed, formatErr(int64(c.h.RefcountTableOffset)+(i/per)*8,
						"check: the refcount block covering cluster %d (refcount=%d reference=%d) is missing; the refcount structure must be rebuilt", i, s, cp)
				}
			}
		}
	}

	// Rewrite refcount blocks one at a time.
	block := make([]byte, len(c.buf))
	wrote := false
	var stopped error
	for rt := int64(0); rt*per < c.nb; rt++ {
		if stopped = ctx.Err(); stopped != nil {
			break
		}
		var changes []int64
		for i := rt * per; i < (rt+1)*per && i < c.nb; i++ {
			s, cp := refcount(c.stored, i, c.order), refcount(c.computed, i, c.order)
			if s > cp || (mode == RepairAll && s < cp) {
				changes = append(changes, i)
			}
		}
		if len(changes) == 0 {
			continue
		}
		off, ok := c.blockWritable(rt)
		if !ok {
			continue // reported again by the second pass
		}
		n := int64(len(block))
		if avail := c.fileSize - off; n > avail {
			n = avail
		}
		b := block[:n]
		if err := c.readAt(b, off); err != nil {
			return fixed, fmt.Errorf("qcow2: check: read refcount block %d at %d: %w", rt, off, err)
		}
		for _, i := range changes {
			s, cp := refcount(c.stored, i, c.order), refcount(c.computed, i, c.order)
			j := i - rt*per
			if ((j+1)<<c.order+7)/8 > n {
				// The entry lies past the end of a short refcount block,
				// which reads as zeros there: complete the block.
				ext := make([]byte, c.cs)
				copy(ext, b)
				b, n = ext, c.cs
			}
			setRefcount(b, j, c.order, cp)
			setRefcount(c.stored, i, c.order, cp)
			c.msg(fmt.Sprintf("Repairing cluster %d refcount=%d reference=%d", i, s, cp))
			if s > cp {
				fixed.leaks++
				c.res.Leaks--
			} else {
				fixed.corruptions++
				c.res.Corruptions--
			}
		}
		if _, err := c.f.WriteAt(b, off); err != nil {
			return fixed, fmt.Errorf("qcow2: check: write refcount block %d at %d: %w", rt, off, err)
		}
		wrote = true
	}
	if wrote {
		if err := c.f.Sync(); err != nil {
			return fixed, fmt.Errorf("qcow2: check: sync refcount blocks: %w", err)
		}
	}
	if stopped != nil {
		return fixed, stopped
	}

	if mode == RepairAll {
		// Recount the COPIED errors against the repaired refcounts: the
		// first pass counted them against the old ones.
		c.res.Corruptions -= c.copiedErrs
		n, err := c.checkCopied(ctx, true)
		fixed.corruptions += n
		if n > 0 {
			if serr := c.f.Sync(); serr != nil {
				return fixed, errors.Join(err, fmt.Errorf("qcow2: check: sync L1/L2 tables: %w", serr))
			}
		}
		if err != nil {
			return fixed, err
		}
	}
	return fixed, nil
}
