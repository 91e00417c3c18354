package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// commitChunk bounds the bytes Commit reads at once.
const commitChunk = 2 << 20

// Commit writes what the qcow2 image at overlay holds itself (its data and
// its zero clusters) into its backing file, which it opens for writing
// (qcow2 or raw), and flushes it, as qemu-img commit -d: the overlay is left
// as it is. A backing file smaller than the overlay is grown first.
//
// Commit stops soon after ctx is cancelled, with an error wrapping ctx's:
// the backing file then holds part of the overlay's data, its metadata
// consistent (it is flushed and closed as after a complete commit).
func Commit(ctx context.Context, overlay string, opts CommitOptions) error {
	if err := commit(ctx, overlay, opts); err != nil {
		return fmt.Errorf("commit %q: %w", overlay, err)
	}
	return nil
}

// CommitOptions control Commit.
type CommitOptions struct {
	// Progress, when set, is called with the bytes of the overlay gone
	// through and its size, first with done 0 once the images are open and
	// last with done == total.
	Progress func(done, total int64)
	// Passphrase decrypts an AES-encrypted qcow overlay (see OpenOptions).
	Passphrase []byte
}

func commit(ctx context.Context, overlay string, opts CommitOptions) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(int64, int64) {}
	}
	c := &chain{writable: 1, passphrase: opts.Passphrase}
	top, err := c.open(overlay, "", false, filepath.Base(overlay))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := top.Close(); err == nil {
			err = cerr
		}
	}()
	q, ok := commitSourceOf(top)
	if !ok {
		return fmt.Errorf("a %s image has no backing file", top.Format())
	}
	base := q.backing
	if base == nil {
		return errors.New("the image has no backing file")
	}
	bpath := backingPath(overlay, q.backingName)
	size := top.Size()
	if size > base.Size() {
		switch b := base.(type) {
		case *qcow2Image:
			err = b.img.Resize(size)
		case *rawImage:
			err = b.resize(size)
		default:
			err = fmt.Errorf("cannot resize a %s image", base.Format())
		}
		if err != nil {
			return fmt.Errorf("grow backing file %q to %d bytes: %w", bpath, size, err)
		}
	}
	zeroer, _ := base.(interface{ WriteZeroes(off, n int64) error })
	buf := make([]byte, commitChunk)
	progress(0, size)
	for off := int64(0); off < size; {
		// A chunk is at most 2 MiB of I/O: a few milliseconds.
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := q.status(off, min(commitChunk, size-off))
		if err != nil {
			return fmt.Errorf("status at %d: %w", off, err)
		}
		if e.Length <= 0 || e.Length > size-off {
			return fmt.Errorf("status at %d: bad extent length %d", off, e.Length)
		}
		switch e.Kind {
		case ExtentData:
			b := buf[:e.Length]
			if _, err := top.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			if _, err := base.WriteAt(b, off); err != nil {
				return fmt.Errorf("write backing file %q at %d: %w", bpath, off, err)
			}
		case ExtentZero:
			if zeroer != nil {
				err = zeroer.WriteZeroes(off, e.Length)
			} else {
				clear(buf[:e.Length])
				_, err = base.WriteAt(buf[:e.Length], off)
			}
			if err != nil {
				return fmt.Errorf("write zeroes to backing file %q at %d: %w", bpath, off, err)
			}
		}
		off += e.Length
		progress(off, size)
	}
	if err := base.Flush(); err != nil {
		return fmt.Errorf("flush backing file %q: %w", bpath, err)
	}
	return nil
}
