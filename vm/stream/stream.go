// Package stream reads and writes vmtui's VM stream: what vmtui send
// writes, vmtui receive reads and vmtui save keeps in a VM's state
// directory. It carries a VM's definition and QEMU's migration stream (the
// guest's RAM and device state, not its disks), in frames that are checked
// one by one as they arrive, then as a whole by a SHA-256 trailer. It works
// through a pipe: nothing is sought, nothing is read twice.
//
// The layout (integers big-endian):
//
//	offset  size  field
//	0       8     magic "\x89VMTUI\r\n"
//	8       4     version, 1
//	12      4     flags: bit 0 set when the guest was running (0 when paused); the others 0
//	16      4     N, the length of the definition, 1 to MaxDefinition
//	20      N     the definition: the TOML of a definition file
//	20+N    4     CRC-32C (Castagnoli) of bytes 0 to 20+N
//
// then any number of chunks of the migration stream, in order:
//
//	1    kind: 1 stored as is, 2 compressed with zstd (one frame)
//	4    S, the stored length: 1 to MaxChunk (and less than R when compressed)
//	4    R, the length once decompressed: 1 to MaxChunk (equal to S when stored as is)
//	4    CRC-32C of the S stored bytes
//	S    the stored bytes
//
// then the trailer:
//
//	1    kind 0: the end
//	8    the length of the migration stream (the sum of every chunk's R)
//	8    the length of the stream before the digest (this field included)
//	32   SHA-256 of every byte before it
//
// and nothing after it.
//
// # Security
//
// A stream may come from anywhere. The reader allocates at most
// MaxDefinition for the definition and a few MaxChunk buffers, whatever
// the stream's lengths say; zstd frames are decoded with a bounded window
// and output. A stream that is foreign (no magic), of another version,
// truncated, altered or followed by anything is refused with an error
// saying which, and an altered chunk is refused when it arrives, before its
// bytes are returned. The SHA-256 trailer is a checksum against damage, not
// a signature: whoever can write the stream can write a matching trailer.
package stream

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// Magic starts every stream: a byte above 0x7f (a 7-bit channel damages
// it), the format's name, and CR LF (a text-mode transfer damages them).
const Magic = "\x89VMTUI\r\n"

// Version is the stream version this package writes and reads.
const Version = 1

// Limits.
const (
	// MaxDefinition bounds the definition's length.
	MaxDefinition = 1 << 20
	// MaxChunk bounds a chunk, stored or decompressed.
	MaxChunk = 1 << 20
)

// FlagRunning marks a stream of a guest that was running (not paused)
// when it was written.
const FlagRunning = 1 << 0

// Chunk kinds.
const (
	kindEnd  = 0
	kindRaw  = 1
	kindZstd = 2
)

// ErrFormat is what every error about a malformed stream wraps.
var ErrFormat = errors.New("not a valid vmtui vm stream")

// FormatError says what is wrong with a stream, and where.
type FormatError struct {
	Offset int64 // bytes of the stream read before the problem
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("vm stream: %s (at byte %d)", e.Msg, e.Offset)
}

// Is makes a FormatError match ErrFormat.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Header is what a stream says before the migration stream.
type Header struct {
	// Flags: FlagRunning or 0.
	Flags uint32
	// Definition is the VM's definition, the TOML of its file.
	Definition []byte
}

// Running reports whether the guest was running when the stream was written.
func (h Header) Running() bool { return h.Flags&FlagRunning != 0 }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer writes a stream: NewWriter writes the header, Write the
// migration stream, Close the trailer (or Abort gives up). Full chunks are
// compressed, checksummed and written by a goroutine of the Writer's while
// Write takes the next: the producer of the migration stream (QEMU) need
// not wait for them. A Writer is not safe for concurrent use, but Written
// may be called from any goroutine.
type Writer struct {
	w       io.Writer
	sum     hash.Hash
	n       atomic.Int64 // bytes written to w
	payload int64        // bytes of migration stream taken
	buf     []byte       // the chunk being filled
	out     []byte       // the worker's compression buffer
	enc     *zstd.Encoder
	skip    int // chunks left to store without trying to compress (worker's)

	work chan []byte // full chunks, to the worker
	free chan []byte // buffers back from the worker
	done chan struct{}
	mu   sync.Mutex
	err  error // the first error, sticky
	shut bool  // the worker was told to end
}

