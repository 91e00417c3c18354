package qcow2

import (
	"fmt"
	"math/bits"
)

// Create writes a new image into f, which must be empty, and returns it open
// for writing; the image owns f (and backing) from then on. backing is the
// already opened backing image (nil without one); when opts.Size is 0 the
// size is taken from it, and a size that disagrees with it is an error.
//
// The layout is QEMU's: the header in cluster 0, the refcount table in
// cluster 1, the first refcount block in cluster 2, then the L1 table.
func Create(f File, opts CreateOptions, backing Backing) (_ *Image, err error) {
	defer func() {
		if err != nil {
			if backing != nil {
				backing.Close()
			}
			f.Close()
		}
	}()
	h, err := newHeader(opts)
	if err != nil {
		return nil, err
	}
	size := opts.Size
	if backing != nil {
		if size == 0 {
			size = backing.Size()
		} else if (size+511)&^511 != (backing.Size()+511)&^511 {
			return nil, fmt.Errorf("qcow2: size %d differs from the backing image's size %d", size, backing.Size())
		}
	} else if opts.BackingFile != "" {
		return nil, fmt.Errorf("qcow2: backing file %q given but not opened", opts.BackingFile)
	}
	if size < 0 {
		return nil, fmt.Errorf("qcow2: negative size %d", size)
	}
	size = (size + 511) &^ 511

	cs := h.ClusterSize()
	h.RefcountTableOffset = uint64(cs)
	h.RefcountTableClusters = 1
	cluster0, err := h.marshal()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 3*cs)
	copy(buf, cluster0)
	copy(buf[cs:], encodeTable([]refTableEntry{refTableEntry(2 * cs)})) // entry 0: the first block
	for i := int64(0); i < 3; i++ {
		setRefcount(buf[2*cs:], i, h.RefcountOrder, 1)
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return nil, fmt.Errorf("qcow2: write new image: %w", err)
	}
	img := &Image{
		f:           f,
		backing:     backing,
		hdr:         *h,
		clusterBits: h.ClusterBits,
		cs:          cs,
		l2Entries:   h.l2Entries(),
		extL2:       h.ExtendedL2(),
		fileSize:    3 * cs,
		refblocks:   make(map[int64]*table),
		rbEntries:   h.refcountBlockEntries(),
		l2:          newTableCache(defaultCacheSize / int(cs)),
		dataDirty:   true,
	}
	if err := img.prepareWrite(); err != nil {
		return nil, err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.resizeLocked(size); err != nil {
		return nil, err
	}
	if opts.Preallocation == "metadata" {
		if err := img.preallocateMetadata(); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// newHeader validates creation options into a header.
func newHeader(opts CreateOptions) (*Header, error) {
	h := &Header{Version: 3, ClusterBits: DefaultClusterBits, RefcountOrder: 4, CompressionType: opts.CompressionType}
	switch opts.Compat {
	case "", "1.1", "v3":
	case "0.10", "v2":
		h.Version = 2
	default:
		return nil, fmt.Errorf("qcow2: unknown compat level %q (want 1.1 or 0.10)", opts.Compat)
	}
	if opts.ClusterSize != 0 {
		cs := opts.ClusterSize
		if cs&(cs-1) != 0 || cs < 1<<MinClusterBits || cs > 1<<MaxClusterBits {
			return nil, fmt.Errorf("qcow2: cluster size %d is not a power of two between 512 and 2 MiB", cs)
		}
		h.ClusterBits = uint32(bits.TrailingZeros64(uint64(cs)))
	}
	if opts.RefcountBits != 0 {
		rb := opts.RefcountBits
		if rb&(rb-1) != 0 || rb > 64 {
			return nil, fmt.Errorf("qcow2: refcount width %d is not a power of two from 1 to 64", rb)
		}
		h.RefcountOrder = uint32(bits.TrailingZeros(uint(rb)))
	}
	if h.Version == 2 {
		switch {
		case h.RefcountOrder != 4:
			return nil, fmt.Errorf("qcow2: refcount widths other than 16 bits need compat 1.1")
		case opts.LazyRefcounts:
			return nil, fmt.Errorf("qcow2: lazy refcounts need compat 1.1")
		case opts.CompressionType != CompressionZlib:
			return nil, fmt.Errorf("qcow2: compression type %s needs compat 1.1", opts.CompressionType)
		}
	}
	switch opts.CompressionType {
	case CompressionZlib:
	case CompressionZstd:
		h.IncompatibleFeatures |= IncompatCompression
	default:
		return nil, &UnsupportedError{Feature: opts.CompressionType.String()}
	}
	switch opts.Preallocation {
	case "", "off", "metadata":
	default:
		return nil, fmt.Errorf("qcow2: unknown preallocation mode %q (want off or metadata)", opts.Preallocation)
	}
	if opts.LazyRefcounts {
		h.CompatibleFeatures |= CompatLazyRefcounts
	}
	if opts.BackingFile != "" {
		switch opts.BackingFormat {
		case "qcow2", "raw", "qcow":
		default:
			return nil, fmt.Errorf("qcow2: backing format %q for %q is not qcow2, raw or qcow", opts.BackingFormat, opts.BackingFile)
		}
		h.BackingFile, h.BackingFormat = opts.BackingFile, opts.BackingFormat
	}
	return h, nil
}

// preallocateMetadata allocates every L2 table and data cluster, leaving the
// data clusters unwritten (they read as zeros from the sparse file).
// Called with img.mu held.
func (img *Image) preallocateMetadata() error {
	total := (int64(img.hdr.Size) + img.cs - 1) / img.cs
	for c := int64(0); c < total; {
		t, err := img.writableL2(c)
		if err != nil {
			return err
		}
		r := min(total-c, img.l2Entries-c%img.l2Entries)
		host, err := img.alloc(r)
		if err != nil {
			return err
		}
		for i := int64(0); i < r; i++ {
			img.setEntry(t, c+i, img.dataDesc(host+i*img.cs))
		}
		img.growFile(host + r*img.cs)
		c += r
	}
	if err := img.f.Truncate(img.fileSize); err != nil {
		return fmt.Errorf("qcow2: extend preallocated image: %w", err)
	}
	return img.flushLocked()
}
