package qcow2

import (
	"container/list"
	"fmt"
	"io"
	"sync"
)

// defaultCacheSize bounds the L2 tables held in memory.
const defaultCacheSize = 32 << 20

// Image is an open qcow2 image. Its methods are safe for concurrent use.
//
// Reads look up their clusters under the image's lock and do their I/O
// outside it. Writes hold the lock: allocation, copy-on-write and linking of
// a cluster happen as one step, so two writers never allocate the same
// cluster twice and a reader never sees a cluster before its data.
type Image struct {
	mu sync.Mutex
	// ioGate is read-held by reads from the moment they look up their
	// host clusters until their I/O is done; freeing clusters for reuse
	// waits for it, so a read never returns data that a cluster reused
	// for another guest offset holds.
	ioGate   sync.RWMutex
	f        File
	readOnly bool
	closed   bool
	backing  Backing
	hdr      Header

	clusterBits uint32
	cs          int64 // cluster size in bytes
	l2Entries   int64 // entries per L2 table
	extL2       bool
	fileSize    int64 // bytes in the file as far as this image knows

	l1        []l1Entry
	l1Dirty   bool
	dataDirty bool // data written since the last sync

	l2 *tableCache // L2 tables by host offset

	// Refcounts: the whole refcount table, and refcount blocks by host offset.
	reftable      []refTableEntry
	reftableDirty bool
	reftableMoved bool // written at a new place: switch the header after writing it
	refblocks     map[int64]*table
	rbEntries     int64 // refcounts per block
	// freeAfterSync holds clusters (by index) whose refcounts drop once the
	// metadata that stopped referencing them is on disk.
	freeAfterSync []int64
	nextFree      int64 // cluster index where allocation searches from

	// compressed cluster allocation: the host byte offset where the next
	// compressed cluster may go, and the end of the host cluster it is in.
	compNext, compEnd int64

	// last decompressed cluster, for small sequential reads.
	zmu     sync.Mutex
	zEntry  l2Entry
	zBuf    []byte
	zFilled bool
}

// table is a cached metadata table of one cluster.
type table struct {
	off   int64
	data  []byte
	dirty bool
	elem  *list.Element
}

// tableCache is an LRU of L2 tables.
type tableCache struct {
	max    int
	tables map[int64]*table
	lru    *list.List // front = most recent
}

func newTableCache(max int) *tableCache {
	if max < 2 {
		max = 2
	}
	return &tableCache{max: max, tables: make(map[int64]*table), lru: list.New()}
}

func (c *tableCache) get(off int64) *table {
	t := c.tables[off]
	if t != nil {
		c.lru.MoveToFront(t.elem)
	}
	return t
}

func (c *tableCache) add(t *table) {
	t.elem = c.lru.PushFront(t)
	c.tables[t.off] = t
}

// victim returns the least recently used table when the cache is full.
func (c *tableCache) victim() *table {
	if len(c.tables) < c.max {
		return nil
	}
	return c.lru.Back().Value.(*table)
}

func (c *tableCache) remove(t *table) {
	c.lru.Remove(t.elem)
	delete(c.tables, t.off)
}

