package disk

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Image locks, as QEMU takes them.
//
// QEMU (block/file-posix.c, raw_apply_lock_bytes and raw_check_lock_bytes)
// tells the programs that use one image file what each needs with
// byte-range open file description locks (F_OFD_SETLK), all of them shared
// (read) locks of one byte:
//
//   - for each permission it holds, byte 100+bit;
//   - for each permission it does not let others hold, byte 200+bit;
//
// where the bits are those of BLK_PERM_*: consistent read 0, write 1,
// write unchanged 2, resize 3. Before it uses an image, it asks
// (F_OFD_GETLK, as for an exclusive lock) whether another open file holds
// byte 200+bit for a permission it wants, or byte 100+bit for one it will
// not share, and gives up if so. vmtui does the same, with the same bytes,
// so that it and QEMU (qemu-system, qemu-img, qemu-io, qemu-nbd...) keep
// out of each other's way: a running guest's disk is never written by
// vmtui, and QEMU does not start on an image vmtui is writing.
//
// The locks belong to the open file description, not to the process: they
// last while the image's file is open and go when it is closed, whatever
// other files of the process do (which is why process-associated F_SETLK
// locks would not do).

// perm is a set of QEMU's block permissions (BLK_PERM_*).
type perm uint8

const (
	permConsistentRead perm = 1 << iota // BLK_PERM_CONSISTENT_READ
	permWrite                           // BLK_PERM_WRITE
	permWriteUnchanged                  // BLK_PERM_WRITE_UNCHANGED
	permResize                          // BLK_PERM_RESIZE

	permAll = permConsistentRead | permWrite | permWriteUnchanged | permResize
)

// permNames are QEMU's names of the permissions, by bit (bdrv_perm_names).
var permNames = [...]string{"consistent read", "write", "write unchanged", "resize"}

// The first bytes of QEMU's two ranges of lock bytes (RAW_LOCK_PERM_BASE,
// RAW_LOCK_SHARED_BASE).
const (
	lockPermBase   = 100
	lockSharedBase = 200
)

// lockMode is what vmtui holds on an image file and what it lets others
// hold at the same time.
type lockMode struct {
	take, share perm
}

var (
	// lockNone takes no locks and checks none: for files that are not
	// images yet.
	lockNone = lockMode{share: permAll}
	// lockHeaders is qemu-img info's: it reads metadata only (QEMU's
	// BDRV_O_NO_IO), so it holds nothing, and it does not share writing or
	// resizing, so that the headers it reads are not changing.
	lockHeaders = lockMode{share: permConsistentRead | permWriteUnchanged}
	// lockRead is that of a read-only open by qemu-img (check, convert's
	// input), and of a backing file under a running guest: consistent
	// reads, sharing no writer.
	lockRead = lockMode{
		take:  permConsistentRead,
		share: permConsistentRead | permWriteUnchanged,
	}
	// lockWrite is that of a read-write open by qemu-img (resize, commit's
	// base, check -r) or by a guest's writable disk: the format driver
	// writes and resizes the file, and nobody else may.
	lockWrite = lockMode{
		take:  permConsistentRead | permWrite | permResize,
		share: permConsistentRead | permWriteUnchanged,
	}
)

// lockFor returns the locks QEMU takes on an image of format ft that it
// opens for writing (write), as a backing file (backing) or else for
// reading; share is -U, for reads.
//
// QEMU's raw format driver passes its user's sharing on to the file, and
// qemu-img shares everything it opens itself: so a raw image that qemu-img
// reads (convert, check) is read even while a guest writes it, while a raw
// backing file is locked as a qcow2 one, since the overlay above it shares
// no writer. vmtui writes raw images as qcow2 ones, sharing no writer, so
// that two vmtui commands never write one image at once (qemu-img would
// let two of its own).
func lockFor(ft Format, write, backing, share bool) lockMode {
	switch {
	case write:
		return lockWrite
	case share, ft == FormatRaw && !backing:
		return lockRead.forceShared()
	}
	return lockRead
}

// headerLockFor returns the locks qemu-img info takes on an image of
// format ft, whose headers it reads (with share, info -U).
func headerLockFor(ft Format, share bool) lockMode {
	if share || ft == FormatRaw {
		return lockHeaders.forceShared()
	}
	return lockHeaders
}

// forceShared is m as qemu-img's -U (force-share) makes it: sharing every
// permission, so that an image a running guest writes can be read, as it
// is at the moment, however inconsistent. Only reads may force sharing.
func (m lockMode) forceShared() lockMode {
	m.share = permAll
	return m
}

// ErrInUse is wrapped by the errors about images that another program
// (usually a running QEMU) holds in a way that excludes what vmtui wants.
var ErrInUse = errors.New("disk: image is in use")

