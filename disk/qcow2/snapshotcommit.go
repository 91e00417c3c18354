package qcow2

// The atomic switch of snapshot operations (see snapshotops.go): the new
// state is written past the end of the file and switched to with one
// header write.

import (
	"fmt"
	"maps"
	"slices"
)

// commit is the new state of a snapshot operation.
type commit struct {
	img *Image
	// delta holds the refcount changes the operation makes to existing
	// clusters (by index), the new structures' own not included.
	delta *deltas
	// srcL1 is the L1 table whose L2 tables the new active state copies;
	// l1Len the entries of the new active L1 table; size the disk size.
	srcL1 []l1Entry
	l1Len int
	size  uint64
	// sns is the new snapshot table, written unless keepTable.
	sns       []Snapshot
	keepTable bool
}

func newCommit(img *Image) *commit {
	return &commit{img: img, delta: &deltas{}}
}

// deltas are refcount changes by cluster index: dense, as an operation
// touches most clusters of the file (which bounds the indexes).
type deltas struct{ d []int64 }

func (x *deltas) add(c, v int64) {
	if c >= int64(len(x.d)) {
		x.d = append(x.d, make([]int64, c+1-int64(len(x.d))+int64(len(x.d))/4)...)
	}
	x.d[c] += v
}

func (x *deltas) get(c int64) int64 {
	if c < 0 || c >= int64(len(x.d)) {
		return 0
	}
	return x.d[c]
}

func (x *deltas) clone() *deltas { return &deltas{d: slices.Clone(x.d)} }

