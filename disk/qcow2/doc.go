// Package qcow2 reads, writes, creates and checks QEMU copy-on-write disk
// images (qcow2, versions 2 and 3) in pure Go: the only engine we know of
// that writes them without cgo or qemu-img. The on-disk format is QEMU's
// docs/interop/qcow2.txt; the package follows QEMU 7.2, and its tests
// compare it with qemu-img and qemu-io on the same images.
//
// Open opens an image in a File (an *os.File will do) for reading, or for
// reading and writing; Create makes a new one; Check compares the refcounts
// with the metadata and repairs them as qemu-img check does. An *Image is an
// io.ReaderAt and io.WriterAt over the virtual disk, safe for concurrent use;
// Status tells which ranges hold data, read as zeros or come from the
// backing image, without reading them.
//
// # What it supports, and what it refuses
//
// Supported, reading and writing: versions 2 (compat 0.10) and 3 (compat
// 1.1); clusters of 512 bytes to 2 MiB; refcounts of 1 to 64 bits; extended
// L2 entries (subclusters: in existing images, Create makes none);
// compressed clusters, zlib (raw deflate) and zstd,
// which WriteCompressed writes to unallocated clusters; zero clusters;
// backing files, qcow2 or raw, opened by the caller's BackingOpener;
// internal snapshots, listed, made (disk-only), applied and deleted as QEMU
// does (Snapshots, CreateSnapshot, ApplySnapshot, DeleteSnapshot), whose
// shared clusters and L2 tables are copied on write; a snapshot's VM state
// (saved by QEMU) is kept, counted and freed with it, but never written;
// lazy refcounts, whose dirty images are repaired by Check when opened for
// writing; growing the virtual disk (Resize); creation with
// preallocated metadata. Persistent dirty bitmaps are left alone, but marked
// stale (their autoclear bit cleared, as QEMU expects of a program that does
// not update them) when an image is opened for writing. Unknown header
// extensions, compatible features and additional header fields are kept.
//
// Refused, with an *UnsupportedError: encryption (AES or LUKS), external data
// files, unknown incompatible features, versions other than 2 and 3, and
// compression types other than zlib and zstd. An image marked corrupt opens
// read-only only (ErrCorrupt). Shrinking is not supported.
//
// The package takes no file locks: a caller that shares images with QEMU
// must lock them as QEMU does (package disk does).
//
// # Crash safety
//
// Guest data is written in place at once; metadata (refcount blocks, the
// refcount table, L2 tables, the L1 table and header fields) changes in
// memory and is written back by Flush, Close, and when the L2 cache is full,
// in the order QEMU keeps, with an fsync after each step: refcount blocks
// (with the data written so far), the refcount table, L2 tables, the L1
// table, and last the refcounts of clusters no longer referenced. A cluster
// freed is not reused before that last step. On-disk metadata therefore never
// points at a cluster whose data or refcount is not yet on disk, and the
// package never sets the dirty bit: a process killed at any instant leaves a
// consistent image, with at most leaked clusters (which Check repairs). Data
// written before Flush returns survives a crash; data written since the last
// Flush may be lost, in part or whole. Header changes (a moved refcount
// table, a larger L1 table, a new size) are single writes of a few bytes
// within one sector. Snapshot operations write their whole new state (L1
// and L2 tables, snapshot table, refcount blocks and table) past the end of
// the file and switch to it with one header write: killed at any instant,
// the image is as before or as after, without even a leak (updating
// refcounts and COPIED flags in place, as QEMU does, leaves flags that
// qemu-img check calls corruptions if killed between the two). A Check
// repair stopped by cancellation
// has written only whole repairs.
//
// # Security
//
// Images are untrusted input. Every count and offset read from an image is
// checked against the file's size and against QEMU's own limits before
// anything is allocated, so a hostile image can make Open, ReadAt, Status or
// Check fail (with a *FormatError that says where the image is damaged) but
// cannot make them panic, loop for ever or allocate more than a small
// multiple of the image's own metadata: Open reads the header cluster, the
// L1 table (at most 32 MiB, QEMU's limit) and the refcount table (at most
// 8 MiB); L2 tables are cached up to Options.CacheSize; Check holds one
// refcount per cluster of the file. Compressed clusters are decompressed into
// a buffer of exactly one cluster, and zstd's window is bounded, so a
// decompression bomb yields one cluster of data. Open, reads, writes
// and Check are fuzzed.
//
// What a hostile image can do: make reads return any data it likes (it is
// the guest's disk); make Check take time in proportion to its file size;
// and name any file as its backing file. The package opens no file itself:
// the caller's BackingOpener resolves the name, bounds the chain's depth,
// detects loops and decides which files an image may name (package disk
// opens them read-only, relative to the image's directory, as QEMU does).
// Reads and writes check each table entry they use (reserved bits,
// alignment, an offset inside the file) but not whether metadata overlaps (an
// L2 table or data cluster on top of other metadata, with refcounts that hide
// it): writing to such an image can damage it further, never another file.
// Check an untrusted image before writing to it.
package qcow2
