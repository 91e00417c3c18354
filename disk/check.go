package disk

import (
	"fmt"
	"os"

	"vmtui/disk/qcow2"
)

// Check checks the consistency of the qcow2 image at path as qemu-img check
// does, repairing what mode asks for; the file is opened for writing only
// when repairing. Backing files are not needed. For a raw image it returns
// an error wrapping ErrCheckNotSupported.
func Check(path string, mode qcow2.RepairMode) (*qcow2.CheckResult, error) {
	res, err := check(path, mode)
	if err != nil {
		return nil, fmt.Errorf("check %q: %w", path, err)
	}
	return res, nil
}

func check(path string, mode qcow2.RepairMode) (*qcow2.CheckResult, error) {
	flag := os.O_RDONLY
	if mode != qcow2.RepairNone {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	ft, err := probe(f)
	if err != nil {
		return nil, err
	}
	if ft != FormatQcow2 {
		return nil, fmt.Errorf("%w (%s)", ErrCheckNotSupported, ft)
	}
	res, err := qcow2.Check(f, mode)
	if err != nil {
		return nil, err
	}
	if mode != qcow2.RepairNone {
		if err := f.Sync(); err != nil {
			return nil, pathErr(err)
		}
	}
	return res, nil
}
