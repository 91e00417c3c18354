package store

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/atomicfile"
)

// maxFileSize bounds what is read of a definition file: a definition is a
// few hundred bytes, so a larger file is something else.
const maxFileSize = 1 << 20

// readFile reads the definition at path. It always returns a VM with Name
// (from the file's name) and File set, and as many other fields as could be
// read; the error says what is wrong, as *FieldErrors naming the file. The
// error wraps fs.ErrNotExist when there is no such file.
func readFile(path string) (*config.VM, error) {
	vm := &config.VM{Name: strings.TrimSuffix(filepath.Base(path), DefinitionExt), File: path}
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer for ever. Only a regular file is read.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return vm, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return vm, fmt.Errorf("read %q: %w", path, err)
	} else if !fi.Mode().IsRegular() {
		return vm, &config.FieldError{File: path, Msg: "not a regular file (" + fileKind(fi.Mode()) + "): not a definition"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return vm, fmt.Errorf("read %q: %w", path, err)
	}
	if len(data) > maxFileSize {
		return vm, &config.FieldError{File: path, Msg: fmt.Sprintf("larger than %d bytes: not a definition", maxFileSize)}
	}
	return vm, config.Decode(vm, data)
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "type " + m.Type().String()
}

// testHookBeforeCommit, when set by a test, runs after the new file is
// written and before it is synced and put in place; its error fails the
// write.
var testHookBeforeCommit func(f *os.File) error

// writeFileAtomic puts a file with the given content at path, mode 0600, so
// that path never holds part of it: the file is written without a name (or
// under a hidden temporary one), synced, and linked to path (with noReplace,
// which fails if path exists) or renamed over it, and the directory is
// synced. On failure path is left as it was, and no temporary file remains.
func writeFileAtomic(path string, data []byte, noReplace bool) (err error) {
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Abort()
			err = fmt.Errorf("write %q: %w", path, err)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Whatever the umask.
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if testHookBeforeCommit != nil {
		if err := testHookBeforeCommit(f.File); err != nil {
			return err
		}
	}
	if noReplace {
		err = f.Commit()
	} else {
		err = f.CommitReplace()
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// syncDir makes a change to dir's entries durable.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }
