// Package atomicfile writes files that appear whole or not at all.
//
// Create returns a file that has no name yet: an O_TMPFILE in the
// destination's directory where the file system allows, else a hidden file
// named after the destination ("."+name+".tmp-"+random), held with an flock
// for as long as it is open. Commit gives it the destination's name: by
// linking it there, which fails if a file of that name exists, or (with
// CommitReplace) by renaming it over one. Until then no reader sees it under
// the destination's name, and a process killed while writing leaves nothing
// (an O_TMPFILE goes with its last descriptor) or a hidden file that the next
// Create for the same destination removes, as nothing holds it any more.
// Abort leaves nothing either.
//
// The package imports nothing of vmtui's.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is a file being written that takes its destination's name on Commit.
// Its *os.File is for writing (and reading) it; Close it after Commit or
// let Abort close it.
type File struct {
	*os.File

	// NoSync, when set before Commit, skips the fsync of the file and of its
	// directory: faster, but a crash soon after Commit may lose the file or
	// leave it incomplete under its name.
	NoSync bool

	dst       string
	dir       string
	name      string // the hidden temporary name; "" for an O_TMPFILE or once committed
	committed bool
}

// noTmpfile is set by tests (UseTmpfile) to exercise the named temporary
// files of file systems without O_TMPFILE.
var noTmpfile atomic.Bool

// UseTmpfile turns the use of O_TMPFILE on (the default) or off for the
// whole process, and returns the previous setting. It is for tests of
// callers: with O_TMPFILE off, every file gets a hidden temporary name, as
// on file systems without O_TMPFILE.
func UseTmpfile(on bool) (previous bool) {
	return !noTmpfile.Swap(!on)
}

// tempPrefix is the start of the hidden names of temporary files for dst's base name.
func tempPrefix(base string) string { return "." + base + ".tmp" }

// Create creates an empty file that takes the name dst when committed, with
// permissions perm (before the umask), in dst's directory. It removes the
// temporary files that writers of dst killed before they committed left.
func Create(dst string, perm fs.FileMode) (*File, error) {
	dir, base := filepath.Split(dst)
	if base == "" {
		return nil, fmt.Errorf("create %q: no file name", dst)
	}
	if dir == "" {
		dir = "."
	}
	removeStale(dir, tempPrefix(base))
	if !noTmpfile.Load() {
		var fd int
		err := retryEINTR(func() (err error) {
			fd, err = unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, uint32(perm.Perm()))
			return err
		})
		switch {
		case err == nil:
			// Messages name it after what it becomes.
			f := &File{File: os.NewFile(uintptr(fd), dst), dst: dst, dir: dir}
			// Held from the start: a CommitReplace gives it a
			// temporary name for a moment.
			if err := f.lock(); err != nil {
				f.File.Close()
				return nil, err
			}
			return f, nil
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL):
			// The file system (or the kernel) has no O_TMPFILE.
		default:
			return nil, fmt.Errorf("create a temporary file in %q: %w", dir, err)
		}
	}
	for range 100 {
		name := tempName(dir, base)
		osf, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create a temporary file in %q: %w", dir, cause(err))
		}
		f := &File{File: osf, dst: dst, dir: dir, name: name}
		// Another Create may find the file before it is locked, take it
		// for one a killed writer left, and remove it: then try another.
		err = f.lock()
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.name = "" // the other Create holds it, and removes it
			f.Abort()
			continue
		}
		if err != nil {
			f.Abort()
			return nil, err
		}
		if fi, err := os.Lstat(name); err != nil || !sameFile(fi, osf) {
			f.name = ""
			f.Abort()
			continue
		}
		return f, nil
	}
	return nil, fmt.Errorf("create a temporary file in %q: too many attempts", dir)
}

// tempName returns a new hidden name for a temporary file of base in dir.
func tempName(dir, base string) string {
	return filepath.Join(dir, tempPrefix(base)+"-"+strconv.FormatUint(rand.Uint64(), 36))
}

// lock takes the flock that tells other Creates the file is in use.
func (f *File) lock() error {
	err := retryEINTR(func() error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) })
	if err != nil {
		return fmt.Errorf("lock the temporary file of %q: %w", f.dst, err)
	}
	return nil
}

// Commit makes the file dst, unless a file named dst exists: then it fails
// with an error wrapping fs.ErrExist and the file stays unnamed (Abort it).
// Unless NoSync, it syncs the file first and dst's directory after, so that
// once it returns dst survives a crash. It does not close the file.
func (f *File) Commit() error { return f.commit(false) }

