// Package qcow reads, writes, creates and checks images of QEMU's original
// copy-on-write format, qcow version 1 (QEMU's block/qcow.c), in pure Go.
// It is a sibling of package qcow2, with the same shape: Open opens an image
// in a File for reading or reading and writing, Create makes a new one,
// Check checks its tables. An *Image is an io.ReaderAt and io.WriterAt over
// the virtual disk; Status tells which ranges hold data, which are
// compressed and which come from the backing file.
//
// Supported: clusters of 512 bytes to 64 KiB and L2 tables of 512 bytes to
// 64 KiB (QEMU's limits); backing files, opened by the caller's
// BackingOpener; compressed clusters (raw deflate), read and written
// (WriteCompressed), which qemu-img 7.2 reads but cannot write to qcow.
// Writing a partial cluster that is not yet allocated copies the rest from
// the backing chain, or from the compressed cluster it replaces (QEMU does
// neither: it relies on 512-byte clusters over a backing file).
// AES-encrypted images (crypt_method 1) are read with Options.Passphrase,
// as QEMU's legacy qcow AES reads them (the key is the passphrase's first
// 16 bytes; AES-128-CBC per 512-byte sector, the IV the sector number): a
// wrong passphrase cannot be detected, and reads garbage. Writing them is
// refused (ErrEncryptedWrite), as is resizing.
//
// # Crash safety
//
// Guest data is written at once, always to a cluster newly allocated at the
// end of the file unless the cluster is already allocated here; L2 tables
// and L1 entries change in memory and are written by Flush and Close (and
// when the table cache is full) in the order data, L2 tables, L1 entries,
// with an fsync after each step. A process killed at any instant leaves an
// image whose tables point only at data that is on disk: at most clusters
// nothing references (leaks, which Check reports), and the writes since the
// last Flush lost.
//
// # Security
//
// Images are untrusted input. The header is checked as QEMU checks it
// (version, size, cluster_bits and l2_bits within QEMU's limits, a known
// crypt_method, the L1 size computed without overflow) and, beyond QEMU,
// every offset is checked against the file's size before anything is
// allocated: the L1 table (whose size is thus bounded by the file's) and
// the backing file name must lie inside the file, and each L2 table, data
// cluster and compressed cluster is checked when it is used. A hostile image
// can make Open, ReadAt, Status or Check fail with a *FormatError that says
// where it is damaged, never panic, loop or allocate more than its own
// metadata; compressed clusters inflate into a buffer of exactly one
// cluster, so a decompression bomb yields one cluster of data. At most 256
// L2 tables (16 MiB) are cached; Check holds a few words per L2 entry in
// use. Writes check each entry they use, not whether tables overlap: writing
// to a damaged image can damage it further, never another file (Check an
// untrusted image before writing to it). An image can name any file as its
// backing file: the caller's BackingOpener decides (package disk resolves it
// relative to the image's directory, read-only, as QEMU does). A wrong
// passphrase cannot be detected: it reads garbage. The package takes no file
// locks.
package qcow
