package disk

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmtui/vmtui/disk/qcow2"
)

// CheckOptions control Check.
type CheckOptions struct {
	// ForceShare checks an image that a running QEMU writes, as qemu-img
	// check -U does: the image changes while it is checked, so errors may
	// be reported that are none. Not with a repair.
	ForceShare bool
}

// Check checks the consistency of the qcow2 image at path as qemu-img check
// does, repairing what mode asks for, or of the qcow image at path beyond
// qemu-img (see qcow.Check; qcow images are not repaired); the file is opened for writing only
// when repairing. Backing files are not needed. For a raw image it returns
// an error wrapping ErrCheckNotSupported. The image is locked as qemu-img
// check locks it (see Open): an image a running QEMU writes is refused with
// an error wrapping ErrInUse, and one a running QEMU uses at all is refused
// a repair.
//
// Check stops soon after ctx is cancelled, with an error wrapping ctx's; an
// interrupted repair leaves the image no worse than it was (see qcow2.Check).
// A refused repair returns the check's result with its error.
func Check(ctx context.Context, path string, mode qcow2.RepairMode, opts CheckOptions) (*qcow2.CheckResult, error) {
	res, err := check(ctx, path, mode, opts)
	if err != nil {
		return res, fmt.Errorf("check %q: %w", path, err)
	}
	return res, nil
}

func check(ctx context.Context, path string, mode qcow2.RepairMode, opts CheckOptions) (*qcow2.CheckResult, error) {
	write := mode != qcow2.RepairNone
	if write && opts.ForceShare {
		return nil, errors.New("force-share cannot be used with a repair")
	}
	f, id, err := openImageFile(path, write, lockNone)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ft, err := probe(f)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, path, id, lockFor(ft, write, false, opts.ForceShare)); err != nil {
		return nil, err
	}
	if ft == FormatQcow {
		return checkQcow(ctx, f, mode)
	}
	if ft != FormatQcow2 {
		return nil, fmt.Errorf("%w (%s)", ErrCheckNotSupported, ft)
	}
	res, err := qcow2.Check(ctx, f, mode)
	if err != nil {
		return res, err
	}
	if mode != qcow2.RepairNone {
		if err := f.Sync(); err != nil {
			return nil, PathCause(err)
		}
	}
	return res, nil
}
