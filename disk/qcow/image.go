package qcow

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sync"

	"github.com/klauspost/compress/flate"
)

// File is the storage an image lives in; *os.File satisfies it.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// Backing is the image below a qcow image: what unallocated clusters read
// from. Reads past its Size read as zeros.
type Backing interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// BackingOpener opens the backing file named in the header (relative names
// are relative to the directory of the image that names them). The opener
// bounds the chain's depth, detects loops and opens the backing read-only.
type BackingOpener func(name string) (Backing, error)

// Options control Open.
type Options struct {
	ReadOnly bool
	// OpenBacking opens the backing file; when nil, an image with a
	// backing file fails to open.
	OpenBacking BackingOpener
	// Passphrase decrypts an AES-encrypted image (crypt_method 1), which
	// opens read-only only; it is ignored for other images.
	Passphrase []byte
}

// ExtentKind classifies a range of the virtual disk.
type ExtentKind int

const (
	ExtentData    ExtentKind = iota // allocated in this image
	ExtentZero                      // unallocated, with no backing file
	ExtentBacking                   // unallocated: reads from the backing file
)

// Extent is a run of the virtual disk with one status.
type Extent struct {
	Offset, Length int64
	Kind           ExtentKind
	Compressed     bool
}

// UnsupportedError reports an image this package cannot open.
type UnsupportedError struct{ Feature string }

func (e *UnsupportedError) Error() string { return "qcow: unsupported: " + e.Feature }

// ErrReadOnly is returned by writes to an image opened read-only.
var ErrReadOnly = errors.New("qcow: image is read-only")

// maxCachedL2 bounds the L2 tables kept in memory (each at most 64 KiB).
const maxCachedL2 = 256

// Image is an open qcow image: an io.ReaderAt and io.WriterAt over the
// virtual disk, safe for concurrent use.
type Image struct {
	mu       sync.Mutex
	f        File
	h        *Header
	readOnly bool
	backing  Backing
	l1       []uint64
	l2       map[uint64][]uint64 // L2 tables by file offset
	dirtyL2  map[uint64]bool
	dirtyL1  map[int64]bool
	fileEnd  int64  // the end of the file, allocations included
	cache    []byte // the last compressed cluster decompressed
	cacheOff uint64 // its L2 entry, 0 for none
	crypt    cipher.Block
}

// Open opens the qcow image in f. On failure it closes f (and the backing
// image, once opened).
func Open(f File, opts Options) (img *Image, err error) {
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	h, err := ParseHeader(f, size)
	if err != nil {
		return nil, err
	}
	if h.Encrypted() {
		switch {
		case opts.Passphrase == nil:
			return nil, ErrNeedPassphrase
		case !opts.ReadOnly:
			return nil, ErrEncryptedWrite
		}
	}
	n := h.L1Entries()
	raw := make([]byte, n*8) // bounded by the file's size (ParseHeader)
	if _, err := f.ReadAt(raw, int64(h.L1TableOffset)); err != nil {
		return nil, fmt.Errorf("read L1 table: %w", err)
	}
	m := &Image{f: f, h: h, readOnly: opts.ReadOnly, fileEnd: size,
		l1: make([]uint64, n), l2: map[uint64][]uint64{},
		dirtyL2: map[uint64]bool{}, dirtyL1: map[int64]bool{}}
	for i := range m.l1 {
		m.l1[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	if h.Encrypted() {
		m.crypt = newCipher(opts.Passphrase)
	}
	if h.BackingFile != "" {
		if opts.OpenBacking == nil {
			return nil, formatErr("image has a backing file %q and no way to open it", h.BackingFile)
		}
		b, err := opts.OpenBacking(h.BackingFile)
		if err != nil {
			return nil, fmt.Errorf("open backing file %q: %w", h.BackingFile, err)
		}
		m.backing = b
	}
	return m, nil
}

// Header returns a copy of the image's header.
func (m *Image) Header() Header { return *m.h }

// Size is the virtual size in bytes.
func (m *Image) Size() int64 { return m.h.VirtualSize() }

// Backing returns the backing image, nil without one.
func (m *Image) Backing() Backing { return m.backing }

// Close flushes the image and closes it and its backing image.
func (m *Image) Close() error {
	err := m.Flush()
	if m.backing != nil {
		if e := m.backing.Close(); err == nil {
			err = e
		}
	}
	if e := m.f.Close(); err == nil {
		err = e
	}
	return err
}

// cluster kinds of an L2 entry.
const (
	kUnalloc = iota
	kPlain
	kCompressed
)

// lookup returns the kind and L2 entry of virtual cluster ci.
func (m *Image) lookup(ci int64) (int, uint64, error) {
	l1i := ci >> m.h.L2Bits
	if l1i >= int64(len(m.l1)) || m.l1[l1i] == 0 {
		return kUnalloc, 0, nil
	}
	t, err := m.table(m.l1[l1i])
	if err != nil {
		return 0, 0, err
	}
	e := t[ci&(m.h.L2Entries()-1)]
	cs := m.h.ClusterSize()
	switch {
	case e == 0:
		return kUnalloc, 0, nil
	case e&compressedFlag != 0:
		off, n := m.h.compressedRange(e)
		if n == 0 || off >= uint64(m.fileEnd) || n > uint64(m.fileEnd)-off {
			return 0, 0, formatErr("compressed cluster %d (%d bytes at offset %d) is past the end of the file", ci, n, off)
		}
		return kCompressed, e, nil
	case e&511 != 0:
		return 0, 0, formatErr("cluster %d: L2 entry %#x is not aligned to 512 bytes", ci, e)
	case e >= uint64(m.fileEnd) || int64(e) > math.MaxInt64-cs:
		return 0, 0, formatErr("cluster %d: data at offset %d is past the end of the file (%d bytes)", ci, e, m.fileEnd)
	}
	return kPlain, e, nil
}

// compressedRange decodes a compressed L2 entry: file offset and size.
func (h *Header) compressedRange(e uint64) (uint64, uint64) {
	shift := 63 - uint(h.ClusterBits)
	return e & (uint64(1)<<shift - 1), (e >> shift) & uint64(h.ClusterSize()-1)
}

// table returns the L2 table at file offset off, reading it if needed.
func (m *Image) table(off uint64) ([]uint64, error) {
	if t, ok := m.l2[off]; ok {
		return t, nil
	}
	n := m.h.L2Entries()
	if off >= uint64(m.fileEnd) || uint64(n*8) > uint64(m.fileEnd)-off {
		return nil, formatErr("L2 table at offset %d is past the end of the file (%d bytes)", off, m.fileEnd)
	}
	if err := m.roomForL2(); err != nil {
		return nil, err
	}
	raw := make([]byte, n*8)
	if err := readFull(m.f, raw, int64(off)); err != nil {
		return nil, fmt.Errorf("read L2 table at %d: %w", off, err)
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	m.l2[off] = t
	return t, nil
}

// roomForL2 makes room in the cache for one more L2 table: when it is
// full, it writes back the dirty tables and empties it.
func (m *Image) roomForL2() error {
	if len(m.l2) < maxCachedL2 {
		return nil
	}
	if err := m.flushLocked(); err != nil {
		return err
	}
	clear(m.l2)
	return nil
}

// readFull reads len(p) bytes at off; what is past the end of the file reads
// as zeros.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	return err
}

// decompress returns the data of the compressed cluster of entry e.
func (m *Image) decompress(e uint64) ([]byte, error) {
	if m.cacheOff == e && m.cache != nil {
		return m.cache, nil
	}
	off, n := m.h.compressedRange(e)
	src := make([]byte, n)
	if err := readFull(m.f, src, int64(off)); err != nil {
		return nil, fmt.Errorf("read compressed cluster at %d: %w", off, err)
	}
	if m.cache == nil {
		m.cache = make([]byte, m.h.ClusterSize())
	}
	m.cacheOff = 0
	r := flate.NewReader(bytes.NewReader(src))
	_, err := io.ReadFull(r, m.cache)
	r.Close()
	if err != nil {
		return nil, formatErr("compressed cluster at offset %d: inflate: %v", off, err)
	}
	m.cacheOff = e
	return m.cache, nil
}

// ReadAt reads the virtual disk; it returns io.EOF only past the end.
func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("qcow: read at negative offset %d", off)
	}
	size := m.Size()
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n, err := m.eachCluster(p, off, m.readCluster); err != nil {
		return n, err
	}
	return len(p), eof
}

