package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/atomicfile"
)

// ConvertOptions control Convert.
type ConvertOptions struct {
	// Format is the output format: FormatQcow2 (the default when empty),
	// FormatRaw or FormatQcow.
	Format Format
	// Compress writes compressed qcow2 clusters, with CompressionType, or
	// compressed qcow clusters (zlib only).
	Compress        bool
	CompressionType qcow2.CompressionType
	// ClusterSize of a qcow2 output, 0 meaning 64 KiB; of a qcow output,
	// 0 meaning 4 KiB (512 bytes to 64 KiB).
	ClusterSize int64
	// Progress, when set, is called from one goroutine with the bytes of the
	// virtual disk done so far and the total, first with done 0 and last
	// with done == total once the output is complete.
	Progress func(done, total int64)
	// Workers is the number of goroutines reading (and compressing) the
	// source; 0 means runtime.NumCPU().
	Workers int
	// NoSync skips the final fsync of the output and of its directory, as
	// qemu-img convert does by default (-t unsafe): faster on slow disks,
	// but a crash soon after Convert returns may leave dst incomplete.
	// Without it, writeback starts while converting and Convert returns
	// once dst is durable.
	NoSync bool
	// Passphrase decrypts an AES-encrypted qcow source (see OpenOptions).
	Passphrase []byte
	// ForceShare reads a source that a running QEMU writes, as qemu-img
	// convert -U does: the copy may be inconsistent. Without it such a
	// source is refused with an error wrapping ErrInUse.
	ForceShare bool
}

const (
	// convertChunk is the unit of work of Convert: a multiple of every
	// cluster size, read in one call.
	convertChunk = 2 << 20
	// zeroGranule is the smallest run of zeros Convert leaves unwritten,
	// as qemu-img convert's default -S 4k.
	zeroGranule = 4096
	maxWorkers  = 64
)

// Convert copies the image at src, its whole backing chain flattened, into
// a new image at dst. The output is written into a temporary file in dst's
// directory and linked (or renamed) to dst only when complete, so dst is
// either absent or whole; an existing dst is refused with an error
// wrapping fs.ErrExist. The temporary file has no name where the file
// system allows (O_TMPFILE), so that nothing is left behind even when the
// process is killed; elsewhere it is a hidden file next to dst, and the
// ones a killed conversion left are removed by the next conversion to dst.
// Ranges that read as zeros are never written: the output is sparse. When
// ctx is cancelled Convert stops, removes the temporary file and returns an
// error wrapping ctx.Err(). The source and the output are locked as
// qemu-img convert locks them (see Open).
func Convert(ctx context.Context, src, dst string, opts ConvertOptions) error {
	if err := convert(ctx, src, dst, opts); err != nil {
		return fmt.Errorf("convert %q to %q: %w", src, dst, err)
	}
	return nil
}

