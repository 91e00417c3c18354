package disk

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// rawImage is a raw image: the virtual disk is the file, holes read as zeros.
type rawImage struct {
	f        *os.File
	path     string
	size     int64 // the file's size rounded up to 512
	readOnly bool
	// noSeekData is set when the file system cannot report holes; every
	// range is then data.
	noSeekData atomic.Bool

	// last is the extent the last SEEK_DATA/SEEK_HOLE found, whole: on
	// some file systems (tmpfs) each lseek scans the hole it starts in, so
	// asking again for every chunk of a large hole would be quadratic.
	// Writes forget it.
	mu   sync.Mutex
	last Extent
}

// newRaw wraps the open file f (a regular file or a block device).
func newRaw(f *os.File, path string, readOnly bool) (*rawImage, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("size of %q: %w", path, PathCause(err))
	}
	return &rawImage{f: f, path: path, size: rawSize(size), readOnly: readOnly}, nil
}

// rawSize is the virtual size of a raw file of n bytes: as in QEMU, whole
// 512-byte sectors, the last one padded with zeros.
func rawSize(n int64) int64 {
	if n > math.MaxInt64-511 {
		return n &^ 511
	}
	return (n + 511) &^ 511
}

func (r *rawImage) Size() int64    { return r.size }
func (r *rawImage) Format() Format { return FormatRaw }

// ReadAt reads the disk; it returns io.EOF only past the end.
func (r *rawImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %q at %d: negative offset", r.path, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	short := false
	if rest := r.size - off; int64(len(p)) > rest {
		p, short = p[:rest], true
	}
	n, err := r.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) && n < len(p) {
		// The file shrank under us: what is gone reads as zeros.
		clear(p[n:])
		n, err = len(p), nil
	}
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// WriteAt writes the disk; writes past its end are refused.
func (r *rawImage) WriteAt(p []byte, off int64) (int, error) {
	if r.readOnly {
		return 0, fmt.Errorf("write %q: image is open read-only", r.path)
	}
	if off < 0 {
		return 0, fmt.Errorf("write %q at %d: negative offset", r.path, off)
	}
	if off > r.size || int64(len(p)) > r.size-off {
		return 0, fmt.Errorf("write %q: %d bytes at %d are beyond the end of the disk (%d bytes)", r.path, len(p), off, r.size)
	}
	defer r.forget()
	return r.f.WriteAt(p, off)
}

// WriteZeroes makes [off, off+n) read as zeros, punching a hole where the
// file system can.
func (r *rawImage) WriteZeroes(off, n int64) error {
	if r.readOnly {
		return fmt.Errorf("write %q: image is open read-only", r.path)
	}
	if off < 0 || n < 0 || off > r.size || n > r.size-off {
		return fmt.Errorf("write zeroes to %q: %d bytes at %d are beyond the end of the disk (%d bytes)", r.path, n, off, r.size)
	}
	if n == 0 {
		return nil
	}
	defer r.forget()
	err := unix.Fallocate(int(r.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("write zeroes to %q at %d: %w", r.path, off, err)
	}
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := r.f.WriteAt(zero[:k], off); err != nil {
			return fmt.Errorf("write zeroes to %q at %d: %w", r.path, off, PathCause(err))
		}
		off, n = off+k, n-k
	}
	return nil
}

// Status reports data or a hole at off with SEEK_DATA and SEEK_HOLE.
func (r *rawImage) Status(off, n int64) (Extent, error) {
	if err := checkRange(off, n, r.size); err != nil {
		return Extent{}, err
	}
	n = min(n, r.size-off)
	if r.noSeekData.Load() {
		return Extent{Offset: off, Length: n, Kind: ExtentData}, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.last
	if off < e.Offset || off >= e.Offset+e.Length {
		var err error
		if e, err = r.seek(off); err != nil {
			return Extent{}, err
		}
		r.last = e
	}
	return Extent{Offset: off, Length: min(n, e.Offset+e.Length-off), Kind: e.Kind}, nil
}

// seek finds the whole extent that contains off. Called with r.mu held.
func (r *rawImage) seek(off int64) (Extent, error) {
	rest := Extent{Offset: off, Length: r.size - off, Kind: ExtentData}
	fd := int(r.f.Fd())
	next, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data from off to the end of the file.
		rest.Kind = ExtentZero
		return rest, nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		r.noSeekData.Store(true)
		return rest, nil
	case err != nil:
		return Extent{}, fmt.Errorf("status of %q at %d: %w", r.path, off, err)
	}
	if next > off {
		return Extent{Offset: off, Length: min(next, r.size) - off, Kind: ExtentZero}, nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return rest, nil // data is always a safe answer
	}
	if hole > off {
		rest.Length = min(hole, r.size) - off
	}
	return rest, nil
}

// forget drops the cached extent after a write.
func (r *rawImage) forget() {
	r.mu.Lock()
	r.last = Extent{}
	r.mu.Unlock()
}

func (r *rawImage) Flush() error {
	if r.readOnly {
		return nil
	}
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("flush %q: %w", r.path, PathCause(err))
	}
	return nil
}

func (r *rawImage) Close() error {
	err := r.Flush()
	if cerr := r.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %q: %w", r.path, PathCause(cerr))
	}
	return err
}

// resize sets the size of the file (and of the disk).
func (r *rawImage) resize(size int64) error {
	if r.readOnly {
		return fmt.Errorf("resize %q: image is open read-only", r.path)
	}
	if err := r.f.Truncate(size); err != nil {
		return fmt.Errorf("resize %q: %w", r.path, PathCause(err))
	}
	r.size = rawSize(size)
	r.forget()
	return nil
}