// CommitReplace is Commit that replaces a file named dst: a reader opening
// dst sees the old file or the new one, whole.
func (f *File) CommitReplace() error { return f.commit(true) }

func (f *File) commit(replace bool) error {
	if f.committed {
		return fmt.Errorf("commit %q: committed already", f.dst)
	}
	if !f.NoSync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync the new %q: %w", f.dst, cause(err))
		}
	}
	var err error
	switch {
	case f.name != "" && replace:
		if err = os.Rename(f.name, f.dst); err != nil {
			err = fmt.Errorf("rename %q to %q: %w", f.name, f.dst, cause(err))
		}
	case f.name != "":
		err = renameNoReplace(f.name, f.dst)
	case replace:
		err = f.linkReplace()
	default:
		err = f.link(f.dst)
	}
	if err != nil {
		return err
	}
	f.committed, f.name = true, ""
	if !f.NoSync {
		if err := SyncDir(f.dir); err != nil {
			return fmt.Errorf("%q is in place, but: %w", f.dst, err)
		}
	}
	return nil
}

// Abort closes the file and, unless it was committed, removes it: dst is
// left as it was. The file may have been closed already.
func (f *File) Abort() {
	if f.name != "" && !f.committed {
		os.Remove(f.name)
		f.name = ""
	}
	f.File.Close()
}

// link gives the O_TMPFILE the name to, unless a file of that name exists.
func (f *File) link(to string) error {
	fd := int(f.Fd())
	err := retryEINTR(func() error { return unix.Linkat(fd, "", unix.AT_FDCWD, to, unix.AT_EMPTY_PATH) })
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (before Linux 6.10);
		// the file's link in /proc does not.
		err = retryEINTR(func() error {
			return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, to, unix.AT_SYMLINK_FOLLOW)
		})
	}
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w (created meanwhile)", fs.ErrExist)
	case err != nil:
		return fmt.Errorf("link the new file to %q: %w", to, err)
	}
	return nil
}

// linkReplace gives the O_TMPFILE the name dst, replacing a file of that
// name: it links it to a hidden name, then renames that over dst.
func (f *File) linkReplace() error {
	_, base := filepath.Split(f.dst)
	for range 100 {
		tmp := tempName(f.dir, base)
		err := f.link(tmp)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, f.dst); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("rename %q to %q: %w", tmp, f.dst, cause(err))
		}
		return nil
	}
	return fmt.Errorf("link the new file to a temporary name in %q: too many attempts", f.dir)
}

// renameNoReplace renames tmp to dst unless dst exists.
func renameNoReplace(tmp, dst string) error {
	err := retryEINTR(func() error { return unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE) })
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The file system cannot rename without replacing: link, which
		// fails if dst exists, and remove the temporary name.
		if err = os.Link(tmp, dst); err == nil {
			os.Remove(tmp)
			return nil
		}
		err = cause(err)
	}
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w (created meanwhile)", fs.ErrExist)
	case err != nil:
		return fmt.Errorf("rename %q to %q: %w", tmp, dst, err)
	}
	return nil
}

// removeStale removes the temporary files in dir whose names start with
// prefix and that no open File holds: those of writers that were killed.
func removeStale(dir, prefix string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // the creation that follows says why
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		// Not blocking: only regular files are removed, and a FIFO
		// put there since ReadDir must not hang the open.
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() &&
			unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if now, err := os.Lstat(p); err == nil && os.SameFile(now, fi) {
				os.Remove(p)
			}
		}
		f.Close()
	}
}

// WriteFile writes data to the file name, creating it with permissions perm
// (before the umask) or replacing it, as os.WriteFile does, but so that
// name never holds part of data: a reader, even after a crash, sees the old
// file or the new one, whole.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := Create(name, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write the new %q: %w", name, cause(err))
	}
	if err := f.CommitReplace(); err != nil {
		f.Abort()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", name, cause(err))
	}
	return nil
}

// SyncDir makes the changes to dir's entries (files created, renamed,
// removed) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %q: %w", dir, cause(err))
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %q: %w", dir, cause(err))
	}
	return nil
}

// sameFile reports whether fi describes the file f has open.
func sameFile(fi fs.FileInfo, f *os.File) bool {
	ofi, err := f.Stat()
	return err == nil && os.SameFile(fi, ofi)
}

// cause drops the operation and path of an *fs.PathError or *os.LinkError,
// which the messages of this package give in their own words.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// retryEINTR calls f until it does not fail with EINTR.
func retryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