func convert(ctx context.Context, src, dst string, opts ConvertOptions) (err error) {
	switch opts.Format {
	case "":
		opts.Format = FormatQcow2
	case FormatQcow2, FormatRaw, FormatQcow:
	default:
		return fmt.Errorf("unsupported output format %q (want qcow2, raw or qcow)", opts.Format)
	}
	if opts.Compress && opts.Format == FormatRaw {
		return fmt.Errorf("compression needs qcow2 or qcow output, not %s", opts.Format)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	opts.Workers = min(opts.Workers, maxWorkers)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%w (remove it first or choose another name)", fs.ErrExist)
	}

	in, err := Open(src, OpenOptions{ReadOnly: true, ForceShare: opts.ForceShare, Passphrase: opts.Passphrase})
	if err != nil {
		return err
	}
	defer in.Close()

	t, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		return err
	}
	// The targets sync the data, and a failed sync of the directory
	// cannot undo the link: Commit only links.
	t.NoSync = true
	// Messages name an unnamed temporary file after what it becomes.
	f, tmp := t.File, t.Name()
	var out target // once set, it owns f
	closed := false
	defer func() {
		if err != nil {
			if out != nil && !closed {
				out.abort()
			}
			t.Abort() // removes a named temporary file; closes f if need be
		}
	}()
	// Locked for writing, as qemu-img locks its output, until it is closed
	// (after it takes its name).
	if err := lockFile(f, tmp, fileID{}, lockWrite); err != nil {
		return fmt.Errorf("lock the new %q: %w", tmp, err)
	}

	size, granule := in.Size(), int64(zeroGranule)
	var cs int64 // the output's cluster size; 0 for raw
	switch opts.Format {
	case FormatRaw:
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("size %q: %w", tmp, PathCause(err))
		}
		out = &rawTarget{f: f, path: tmp, sync: !opts.NoSync}
	case FormatQcow2:
		// The output is garbage until it is given its name, so the ordered
		// syncs of the engine buy nothing: one fsync at the end makes it
		// durable.
		img, err := qcow2.Create(unsyncedFile{f}, qcow2.CreateOptions{
			Size:            size,
			ClusterSize:     opts.ClusterSize,
			CompressionType: opts.CompressionType,
		}, nil)
		if err != nil {
			closed = true // Create closes f when it fails
			return fmt.Errorf("create %q: %w", tmp, err)
		}
		out = &engineTarget{img: img, f: f, path: tmp, sync: !opts.NoSync}
		size = img.Size() // rounded up to 512; the tail reads as zeros
		cs = img.ClusterSize()
	case FormatQcow:
		size = (size + 511) &^ 511 // the tail reads as zeros
		img, err := newQcowOutput(f, tmp, size, opts)
		if err != nil {
			closed = true // it closes f when it fails
			return err
		}
		out = &engineTarget{img: img, f: f, path: tmp, sync: !opts.NoSync}
		h := img.Header()
		cs = h.ClusterSize()
	}
	if cs != 0 {
		// Zeros are skipped by whole clusters, the unit of allocation;
		// compressed clusters are written one by one.
		granule = max(cs, zeroGranule)
		if opts.Compress {
			granule = cs
		}
	}

	cv := &converter{in: in, inSize: in.Size(), size: size, out: out, opts: opts, granule: granule}
	if err := cv.run(ctx); err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return err
	}
	closed = true
	if err := out.close(); err != nil {
		os.Remove(dst) // complete but for what close could not write
		return err
	}
	if !opts.NoSync {
		atomicfile.SyncDir(filepath.Dir(dst)) // an error cannot undo the link; the data is synced
	}
	return nil
}

// unsyncedFile is a file whose Sync does nothing, for the engine writing an
// output that only becomes visible, synced, at the end.
type unsyncedFile struct{ *os.File }

func (unsyncedFile) Sync() error { return nil }

// writeback bounds the bytes written between two starts of writeback.
const writeback = 32 << 20

// startWriteback asks the kernel to start writing f's dirty pages without
// waiting, so that the final fsync has little left to do.
func startWriteback(f *os.File) {
	unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) // advisory
}

// target is the output of a conversion.
type target interface {
	// write writes data at off, in guest order.
	write(off int64, data []byte) error
	// writeCompressed writes one cluster compressed already.
	writeCompressed(off int64, compressed, plain []byte) error
	// flush completes the output and, unless NoSync, makes it durable.
	flush() error
	// close closes the output, flushed already.
	close() error
	// abort closes the output without caring for its content.
	abort()
}

type rawTarget struct {
	f       *os.File
	path    string
	sync    bool
	written int64 // since writeback last started
}

func (t *rawTarget) write(off int64, data []byte) error {
	if _, err := t.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %q at %d: %w", t.path, off, PathCause(err))
	}
	if t.written += int64(len(data)); t.sync && t.written >= writeback {
		startWriteback(t.f)
		t.written = 0
	}
	return nil
}

func (t *rawTarget) writeCompressed(off int64, compressed, plain []byte) error {
	return t.write(off, plain)
}

func (t *rawTarget) flush() error {
	if !t.sync {
		return nil
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", t.path, PathCause(err))
	}
	return nil
}

func (t *rawTarget) close() error {
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", t.path, PathCause(err))
	}
	return nil
}

func (t *rawTarget) abort() { t.f.Close() }

// engineWriter is what a conversion writes to in an image engine: a
// *qcow2.Image or a *qcow.Image.
type engineWriter interface {
	WriteAt(p []byte, off int64) (int, error)
	WriteCompressedRaw(off int64, compressed, plain []byte) error
	Flush() error
	Close() error
}