// InUseError reports an image that another program holds: QEMU's lock
// bytes say that it writes the image and vmtui wants to read it, or that it
// uses the image and vmtui wants to write it.
type InUseError struct {
	// Path is the image, as vmtui was asked to open it (for a backing
	// file, as its overlay names it).
	Path string
	// Lock says which lock could not be had, in qemu-img's words:
	// `Failed to get "write" lock`, `Failed to get shared "write" lock`.
	Lock string
	// ReadOnly is set when vmtui only wanted to read the image, which -U
	// (force-share) allows.
	ReadOnly bool
	// Holder names who holds the image ("vm web"); empty when unknown.
	Holder string

	id fileID
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("image is in use by %s (%s)", cmp.Or(e.Holder, "another process"), e.Lock)
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// lockFile takes the locks of mode m on the image file f, and fails with
// an *InUseError when another open file of it excludes them (QEMU's
// raw_handle_perm_lock: apply, then check). On failure the locks taken so
// far stay on f until it is closed, which the caller does.
func lockFile(f *os.File, path string, id fileID, m lockMode) error {
	if m == lockNone {
		return nil
	}
	fd := int(f.Fd())
	for i := range permNames {
		bit := perm(1) << i
		if m.take&bit != 0 {
			if err := setLock(fd, lockPermBase+i); err != nil {
				return err
			}
		}
		if m.share&bit == 0 {
			if err := setLock(fd, lockSharedBase+i); err != nil {
				return err
			}
		}
	}
	readOnly := m.take&(permWrite|permResize|permWriteUnchanged) == 0
	for i, name := range permNames {
		if m.take&(perm(1)<<i) == 0 {
			continue
		}
		held, err := lockHeld(fd, lockSharedBase+i)
		if err != nil {
			return err
		}
		if held {
			return &InUseError{Path: path, Lock: fmt.Sprintf("Failed to get %q lock", name), ReadOnly: readOnly, id: id}
		}
	}
	for i, name := range permNames {
		if m.share&(perm(1)<<i) != 0 {
			continue
		}
		held, err := lockHeld(fd, lockPermBase+i)
		if err != nil {
			return err
		}
		if held {
			return &InUseError{Path: path, Lock: fmt.Sprintf("Failed to get shared %q lock", name), ReadOnly: readOnly, id: id}
		}
	}
	return nil
}

// setLock takes a shared lock on byte off of fd's open file description.
func setLock(fd, off int) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: int64(off), Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		return fmt.Errorf("lock byte %d: %w", off, err)
	}
	return nil
}

// lockHeld reports whether another open file description holds a lock on
// byte off (QEMU's qemu_lock_fd_test with exclusive set).
func lockHeld(fd, off int) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(off), Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false, fmt.Errorf("test the lock on byte %d: %w", off, err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

// writerHolds reports whether a program holds the image file f for
// writing (byte 100+write locked by another open file description).
func writerHolds(f *os.File) (bool, error) {
	return lockHeld(int(f.Fd()), lockPermBase+1)
}

// NameHolder returns err with the holder of the image it says is in use
// named, when err wraps an *InUseError and vms finds a VM that uses the
// image. vms returns the disks of each defined VM by name; a VM uses an
// image when one of its disks is that image or has it in its backing chain
// (the same file by device and inode, whatever its name). Otherwise, and
// when vms fails, err is returned as it is.
func NameHolder(err error, vms func() (map[string][]string, error)) error {
	var iu *InUseError
	if !errors.As(err, &iu) || iu.Holder != "" || vms == nil {
		return err
	}
	disks, lerr := vms()
	if lerr != nil {
		return err
	}
	var names []string
	for name, paths := range disks {
		for _, p := range paths {
			if chainHas(p, iu.id) {
				names = append(names, "vm "+name)
				break
			}
		}
	}
	if len(names) == 0 {
		return err
	}
	sort.Strings(names)
	named := *iu
	named.Holder = strings.Join(names, " or ")
	return &holderError{msg: strings.Replace(err.Error(), iu.Error(), named.Error(), 1), err: err}
}

// holderError is an error whose text names who holds an image.
type holderError struct {
	msg string
	err error
}

func (e *holderError) Error() string { return e.msg }
func (e *holderError) Unwrap() error { return e.err }

// chainHas reports whether the image at path, or an image in its backing
// chain, is the file id. It reads headers only and takes no locks, so it
// works on the disks of running VMs.
func chainHas(path string, id fileID) bool {
	ft := Format("")
	seen := 0
	for path != "" && seen < MaxChainDepth {
		info, got, err := describe(path, ft, nil)
		if err != nil {
			return false
		}
		if got == id {
			return true
		}
		seen++
		if ft, err = parseFormat(info.BackingFormat); err != nil {
			return false
		}
		path = info.FullBackingFilename
	}
	return false
}