// Open opens the qcow2 image in f. Unless opts.ReadOnly, writes are allowed;
// an image marked corrupt opens read-only only. The image owns f and the
// backing image from then on, and closes both on Close (or when Open fails).
func Open(f File, opts Options) (img *Image, err error) {
	var backing Backing
	defer func() {
		if err != nil {
			if backing != nil {
				backing.Close()
			}
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("qcow2: %w", err)
	}
	h, err := ParseHeader(f, fi.Size())
	if err != nil {
		return nil, err
	}
	if !opts.ReadOnly && h.Corrupt() {
		return nil, ErrCorrupt
	}
	if h.BackingFile != "" {
		if opts.OpenBacking == nil {
			return nil, fmt.Errorf("qcow2: image has backing file %q and no way to open it", h.BackingFile)
		}
		if backing, err = opts.OpenBacking(h.BackingFile, h.BackingFormat); err != nil {
			return nil, err
		}
	}
	// QEMU 7.2 rounds a virtual size that is not a multiple of 512 down.
	h.Size &^= 511
	img = &Image{
		f:           f,
		readOnly:    opts.ReadOnly,
		backing:     backing,
		hdr:         *h,
		clusterBits: h.ClusterBits,
		cs:          h.ClusterSize(),
		l2Entries:   h.l2Entries(),
		extL2:       h.ExtendedL2(),
		fileSize:    fi.Size(),
		refblocks:   make(map[int64]*table),
		rbEntries:   h.refcountBlockEntries(),
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	img.l2 = newTableCache(int(cacheSize / img.cs))
	if err := img.loadL1(); err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		if err := img.prepareWrite(); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// loadL1 reads the active L1 table; ParseHeader bounded its size by the file.
func (img *Image) loadL1() error {
	n := int64(img.hdr.L1Size)
	buf := make([]byte, n*8)
	if err := img.readMeta(buf, int64(img.hdr.L1TableOffset)); err != nil {
		return fmt.Errorf("qcow2: read L1 table: %w", err)
	}
	img.l1 = decodeTable[l1Entry](buf)
	return nil
}

// readMeta reads metadata at off, treating bytes past the end of the file
// as zeros (QEMU does not pad the file's last cluster).
func (img *Image) readMeta(p []byte, off int64) error {
	n, err := img.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return err
}

// Header returns a copy of the image's header.
func (img *Image) Header() Header {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.hdr
}

// Size returns the virtual size in bytes.
func (img *Image) Size() int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return int64(img.hdr.Size)
}

// ClusterSize returns the cluster size in bytes.
func (img *Image) ClusterSize() int64 { return img.cs }

// Backing returns the backing image, or nil.
func (img *Image) Backing() Backing { return img.backing }

// ReadOnly reports whether the image was opened read-only.
func (img *Image) ReadOnly() bool { return img.readOnly }

// l2Table returns the L2 table for L1 index i, or nil when unallocated.
// Called with img.mu held.
func (img *Image) l2Table(i int64) (*table, error) {
	if i >= int64(len(img.l1)) {
		return nil, nil
	}
	e := img.l1[i]
	off := e.l2Offset()
	if off == 0 {
		return nil, nil
	}
	if t := img.l2.get(off); t != nil {
		return t, nil
	}
	if e.reserved() != 0 {
		return nil, formatErr(int64(img.hdr.L1TableOffset)+i*8, "L1 entry %d has reserved bits set (%#x)", i, uint64(e))
	}
	if off%img.cs != 0 {
		return nil, formatErr(int64(img.hdr.L1TableOffset)+i*8, "L1 entry %d: L2 table offset %#x is not cluster aligned", i, off)
	}
	if off >= img.fileSize {
		return nil, formatErr(int64(img.hdr.L1TableOffset)+i*8, "L1 entry %d: L2 table offset %#x is past the end of the file (%d bytes)", i, off, img.fileSize)
	}
	if err := img.evictL2(); err != nil {
		return nil, err
	}
	t := &table{off: off, data: make([]byte, img.cs)}
	if err := img.readMeta(t.data, off); err != nil {
		return nil, fmt.Errorf("qcow2: read L2 table at %#x: %w", off, err)
	}
	img.l2.add(t)
	return t, nil
}

// evictL2 makes room in the L2 cache, writing metadata back first if the
// table to drop is dirty.
func (img *Image) evictL2() error {
	v := img.l2.victim()
	if v == nil {
		return nil
	}
	if v.dirty {
		if err := img.flushLocked(); err != nil {
			return err
		}
	}
	img.l2.remove(v)
	return nil
}

// lookup returns the L2 entry for guest cluster index c. Called with img.mu held.
func (img *Image) lookup(c int64) (l2Desc, error) {
	t, err := img.l2Table(c / img.l2Entries)
	if err != nil || t == nil {
		return l2Desc{}, err
	}
	return img.entryAt(t, c), nil
}

// entryAt returns the L2 entry of guest cluster c from its L2 table t.
func (img *Image) entryAt(t *table, c int64) l2Desc {
	return l2At(t.data, c%img.l2Entries, img.extL2)
}

// setEntry sets the L2 entry of guest cluster c in its L2 table t.
func (img *Image) setEntry(t *table, c int64, d l2Desc) {
	putL2(t.data, c%img.l2Entries, img.extL2, d)
	t.dirty = true
}

// segment is a piece of a read: where a run of guest bytes comes from.
type segment struct {
	kind   segKind
	host   int64 // host offset (segData) or guest offset (segBacking)
	n      int64
	entry  l2Entry // segCompressed
	within int64   // offset inside the decompressed cluster
}

type segKind int

const (
	segZero segKind = iota
	segData
	segBacking
	segCompressed
)

// classify resolves guest range [off, off+n), which lies within one guest
// cluster, into segments appended to segs. Called with img.mu held.
func (img *Image) classify(segs []segment, off, n int64) ([]segment, error) {
	c := off >> img.clusterBits
	m, err := img.lookup(c)
	if err != nil {
		return segs, err
	}
	e := m.entry
	inner := off & (img.cs - 1)
	if e.compressed() {
		if img.extL2 && m.bitmap != 0 {
			return segs, img.l2Corrupt(c, "compressed cluster with a subcluster bitmap")
		}
		coff, _ := e.compressedRange(img.clusterBits)
		if coff >= img.fileSize {
			return segs, img.l2Corrupt(c, fmt.Sprintf("compressed data at %#x is past the end of the file", coff))
		}
		return append(segs, segment{kind: segCompressed, n: n, entry: e, within: inner}), nil
	}
	host := e.offset()
	if e.reserved() != 0 || (img.extL2 && e.zero()) {
		return segs, img.l2Corrupt(c, fmt.Sprintf("reserved bits set in L2 entry %#x", uint64(e)))
	}
	if host != 0 {
		if host%img.cs != 0 {
			return segs, img.l2Corrupt(c, fmt.Sprintf("data cluster offset %#x is not cluster aligned", host))
		}
		if host >= img.fileSize {
			return segs, img.l2Corrupt(c, fmt.Sprintf("data cluster offset %#x is past the end of the file (%d bytes)", host, img.fileSize))
		}
	}
	if !img.extL2 {
		switch e.typ(false) {
		case clusterZeroPlain, clusterZeroAlloc:
			if img.hdr.Version < 3 {
				return segs, img.l2Corrupt(c, "zero flag in a version 2 image")
			}
			return appendSeg(segs, segment{kind: segZero, n: n}), nil
		case clusterNormal:
			return appendSeg(segs, segment{kind: segData, host: host + inner, n: n}), nil
		default:
			return appendSeg(segs, img.unallocated(off, n)), nil
		}
	}
	// Extended L2: each 1/32 of the cluster has its own state.
	alloc, zero := m.bitmap.alloc(), m.bitmap.zero()
	if alloc&zero != 0 {
		return segs, img.l2Corrupt(c, fmt.Sprintf("subclusters both allocated and zero (bitmap %#x)", m.bitmap))
	}
	if host == 0 && alloc != 0 {
		return segs, img.l2Corrupt(c, fmt.Sprintf("allocated subclusters in an unallocated cluster (bitmap %#x)", m.bitmap))
	}
	sub := img.cs / subclusters
	for n > 0 {
		s := inner / sub
		k := min(n, (s+1)*sub-inner)
		var seg segment
		switch {
		case alloc&(1<<s) != 0:
			seg = segment{kind: segData, host: host + inner, n: k}
		case zero&(1<<s) != 0:
			seg = segment{kind: segZero, n: k}
		default:
			seg = img.unallocated(off, k)
		}
		segs = appendSeg(segs, seg)
		off, inner, n = off+k, inner+k, n-k
	}
	return segs, nil
}

// unallocated is the segment for guest bytes this image does not hold:
// they read from the backing image (as zeros past its end), or as zeros.
func (img *Image) unallocated(off, n int64) segment {
	if img.backing != nil {
		return segment{kind: segBacking, host: off, n: n}
	}
	return segment{kind: segZero, n: n}
}

// appendSeg appends s, merging it with the last segment when contiguous.
func appendSeg(segs []segment, s segment) []segment {
	if len(segs) > 0 {
		l := &segs[len(segs)-1]
		if l.kind == s.kind && (s.kind == segZero || (s.kind != segCompressed && l.host+l.n == s.host)) {
			l.n += s.n
			return segs
		}
	}
	return append(segs, s)
}

func (img *Image) l2Corrupt(c int64, msg string) error {
	return &FormatError{Offset: -1, Msg: fmt.Sprintf("guest cluster %d (offset %#x): %s", c, c<<img.clusterBits, msg)}
}

// plan resolves [off, off+n) into segments. Called with img.mu held.
func (img *Image) plan(off, n int64) ([]segment, error) {
	var segs []segment
	var err error
	for n > 0 {
		k := min(n, img.cs-off&(img.cs-1))
		if segs, err = img.classify(segs, off, k); err != nil {
			return nil, err
		}
		off, n = off+k, n-k
	}
	return segs, nil
}

// ReadAt reads the virtual disk; it returns io.EOF only past the end.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	img.mu.Lock()
	if img.closed {
		img.mu.Unlock()
		return 0, ErrClosed
	}
	size := int64(img.hdr.Size)
	if off < 0 {
		img.mu.Unlock()
		return 0, fmt.Errorf("qcow2: read at negative offset %d", off)
	}
	if off >= size {
		img.mu.Unlock()
		return 0, io.EOF
	}
	want := int64(len(p))
	n := min(want, size-off)
	segs, err := img.plan(off, n)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	img.ioGate.RLock()
	img.mu.Unlock()
	err = img.readSegments(p[:n], off, segs)
	img.ioGate.RUnlock()
	if err != nil {
		return 0, err
	}
	if n < want {
		return int(n), io.EOF
	}
	return int(n), nil
}

// readSegments does the I/O of a planned read into p, which starts at guest offset off.
func (img *Image) readSegments(p []byte, off int64, segs []segment) error {
	pos := int64(0)
	for _, s := range segs {
		buf := p[pos : pos+s.n]
		switch s.kind {
		case segZero:
			clear(buf)
		case segData:
			n, err := img.f.ReadAt(buf, s.host)
			if err == io.EOF {
				clear(buf[n:]) // the file's last cluster may be short
			} else if err != nil {
				return fmt.Errorf("qcow2: read data cluster at %#x: %w", s.host, err)
			}
		case segBacking:
			if err := readBacking(img.backing, buf, s.host); err != nil {
				return err
			}
		case segCompressed:
			if err := img.readCompressed(buf, s.entry, s.within); err != nil {
				return err
			}
		}
		pos += s.n
	}
	return nil
}

// readBacking reads from a backing image, with zeros past its end.
func readBacking(b Backing, p []byte, off int64) error {
	size := b.Size()
	if off >= size {
		clear(p)
		return nil
	}
	n := min(int64(len(p)), size-off)
	got, err := b.ReadAt(p[:n], off)
	if err != nil && !(err == io.EOF && int64(got) == n) {
		return fmt.Errorf("read backing image at %d: %w", off, err)
	}
	clear(p[n:])
	return nil
}

// forgetDecompressed drops the cached decompressed cluster: a descriptor
// may come to mean other data once clusters are freed and reused.
func (img *Image) forgetDecompressed() {
	img.zmu.Lock()
	img.zFilled = false
	img.zmu.Unlock()
}

// readCompressed copies bytes [within, within+len(p)) of the compressed
// cluster described by e into p.
func (img *Image) readCompressed(p []byte, e l2Entry, within int64) error {
	if within == 0 && int64(len(p)) == img.cs {
		// A whole cluster: decompress in place, concurrently with other readers.
		return img.decompressCluster(e, p)
	}
	img.zmu.Lock()
	defer img.zmu.Unlock()
	if !img.zFilled || img.zEntry != e {
		if img.zBuf == nil {
			img.zBuf = make([]byte, img.cs)
		}
		if err := img.decompressCluster(e, img.zBuf); err != nil {
			img.zFilled = false
			return err
		}
		img.zEntry, img.zFilled = e, true
	}
	copy(p, img.zBuf[within:])
	return nil
}

// decompressCluster reads and decompresses the compressed cluster e into out.
func (img *Image) decompressCluster(e l2Entry, out []byte) error {
	// classify checked that coff lies inside the file.
	coff, csize := e.compressedRange(img.clusterBits)
	src := make([]byte, csize) // at most two clusters, by the descriptor's width
	if n, err := img.f.ReadAt(src, coff); err == io.EOF {
		clear(src[n:]) // the file's last sector may be short
	} else if err != nil {
		return fmt.Errorf("qcow2: read compressed cluster at %#x: %w", coff, err)
	}
	if err := decompress(img.hdr.CompressionType, src, out); err != nil {
		return &FormatError{Offset: coff, Msg: err.Error()}
	}
	return nil
}

// Status returns the extent that starts at off, at most n bytes long, as
// this image alone describes it (ExtentBacking for what reads from below).
func (img *Image) Status(off, n int64) (Extent, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return Extent{}, ErrClosed
	}
	size := int64(img.hdr.Size)
	if off < 0 || off >= size {
		return Extent{}, ErrOutOfRange
	}
	n = min(n, size-off)
	ext := Extent{Offset: off}
	first := true
	for n > 0 {
		// Whole unallocated L2 tables are one step.
		l2span := img.cs * img.l2Entries
		if l1i := off / l2span; l1i >= int64(len(img.l1)) || img.l1[l1i].l2Offset() == 0 {
			k := min(n, l2span-off%l2span)
			kind := ExtentZero
			if img.backing != nil {
				kind = ExtentBacking
			}
			if !first && (ext.Kind != kind || ext.Compressed) {
				break
			}
			ext.Kind, first = kind, false
			ext.Length += k
			off, n = off+k, n-k
			continue
		}
		k := min(n, img.cs-off&(img.cs-1))
		segs, err := img.classify(nil, off, k)
		if err != nil {
			return Extent{}, err
		}
		stop := false
		for _, s := range segs {
			kind, comp := ExtentZero, false
			switch s.kind {
			case segData:
				kind = ExtentData
			case segCompressed:
				kind, comp = ExtentData, true
			case segBacking:
				kind = ExtentBacking
			}
			if !first && (kind != ext.Kind || comp != ext.Compressed) {
				stop = true
				break
			}
			ext.Kind, ext.Compressed, first = kind, comp, false
			ext.Length += s.n
		}
		if stop {
			break
		}
		off, n = off+k, n-k
	}
	return ext, nil
}