// engineTarget is the qcow2 or qcow output of a conversion.
type engineTarget struct {
	img     engineWriter
	f       *os.File // the file under img, for the final sync
	path    string
	sync    bool
	written int64 // since writeback last started
}

func (t *engineTarget) write(off int64, data []byte) error {
	if _, err := t.img.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %q at %d: %w", t.path, off, err)
	}
	t.wrote(len(data))
	return nil
}

func (t *engineTarget) writeCompressed(off int64, compressed, plain []byte) error {
	if err := t.img.WriteCompressedRaw(off, compressed, plain); err != nil {
		return fmt.Errorf("write %q at %d: %w", t.path, off, err)
	}
	t.wrote(len(compressed))
	return nil
}

func (t *engineTarget) wrote(n int) {
	if t.written += int64(n); t.sync && t.written >= writeback {
		startWriteback(t.f)
		t.written = 0
	}
}

func (t *engineTarget) flush() error {
	err := t.img.Flush()
	if err == nil && t.sync {
		if err = t.f.Sync(); err != nil {
			err = PathCause(err)
		}
	}
	if err != nil {
		return fmt.Errorf("flush %q: %w", t.path, err)
	}
	return nil
}

func (t *engineTarget) close() error {
	if err := t.img.Close(); err != nil {
		return fmt.Errorf("close %q: %w", t.path, err)
	}
	return nil
}

func (t *engineTarget) abort() { t.img.Close() }

// converter runs one conversion: workers read (and compress) chunks in any
// order, one writer writes them in guest order, so that a qcow2 output is
// laid out sequentially.
type converter struct {
	in      Image
	inSize  int64 // the source's size; past it the output reads as zeros
	size    int64 // the output's virtual size
	out     target
	opts    ConvertOptions
	granule int64 // runs of zeros this long (aligned) are not written

	bufs sync.Pool // *[]byte of convertChunk bytes
}

// chunk is one convertChunk of the disk on its way through the pipeline.
type chunk struct {
	off, n int64
	buf    *[]byte // the data read; nil when the chunk is all zeros
	runs   []run   // what to write, relative to off
	comp   [][]byte
	err    error
	done   chan struct{}
}

// run is a range of a chunk to write.
type run struct{ off, n int64 }

func (cv *converter) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	progress := cv.opts.Progress
	if progress == nil {
		progress = func(int64, int64) {}
	}
	progress(0, cv.size)

	workers := cv.opts.Workers
	jobs := make(chan *chunk)
	// Chunks read ahead of the writer: enough to keep the workers busy
	// while it writes, bounded so that memory stays well under 200 MiB.
	ordered := make(chan *chunk, min(2*workers, 16))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // dispatcher
		defer wg.Done()
		defer close(ordered)
		defer close(jobs)
		for off := int64(0); off < cv.size; off += convertChunk {
			c := &chunk{off: off, n: min(convertChunk, cv.size-off), done: make(chan struct{})}
			select {
			case ordered <- c:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- c:
			case <-ctx.Done():
				c.err = ctx.Err()
				close(c.done)
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				if err := ctx.Err(); err != nil {
					c.err = err
				} else {
					c.err = cv.prepare(c)
				}
				close(c.done)
			}
		}()
	}

	err := cv.write(ctx, ordered, progress)
	cancel()
	// Drain so that the dispatcher and workers finish.
	for c := range ordered {
		<-c.done
		cv.release(c)
	}
	wg.Wait()
	if err != nil {
		return err
	}
	progress(cv.size, cv.size)
	return nil
}

// write writes the chunks in order until the end or the first error.
func (cv *converter) write(ctx context.Context, ordered <-chan *chunk, progress func(int64, int64)) error {
	for c := range ordered {
		select {
		case <-c.done:
		case <-ctx.Done():
			<-c.done
			cv.release(c)
			return ctx.Err()
		}
		if c.err != nil {
			cv.release(c)
			return c.err
		}
		if err := ctx.Err(); err != nil {
			cv.release(c)
			return err
		}
		var err error
		if cv.opts.Compress {
			err = cv.writeCompressed(c)
		} else {
			for _, r := range c.runs {
				if err = cv.out.write(c.off+r.off, (*c.buf)[r.off:r.off+r.n]); err != nil {
					break
				}
			}
		}
		cv.release(c)
		if err != nil {
			return err
		}
		if c.off+c.n < cv.size {
			progress(c.off+c.n, cv.size)
		}
	}
	return ctx.Err()
}