// pipelineDepth is how many chunks may wait for the worker.
const pipelineDepth = 2

// NewWriter writes the header h to w and returns a Writer for the rest.
// Close or Abort it, to end its goroutine.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if len(h.Definition) == 0 || len(h.Definition) > MaxDefinition {
		return nil, fmt.Errorf("vm stream: definition of %d bytes (want 1 to %d)", len(h.Definition), MaxDefinition)
	}
	if h.Flags&^FlagRunning != 0 {
		return nil, fmt.Errorf("vm stream: unknown flags %#x", h.Flags)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), zstd.WithWindowSize(MaxChunk), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("vm stream: %w", err)
	}
	sw := &Writer{w: w, sum: sha256.New(), enc: enc,
		work: make(chan []byte, pipelineDepth), free: make(chan []byte, pipelineDepth+2), done: make(chan struct{})}
	head := make([]byte, 0, 24+len(h.Definition))
	head = append(head, Magic...)
	head = binary.BigEndian.AppendUint32(head, Version)
	head = binary.BigEndian.AppendUint32(head, h.Flags)
	head = binary.BigEndian.AppendUint32(head, uint32(len(h.Definition)))
	head = append(head, h.Definition...)
	head = binary.BigEndian.AppendUint32(head, crc32.Checksum(head, castagnoli))
	if err := sw.emit(head); err != nil {
		return nil, err
	}
	for range pipelineDepth + 1 {
		sw.free <- make([]byte, 0, MaxChunk)
	}
	sw.buf = <-sw.free
	go sw.worker()
	return sw, nil
}

