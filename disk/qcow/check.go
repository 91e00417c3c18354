package qcow

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
)

// CheckResult is the outcome of Check, with qemu-img check's counters.
type CheckResult struct {
	Corruptions        int
	Leaks              int
	TotalClusters      int64
	AllocatedClusters  int64
	CompressedClusters int64
	FragmentedClusters int64
	ImageEndOffset     int64
	// Messages are the detail lines, in qemu-img check's words where it
	// has some ("ERROR ...", "Leaked cluster 9 ...").
	Messages []string
}

// maxCheckMessages bounds the detail lines Check keeps.
const maxCheckMessages = 1000

// extent kinds of what Check finds in the file.
const (
	exMeta  = iota // the header, backing file name and L1 table
	exL2           // an L2 table, idx its L1 index
	exData         // a data cluster, idx its virtual cluster
	exCompr        // a compressed cluster, idx its virtual cluster
)

type fileExtent struct {
	start, end int64
	kind       uint8
	idx        int64
}

func (e fileExtent) String() string {
	switch e.kind {
	case exMeta:
		return "the header and L1 table"
	case exL2:
		return fmt.Sprintf("the L2 table of L1 entry %d", e.idx)
	case exData:
		return fmt.Sprintf("data cluster %d", e.idx)
	}
	return fmt.Sprintf("compressed cluster %d", e.idx)
}

// Check checks the tables of the qcow image in f, beyond what qemu-img
// does (it cannot check qcow images): an L2 table or a cluster past the
// end of the file, an L2 table or data cluster not aligned to the cluster
// size, and bytes of the file used twice (two tables, two clusters, or one
// over the header) are corruptions; clusters of the file nothing uses are
// leaks. A header that cannot be parsed is an error. Check reads each L2
// table once, holds a few words per L2 entry in use and a bit per cluster of
// the file, and stops soon after ctx is cancelled, with ctx's error.
func Check(ctx context.Context, f File) (*CheckResult, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	h, err := ParseHeader(f, size)
	if err != nil {
		return nil, err
	}
	cs := h.ClusterSize()
	res := &CheckResult{ImageEndOffset: size, TotalClusters: (h.VirtualSize() + cs - 1) / cs}
	report := func(leak bool, format string, args ...any) {
		if leak {
			res.Leaks++
		} else {
			res.Corruptions++
		}
		if len(res.Messages) < maxCheckMessages {
			res.Messages = append(res.Messages, fmt.Sprintf(format, args...))
		}
	}
	n := h.L1Entries()
	raw := make([]byte, n*8) // bounded by the file's size (ParseHeader)
	if _, err := f.ReadAt(raw, int64(h.L1TableOffset)); err != nil {
		return nil, fmt.Errorf("read L1 table: %w", err)
	}
	metaEnd := int64(HeaderSize)
	if h.BackingFileOffset != 0 {
		metaEnd = max(metaEnd, int64(h.BackingFileOffset)+int64(h.BackingFileSize))
	}
	exts := []fileExtent{{0, metaEnd, exMeta, 0}}
	exts = append(exts, fileExtent{int64(h.L1TableOffset), int64(h.L1TableOffset) + n*8, exMeta, 0})
	l2Bytes := h.L2Entries() * 8
	var tables []fileExtent
	for i := range n {
		off := binary.BigEndian.Uint64(raw[i*8:])
		switch {
		case off == 0:
			continue
		case off >= uint64(size) || uint64(l2Bytes) > uint64(size)-off:
			report(false, "ERROR L1 entry %d: L2 table at offset %d is past the end of the file (%d bytes)", i, off, size)
			continue
		case off%uint64(cs) != 0:
			report(false, "ERROR L1 entry %d: L2 table at offset %d is not aligned to a cluster", i, off)
		}
		tables = append(tables, fileExtent{int64(off), int64(off) + l2Bytes, exL2, i})
	}
	// Tables that overlap anything are reported and not read: reading
	// each table once bounds the work by the file's size.
	bad := overlaps(slices.Concat(exts, tables), func(a, b fileExtent) {
		report(false, "ERROR offset %d: %s overlaps %s", b.start, b, a)
	})
	exts = append(exts, tables...)
	tbl := make([]byte, l2Bytes)
	prev := int64(-1)
	for _, t := range tables {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if bad[t] {
			continue
		}
		if _, err := f.ReadAt(tbl, t.start); err != nil {
			return nil, fmt.Errorf("read L2 table at %d: %w", t.start, err)
		}
		for j := range h.L2Entries() {
			e := binary.BigEndian.Uint64(tbl[j*8:])
			if e == 0 {
				continue
			}
			ci := t.idx<<h.L2Bits | j
			res.AllocatedClusters++
			if e&compressedFlag != 0 {
				res.CompressedClusters++
				off, csz := h.compressedRange(e)
				if csz == 0 || off >= uint64(size) || csz > uint64(size)-off {
					report(false, "ERROR cluster %d: compressed data (%d bytes at offset %d) is past the end of the file", ci, csz, off)
					continue
				}
				exts = append(exts, fileExtent{int64(off), int64(off + csz), exCompr, ci})
				continue
			}
			if e%uint64(cs) != 0 {
				report(false, "ERROR cluster %d: offset %d is not aligned to a cluster", ci, e)
				continue
			}
			if e >= uint64(size) || uint64(cs) > uint64(size)-e {
				report(false, "ERROR cluster %d: data at offset %d is past the end of the file (%d bytes)", ci, e, size)
				continue
			}
			if prev >= 0 && int64(e) != prev+cs {
				res.FragmentedClusters++
			}
			prev = int64(e)
			exts = append(exts, fileExtent{int64(e), int64(e) + cs, exData, ci})
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	overlaps(exts, func(a, b fileExtent) {
		if a.kind <= exL2 && b.kind <= exL2 {
			return // reported above
		}
		report(false, "ERROR offset %d: %s overlaps %s (a cluster used twice)", b.start, b, a)
	})
	// Leaks: clusters of the file that nothing touches.
	used := make([]bool, (size+cs-1)/cs)
	// QEMU writes the L1 table in whole sectors: the padding is no leak.
	l1Pad := fileExtent{start: int64(h.L1TableOffset), end: int64(h.L1TableOffset) + (n*8+511)&^511}
	for _, e := range append(exts, l1Pad) {
		for c := e.start / cs; c < (e.end+cs-1)/cs && c < int64(len(used)); c++ {
			used[c] = true
		}
	}
	for c, u := range used {
		if !u {
			report(true, "Leaked cluster %d (file offset %d) refcount=0 reference=0", c, int64(c)*cs)
		}
	}
	return res, nil
}

// overlaps sorts exts by start and calls fn(a, b) for each extent b that
// starts inside an earlier one, a; it returns the extents involved.
func overlaps(exts []fileExtent, fn func(a, b fileExtent)) map[fileExtent]bool {
	slices.SortFunc(exts, func(a, b fileExtent) int {
		if a.start != b.start {
			return int(min(max(a.start-b.start, -1), 1))
		}
		return int(a.kind) - int(b.kind)
	})
	bad := map[fileExtent]bool{}
	var cur fileExtent
	for i, e := range exts {
		if i > 0 && e.start < cur.end {
			fn(cur, e)
			bad[cur], bad[e] = true, true
		}
		if i == 0 || e.end > cur.end {
			cur = e
		}
	}
	return bad
}