// run writes the new state and switches to it. Called with img.mu held,
// after a flush (nothing cached is dirty, nothing waits to be freed).
func (c *commit) run() error {
	img := c.img
	cs := img.cs
	clusters := func(n int64) int64 { return (n + cs - 1) / cs }

	// The new structures go to clusters free in the old state (refcount
	// 0: nothing on disk reaches them; a flush has just written back every
	// refcount and freed what waited), not taken by this commit already.
	taken := map[int64]bool{}
	cursor := int64(0)
	var pickErr error
	pick := func(n int64) int64 {
		start := cursor
		for i := int64(0); i < n; {
			cl := start + i
			rc, err := img.refcount(cl)
			if err != nil {
				pickErr = err
				return 0
			}
			if rc != 0 || taken[cl] {
				start, i = cl+1, 0
				continue
			}
			i++
		}
		for i := int64(0); i < n; i++ {
			taken[start+i] = true
		}
		if n == 1 || start == cursor {
			cursor = start + n
		}
		return start
	}
	place := func(n int64) int64 {
		if n == 0 {
			return 0
		}
		first := pick(n)
		for i := int64(0); i < n; i++ {
			c.delta.add(first+i, 1)
		}
		return first * cs
	}

	// 1. Copies of the source L2 tables, with the COPIED flags the new
	// refcounts call for, and the new active L1 table pointing to them.
	type blob struct {
		off  int64
		data []byte
	}
	var blobs []blob
	l1 := make([]l1Entry, c.l1Len)
	for i, e := range c.srcL1 {
		if e.l2Offset() == 0 || i >= c.l1Len {
			continue
		}
		src, err := img.readL2Raw(e.l2Offset(), "L1 entry "+fmt.Sprint(i))
		if err != nil {
			return err
		}
		b := slices.Clone(src)
		off := place(1)
		blobs = append(blobs, blob{off, b})
		l1[i] = newL1Entry(off)
	}
	for _, bl := range blobs {
		for j := int64(0); j < img.l2Entries; j++ {
			d := l2At(bl.data, j, img.extL2)
			if d.entry.compressed() || d.entry.offset() == 0 {
				continue
			}
			rc, err := img.refcount(d.entry.offset() / cs)
			if err != nil {
				return err
			}
			rc = uint64(int64(rc) + c.delta.get(d.entry.offset()/cs))
			d.entry = d.entry.withCopied(rc == 1)
			putL2(bl.data, j, img.extL2, d)
		}
	}
	l1Off := place(clusters(int64(c.l1Len) * 8))
	if l1Off == 0 {
		l1Off = int64(img.hdr.L1TableOffset)
	} else {
		blobs = append(blobs, blob{l1Off, encodeTable(l1)})
	}
	snOff, nbSns := int64(img.hdr.SnapshotsOffset), uint32(img.hdr.NbSnapshots)
	if !c.keepTable {
		tb := encodeSnapshots(c.sns)
		if len(tb) > checkMaxSnapshotTable {
			return fmt.Errorf("qcow2: snapshot table would exceed %d bytes", checkMaxSnapshotTable)
		}
		snOff, nbSns = place(clusters(int64(len(tb)))), uint32(len(c.sns))
		if len(tb) > 0 {
			blobs = append(blobs, blob{snOff, tb})
		}
	}

	// 2. The refcount structure: copies of the blocks that change, and a
	// new table. Their own clusters and the old ones they replace change
	// refcounts too, maybe in more blocks: repeat until the set is stable.
	base := c.delta
	changed := map[int64]bool{}
	blockAt := map[int64]int64{} // cluster of the copy of each changed block
	var rtStart, rtClusters, rtEntries int64
	for {
		if pickErr != nil {
			return pickErr
		}
		delta := base.clone()
		need := int64(len(img.reftable))
		for _, b := range slices.Sorted(maps.Keys(changed)) {
			need = max(need, b+1)
			if _, ok := blockAt[b]; !ok {
				blockAt[b] = pick(1)
			}
			delta.add(blockAt[b], 1)
		}
		if n := clusters(need * 8); n != rtClusters {
			if n*cs > maxRefTableBytes {
				return fmt.Errorf("qcow2: refcount table would exceed %d bytes", maxRefTableBytes)
			}
			for i := int64(0); i < rtClusters; i++ {
				delete(taken, rtStart+i)
			}
			rtStart, rtClusters = pick(n), n
		}
		for i := int64(0); i < rtClusters; i++ {
			delta.add(rtStart+i, 1)
		}
		for b := range changed {
			if b < int64(len(img.reftable)) {
				if off := img.reftable[b].blockOffset(); off != 0 {
					delta.add(off/cs, -1)
				}
			}
		}
		img.clusterRange(int64(img.hdr.RefcountTableOffset), int64(img.hdr.RefcountTableClusters)*cs, func(cl int64) { delta.add(cl, -1) })
		grew := false
		for cl, v := range delta.d {
			cl := int64(cl)
			if v != 0 && !changed[cl/img.rbEntries] {
				changed[cl/img.rbEntries] = true
				grew = true
			}
		}
		if !grew && pickErr == nil {
			c.delta, rtEntries = delta, rtClusters*cs/8
			break
		}
	}
	blocks := slices.Sorted(maps.Keys(changed))
	reftable := make([]refTableEntry, rtEntries)
	copy(reftable, img.reftable)
	newBlocks := make(map[int64]*table, len(blocks))
	for _, b := range blocks {
		t := &table{off: blockAt[b] * cs, data: make([]byte, cs)}
		if old, err := img.refblock(b * img.rbEntries); err != nil {
			return err
		} else if old != nil {
			copy(t.data, old.data)
		}
		reftable[b] = refTableEntry(t.off)
		newBlocks[b] = t
	}
	rtOff := rtStart * cs
	limit := maxRefcount(img.hdr.RefcountOrder)
	for cl, v := range c.delta.d {
		cl := int64(cl)
		if v == 0 {
			continue
		}
		t := newBlocks[cl/img.rbEntries]
		i := cl % img.rbEntries
		nv := int64(refcount(t.data, i, img.hdr.RefcountOrder)) + v
		if nv < 0 || uint64(nv) > limit {
			return fmt.Errorf("qcow2: refcount of cluster %d would become %d (at most %d): the image's refcounts are damaged or too narrow (run vmtui disk check)", cl, nv, limit)
		}
		setRefcount(t.data, i, img.hdr.RefcountOrder, uint64(nv))
	}
	for _, b := range blocks {
		blobs = append(blobs, blob{newBlocks[b].off, newBlocks[b].data})
	}
	blobs = append(blobs, blob{rtOff, encodeTable(reftable)})

	// 3. Everything past the old end, synced; then the switch.
	if pickErr != nil {
		return pickErr
	}
	for _, bl := range blobs {
		if _, err := img.f.WriteAt(bl.data, bl.off); err != nil {
			return fmt.Errorf("qcow2: write new metadata at %#x: %w", bl.off, err)
		}
		img.growFile(bl.off + int64(len(bl.data)))
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync new metadata: %w", err)
	}
	nh := img.hdr
	nh.Size, nh.L1Size, nh.L1TableOffset = c.size, uint32(c.l1Len), uint64(l1Off)
	nh.RefcountTableOffset, nh.RefcountTableClusters = uint64(rtOff), uint32(clusters(rtEntries*8))
	nh.NbSnapshots, nh.SnapshotsOffset = nbSns, uint64(snOff)
	if err := nh.writeFields(img.f, fieldSize, fieldSnapshotsOffset); err != nil {
		return fmt.Errorf("qcow2: switch to the new snapshot state: %w", err)
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}

	// 4. The image follows: new tables; freed clusters reusable once reads
	// in flight are done.
	img.hdr = nh
	img.l1, img.l1Dirty = l1, false
	img.reftable, img.reftableDirty, img.reftableMoved = reftable, false, false
	img.refblocks = make(map[int64]*table)
	for _, t := range newBlocks {
		img.refblocks[t.off] = t
	}
	img.l2 = newTableCache(img.l2.max)
	img.ioGate.Lock()
	//lint:ignore SA2001 the empty critical section is the barrier
	img.ioGate.Unlock()
	img.forgetDecompressed()
	img.compNext, img.compEnd = 0, 0
	img.nextFree = 0
	return nil
}
