package disk

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
)

// ErrSavedVM is what a *SavedError matches.
var ErrSavedVM = errors.New("disk: image is used by a saved vm")

// SavedError reports an image that a saved VM (vmtui save) uses: its saved
// state expects the VM's disks as they are, so a change to one of them, or
// to an image in their backing chains, would break its resume.
type SavedError struct {
	Path string   // the image, as it was named
	VMs  []string // the saved VMs that use it, sorted
}

func (e *SavedError) Error() string {
	vm := e.VMs[0]
	return fmt.Sprintf("image %q is used by saved vm %s, whose saved state expects its disks as they are: "+
		"resume it and stop it (vmtui start %s, then vmtui stop %s), or discard its saved state "+
		"(vmtui start --fresh %s), first", e.Path, strings.Join(e.VMs, " and "), vm, vm, vm)
}

// Is makes errors.Is(err, ErrSavedVM) true.
func (e *SavedError) Is(target error) bool { return target == ErrSavedVM }

// RefuseSaved returns a *SavedError when the image at path, which the caller
// is about to write, is used by a saved VM: one of its disks is that image
// or has it in its backing chain (the same file by device and inode,
// whatever its name). saved returns the disks of each saved VM by name (the
// disk package knows nothing of VMs: the caller does). An image that cannot
// be read is not refused here: the operation that writes it says why.
func RefuseSaved(path string, saved func() (map[string][]string, error)) error {
	if saved == nil {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	id := fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	vms, err := saved()
	if err != nil {
		return fmt.Errorf("image %q: find the saved vms that use it: %w", path, err)
	}
	var names []string
	for name, paths := range vms {
		for _, p := range paths {
			if chainHas(p, id) {
				names = append(names, name)
				break
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return &SavedError{Path: path, VMs: names}
}
