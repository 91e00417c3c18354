package disk

import (
	"context"
	"fmt"
)

// Resize grows the image at path to size bytes (a qcow2 image's size is
// rounded up to 512 by the engine). Shrinking is refused with an error
// wrapping ErrShrink; the same size is not an error.
//
// A resize is one header write (a qcow2 image's larger L1 table is written
// first, elsewhere): it is not interrupted half-way, but a cancelled ctx
// stops it before it starts, with an error wrapping ctx's.
func Resize(ctx context.Context, path string, size int64) error {
	if err := resize(ctx, path, size); err != nil {
		return fmt.Errorf("resize %q: %w", path, err)
	}
	return nil
}

func resize(ctx context.Context, path string, size int64) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	img, err := Open(path, OpenOptions{})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := img.Close(); err == nil {
			err = cerr
		}
	}()
	if size < img.Size() {
		return fmt.Errorf("%w: from %d to %d bytes would lose data (make a new image and convert instead)", ErrShrink, img.Size(), size)
	}
	if size == img.Size() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch img := img.(type) {
	case *qcow2Image:
		return img.img.Resize(size)
	case *rawImage:
		return img.resize(size)
	}
	return fmt.Errorf("cannot resize a %s image", img.Format())
}