// eachCluster calls fn with the part of p that falls in each virtual
// cluster, from off on: the cluster's index, the offset in it and the part.
// It returns the bytes of p done before fn failed.
func (m *Image) eachCluster(p []byte, off int64, fn func(ci, in int64, chunk []byte) error) (int, error) {
	cs := m.h.ClusterSize()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		ci, in := pos/cs, pos%cs
		chunk := p[done:min(len(p), done+int(cs-in))]
		if err := fn(ci, in, chunk); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}

// readCluster reads dst from virtual cluster ci at in bytes into it.
func (m *Image) readCluster(ci, in int64, dst []byte) error {
	kind, e, err := m.lookup(ci)
	if err != nil {
		return err
	}
	switch kind {
	case kCompressed:
		data, err := m.decompress(e)
		if err != nil {
			return err
		}
		copy(dst, data[in:])
		return nil
	case kPlain:
		if m.crypt == nil {
			return readFull(m.f, dst, int64(e)+in)
		}
		// Encrypted: whole sectors, decrypted.
		lo, hi := in&^511, (in+int64(len(dst))+511)&^511
		buf := make([]byte, hi-lo)
		if err := readFull(m.f, buf, int64(e)+lo); err != nil {
			return err
		}
		decryptSectors(m.crypt, buf, (ci*m.h.ClusterSize()+lo)/512)
		copy(dst, buf[in-lo:])
		return nil
	}
	return m.readBacking(dst, ci*m.h.ClusterSize()+in)
}

// readBacking reads dst from the backing image at virtual offset pos;
// without one, or past its end, it reads zeros.
func (m *Image) readBacking(dst []byte, pos int64) error {
	clear(dst)
	if m.backing == nil || pos >= m.backing.Size() {
		return nil
	}
	n := min(int64(len(dst)), m.backing.Size()-pos)
	_, err := m.backing.ReadAt(dst[:n], pos)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

// Status returns the extent at off, at most n bytes long, as this image
// alone describes it (ExtentBacking for what the backing file holds).
func (m *Image) Status(off, n int64) (Extent, error) {
	size := m.Size()
	if off < 0 || off >= size || n <= 0 {
		return Extent{}, fmt.Errorf("qcow: status of %d bytes at %d: out of range for a disk of %d bytes", n, off, size)
	}
	n = min(n, size-off)
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := m.h.ClusterSize()
	var ext Extent
	for pos := off; pos < off+n; {
		ci := pos / cs
		kind, _, err := m.lookup(ci)
		if err != nil {
			return Extent{}, err
		}
		e := Extent{Offset: pos, Kind: ExtentData, Compressed: kind == kCompressed}
		if kind == kUnalloc {
			e.Kind = ExtentZero
			if m.backing != nil {
				e.Kind = ExtentBacking
			}
		}
		step := min((ci+1)*cs, off+n) - pos
		if pos == off {
			ext = e
		} else if e.Kind != ext.Kind || e.Compressed != ext.Compressed {
			break
		}
		ext.Length += step
		pos += step
	}
	return ext, nil
}