func (cv *converter) writeCompressed(c *chunk) error {
	for i, comp := range c.comp {
		if comp == nil {
			continue
		}
		off := int64(i) * cv.granule
		plain := (*c.buf)[off:min(off+cv.granule, c.n)]
		if err := cv.out.writeCompressed(c.off+off, comp, plain); err != nil {
			return err
		}
	}
	return nil
}

func (cv *converter) release(c *chunk) {
	if c.buf != nil {
		cv.bufs.Put(c.buf)
		c.buf = nil
	}
}

// prepare reads chunk c and decides what to write: the runs of granules
// that are not all zeros, or those granules compressed one by one.
func (cv *converter) prepare(c *chunk) error {
	// The source's block status: what to read, what is known to be zeros.
	var exts []Extent // bounded: extents are at least 512 bytes long
	data := false
	for pos, end := c.off, min(c.off+c.n, cv.inSize); pos < end; {
		e, err := cv.in.Status(pos, end-pos)
		if err != nil {
			return fmt.Errorf("status of the source at %d: %w", pos, err)
		}
		if e.Length <= 0 || e.Length > end-pos {
			return fmt.Errorf("status of the source at %d: bad extent length %d", pos, e.Length)
		}
		e.Offset = pos
		data = data || e.Kind == ExtentData
		exts = append(exts, e)
		pos += e.Length
	}
	if !data {
		return nil // all zeros
	}
	c.buf = cv.buffer()
	buf := (*c.buf)[:c.n]
	ng := (c.n + cv.granule - 1) / cv.granule
	mayData := make([]bool, ng)
	covered := int64(0)
	for _, e := range exts {
		rel := e.Offset - c.off
		b := buf[rel : rel+e.Length]
		covered = rel + e.Length
		if e.Kind != ExtentData {
			clear(b)
			continue
		}
		if _, err := cv.in.ReadAt(b, e.Offset); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the source at %d: %w", e.Offset, err)
		}
		for g := rel / cv.granule; g*cv.granule < rel+e.Length; g++ {
			mayData[g] = true
		}
	}
	clear(buf[covered:]) // past the end of the source

	if cv.opts.Compress {
		c.comp = make([][]byte, ng)
	}
	for g := int64(0); g < ng; g++ {
		if !mayData[g] {
			continue
		}
		lo, hi := g*cv.granule, min((g+1)*cv.granule, c.n)
		if isZero(buf[lo:hi]) {
			continue
		}
		if cv.opts.Compress {
			plain := buf[lo:hi]
			if hi-lo < cv.granule {
				// QEMU inflates a whole cluster: compress the last,
				// partial one padded with zeros, as it does.
				plain = make([]byte, cv.granule)
				copy(plain, buf[lo:hi])
			}
			comp, err := qcow2.Compress(cv.opts.CompressionType, nil, plain)
			if err != nil {
				return fmt.Errorf("compress the cluster at %d: %w", c.off+lo, err)
			}
			c.comp[g] = comp
			continue
		}
		if k := len(c.runs); k > 0 && c.runs[k-1].off+c.runs[k-1].n == lo {
			c.runs[k-1].n += hi - lo
		} else {
			c.runs = append(c.runs, run{off: lo, n: hi - lo})
		}
	}
	return nil
}

func (cv *converter) buffer() *[]byte {
	if b, ok := cv.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, convertChunk)
	return &b
}

// zeros is compared against to find zero runs.
var zeros [zeroGranule]byte

// isZero reports whether b is all zeros.
func isZero(b []byte) bool {
	for len(b) >= len(zeros) {
		if !bytes.Equal(b[:len(zeros)], zeros[:]) {
			return false
		}
		b = b[len(zeros):]
	}
	return bytes.Equal(b, zeros[:len(b)])
}