// fail records err, the first one.
func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// failed returns the first error.
func (w *Writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// emit writes b to the underlying writer and the digest.
func (w *Writer) emit(b []byte) error {
	n, err := w.w.Write(b)
	w.n.Add(int64(n))
	w.sum.Write(b[:n])
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// worker writes the chunks it is given, in order, until work is closed;
// after an error it only hands the buffers back.
func (w *Writer) worker() {
	defer close(w.done)
	for buf := range w.work {
		if w.failed() == nil {
			if err := w.writeChunk(buf); err != nil {
				w.fail(err)
			}
		}
		w.free <- buf[:0]
	}
}

// Write takes p as the next bytes of the migration stream.
func (w *Writer) Write(p []byte) (int, error) {
	taken := 0
	for len(p) > 0 {
		if err := w.failed(); err != nil {
			return taken, err
		}
		if w.shut {
			return taken, errors.New("vm stream: write after close")
		}
		n := min(len(p), MaxChunk-len(w.buf))
		w.buf = append(w.buf, p[:n]...)
		p, taken = p[n:], taken+n
		w.payload += int64(n)
		if len(w.buf) == MaxChunk {
			w.work <- w.buf
			w.buf = <-w.free
		}
	}
	return taken, nil
}

// incompressibleSkip is how many chunks are stored as they are after one
// that zstd could not shrink by 1/32: random or encrypted memory does not
// pay for the attempt. (Measured on a guest holding 100 MiB of random
// bytes among 94 MiB of its own: 0 gives 131.7 MiB for 680 ms of
// compression, 2 gives 134.6 MiB for 320 ms, 7 gives 138.3 MiB.)
const incompressibleSkip = 2

// writeChunk writes raw as one chunk, compressed when that makes it
// smaller by at least 1/32.
func (w *Writer) writeChunk(raw []byte) error {
	kind, stored := byte(kindRaw), raw
	if w.skip > 0 {
		w.skip--
	} else {
		w.out = w.enc.EncodeAll(raw, w.out[:0])
		if len(w.out) < len(raw)-len(raw)/32 {
			kind, stored = kindZstd, w.out
		} else {
			w.skip = incompressibleSkip
		}
	}
	var head [13]byte
	head[0] = kind
	binary.BigEndian.PutUint32(head[1:], uint32(len(stored)))
	binary.BigEndian.PutUint32(head[5:], uint32(len(raw)))
	binary.BigEndian.PutUint32(head[9:], crc32.Checksum(stored, castagnoli))
	if err := w.emit(head[:]); err != nil {
		return err
	}
	return w.emit(stored)
}

// stop ends the worker, once it has written what it was given.
func (w *Writer) stop() {
	if !w.shut {
		w.shut = true
		close(w.work)
		<-w.done
	}
}

// Close writes what is buffered and the trailer. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.shut {
		if err := w.failed(); err != nil {
			return err
		}
		return errors.New("vm stream: closed twice")
	}
	if len(w.buf) > 0 && w.failed() == nil {
		w.work <- w.buf
		w.buf = nil
	}
	w.stop()
	if err := w.failed(); err != nil {
		return err
	}
	var tail [17]byte
	tail[0] = kindEnd
	binary.BigEndian.PutUint64(tail[1:], uint64(w.payload))
	binary.BigEndian.PutUint64(tail[9:], uint64(w.n.Load()+int64(len(tail))))
	if err := w.emit(tail[:]); err != nil {
		w.fail(err)
		return err
	}
	if err := w.emit(w.sum.Sum(nil)); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

// Abort ends the Writer without a trailer: what was written is a
// truncated stream, which no Reader accepts.
func (w *Writer) Abort() {
	w.fail(errors.New("vm stream: aborted"))
	w.stop()
}

// Written returns how many bytes of stream have been written so far.
func (w *Writer) Written() int64 { return w.n.Load() }

// Payload returns how many bytes of migration stream were taken so far.
func (w *Writer) Payload() int64 { return w.payload }

// Reader reads a stream: NewReader reads and checks the header, Read
// returns the migration stream, and io.EOF only once the trailer has been
// read and checked. It is not safe for concurrent use.
type Reader struct {
	r       *bufio.Reader
	sum     hash.Hash
	n       int64 // bytes of stream read
	payload int64
	header  Header
	chunk   []byte // the current chunk, decompressed
	pos     int    // bytes of chunk returned
	stored  []byte // the current chunk as stored
	out     []byte // the current chunk decompressed, when it was compressed
	dec     *zstd.Decoder
	err     error // sticky: io.EOF once verified, or the first error
}

// NewReader reads the header of the stream r and checks it.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	var fixed [20]byte
	if err := sr.full(fixed[:8], "magic"); err != nil {
		return nil, err
	}
	if string(fixed[:8]) != Magic {
		return nil, sr.format(-8, "no magic: not a vmtui vm stream (as vmtui send and vmtui save write)")
	}
	if err := sr.full(fixed[8:20], "header"); err != nil {
		return nil, err
	}
	if v := binary.BigEndian.Uint32(fixed[8:]); v != Version {
		return nil, sr.format(-12, fmt.Sprintf("version %d, which this vmtui cannot read (it reads version %d)", v, Version))
	}
	flags := binary.BigEndian.Uint32(fixed[12:])
	if flags&^FlagRunning != 0 {
		return nil, sr.format(-8, fmt.Sprintf("unknown flags %#x", flags))
	}
	n := binary.BigEndian.Uint32(fixed[16:])
	if n == 0 || n > MaxDefinition {
		return nil, sr.format(-4, fmt.Sprintf("definition of %d bytes (want 1 to %d)", n, MaxDefinition))
	}
	def := make([]byte, n)
	if err := sr.full(def, "definition"); err != nil {
		return nil, err
	}
	crc := crc32.Update(crc32.Checksum(fixed[:], castagnoli), castagnoli, def)
	var got [4]byte
	if err := sr.full(got[:], "header checksum"); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(got[:]) != crc {
		return nil, sr.format(-4, "header checksum mismatch: the stream is damaged")
	}
	sr.header = Header{Flags: flags, Definition: def}
	return sr, nil
}

// Header returns the stream's header.
func (r *Reader) Header() Header { return r.header }

// Payload returns how many bytes of migration stream were returned so far.
func (r *Reader) Payload() int64 { return r.payload }

// Consumed returns how many bytes of stream were read so far.
func (r *Reader) Consumed() int64 { return r.n }

// format returns a FormatError at the current offset plus delta.
func (r *Reader) format(delta int64, msg string) error {
	return &FormatError{Offset: r.n + delta, Msg: msg}
}

// full reads exactly len(b) bytes into b, adding them to the digest; a
// stream that ends first is truncated.
func (r *Reader) full(b []byte, what string) error {
	n, err := io.ReadFull(r.r, b)
	r.n += int64(n)
	r.sum.Write(b[:n])
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return r.format(0, fmt.Sprintf("truncated: the stream ends inside the %s", what))
	case err != nil:
		return fmt.Errorf("read vm stream: %w", err)
	}
	return nil
}

// Read returns the next bytes of the migration stream. At its end it
// returns io.EOF if the trailer checks out, else an error wrapping
// ErrFormat (or the underlying reader's error).
func (r *Reader) Read(p []byte) (int, error) {
	for r.pos == len(r.chunk) {
		if r.err != nil {
			return 0, r.err
		}
		if r.err = r.next(); r.err != nil {
			return 0, r.err
		}
	}
	n := copy(p, r.chunk[r.pos:])
	r.pos += n
	r.payload += int64(n)
	return n, nil
}

// next reads the next chunk into r.chunk, or the trailer (then io.EOF).
func (r *Reader) next() error {
	var head [13]byte
	if err := r.full(head[:1], "chunk header"); err != nil {
		return err
	}
	switch head[0] {
	case kindEnd:
		return r.trailer()
	case kindRaw, kindZstd:
	default:
		return r.format(-1, fmt.Sprintf("unknown chunk kind %d: the stream is damaged", head[0]))
	}
	if err := r.full(head[1:], "chunk header"); err != nil {
		return err
	}
	s := binary.BigEndian.Uint32(head[1:])
	raw := binary.BigEndian.Uint32(head[5:])
	crc := binary.BigEndian.Uint32(head[9:])
	switch {
	case raw == 0 || raw > MaxChunk:
		return r.format(-8, fmt.Sprintf("chunk of %d bytes (want 1 to %d)", raw, MaxChunk))
	case head[0] == kindRaw && s != raw:
		return r.format(-12, fmt.Sprintf("stored chunk of %d bytes says %d", s, raw))
	case head[0] == kindZstd && (s == 0 || s >= raw):
		return r.format(-12, fmt.Sprintf("compressed chunk of %d bytes for %d", s, raw))
	}
	if r.stored == nil {
		r.stored = make([]byte, MaxChunk)
	}
	stored := r.stored[:s]
	if err := r.full(stored, "chunk"); err != nil {
		return err
	}
	if crc32.Checksum(stored, castagnoli) != crc {
		return r.format(-int64(s), "chunk checksum mismatch: the stream is damaged")
	}
	if head[0] == kindRaw {
		r.chunk, r.pos = stored, 0
		return nil
	}
	if r.dec == nil {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(2*MaxChunk), zstd.WithDecoderMaxWindow(MaxChunk))
		if err != nil {
			return fmt.Errorf("read vm stream: %w", err)
		}
		r.dec = dec
	}
	if r.out == nil {
		r.out = make([]byte, 0, MaxChunk)
	}
	out, err := r.dec.DecodeAll(stored, r.out[:0])
	if err != nil || len(out) != int(raw) {
		if err == nil {
			err = fmt.Errorf("%d bytes, not %d", len(out), raw)
		}
		return r.format(-int64(s), fmt.Sprintf("compressed chunk does not decompress: %v", err))
	}
	r.chunk, r.pos = out, 0
	return nil
}

// trailer reads and checks the trailer, after its kind byte.
func (r *Reader) trailer() error {
	var tail [16]byte
	if err := r.full(tail[:], "trailer"); err != nil {
		return err
	}
	want := r.sum.Sum(nil) // the digest covers every byte before it
	var got [sha256.Size]byte
	if err := r.full(got[:], "trailer"); err != nil {
		return err
	}
	payload := int64(binary.BigEndian.Uint64(tail[:]))
	length := int64(binary.BigEndian.Uint64(tail[8:]))
	switch {
	case payload != r.payload:
		return r.format(-48, fmt.Sprintf("trailer says %d bytes of migration stream, not the %d read: the stream is damaged", payload, r.payload))
	case length != r.n-sha256.Size:
		return r.format(-40, fmt.Sprintf("trailer says %d bytes of stream, not the %d read: the stream is damaged", length, r.n-sha256.Size))
	case string(got[:]) != string(want):
		return r.format(-sha256.Size, "checksum mismatch: the stream is damaged")
	}
	// Nothing may follow: a stream with more after it is not this one.
	var extra [1]byte
	if n, err := r.r.Read(extra[:]); n > 0 {
		return r.format(0, "data after the trailer")
	} else if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read vm stream: %w", err)
	} else if err == nil {
		// A reader may return 0, nil: ask once more, as io.ReadFull would.
		if n, _ := io.ReadFull(r.r, extra[:]); n > 0 {
			return r.format(0, "data after the trailer")
		}
	}
	return io.EOF
}
