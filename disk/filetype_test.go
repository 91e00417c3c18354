package disk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// promptly runs fn and fails the test if it has not returned within a
// few seconds: opening a FIFO used to wait for a writer for ever.
func promptly(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still running after 10 s (blocked opening a FIFO?)", what)
		return nil
	}
}

// TestFIFOIsNoImage: a FIFO as an image, or as a backing file, is refused
// at once, by every operation, with an error naming it; so are a directory
// and a character device.
func TestFIFOIsNoImage(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// An overlay whose backing file is the FIFO (-u: qemu-img does not
	// open it).
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", "-u", "-b", "pipe", "-F", "raw", overlay, "1M")
	overlayProbed := filepath.Join(dir, "probed.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", "-u", "-b", "pipe", "-F", "raw", overlayProbed, "1M")
	hideBackingFormat(t, overlayProbed)
	ctx := t.Context()

	wantFIFO := func(what string, err error, names string) {
		t.Helper()
		if !errors.Is(err, ErrFileType) || !strings.Contains(err.Error(), names) ||
			!strings.Contains(err.Error(), "a named pipe (FIFO), not a regular file or block device") {
			t.Errorf("%s: got %v, want an error naming %s as a FIFO, wrapping ErrFileType", what, err, names)
		}
	}
	for _, tt := range []struct {
		what, names string
		fn          func() error
	}{
		{"open", fifo, func() error { _, err := Open(fifo, OpenOptions{}); return err }},
		{"open read-only", fifo, func() error { _, err := Open(fifo, OpenOptions{ReadOnly: true}); return err }},
		{"detect format", fifo, func() error { _, err := DetectFormat(fifo); return err }},
		{"check file", fifo, func() error { return CheckFile(fifo) }},
		{"info", fifo, func() error { _, err := Info(ctx, fifo, InfoOptions{}); return err }},
		{"check", fifo, func() error { _, err := Check(ctx, fifo, qcow2.RepairNone, CheckOptions{}); return err }},
		{"check -r", fifo, func() error { _, err := Check(ctx, fifo, qcow2.RepairAll, CheckOptions{}); return err }},
		{"resize", fifo, func() error { return Resize(ctx, fifo, oneMiB) }},
		{"convert", fifo, func() error { return Convert(ctx, fifo, filepath.Join(dir, "out.qcow2"), ConvertOptions{}) }},
		{"create -b", "pipe", func() error {
			return Create(filepath.Join(dir, "new.qcow2"), CreateOptions{BackingFile: "pipe"})
		}},
		{"open overlay", `backing file "` + fifo + `"`, func() error { _, err := Open(overlay, OpenOptions{ReadOnly: true}); return err }},
		{"open overlay, format probed", `backing file "` + fifo + `"`, func() error {
			_, err := Open(overlayProbed, OpenOptions{ReadOnly: true})
			return err
		}},
		{"commit", fifo, func() error { return Commit(ctx, overlay, CommitOptions{}) }},
		{"convert overlay", fifo, func() error {
			return Convert(ctx, overlay, filepath.Join(dir, "out.qcow2"), ConvertOptions{})
		}},
	} {
		wantFIFO(tt.what, promptly(t, tt.what, tt.fn), tt.names)
	}
	info, err := Info(ctx, overlay, InfoOptions{})
	if err != nil || !strings.Contains(info.BackingError, "a named pipe") {
		t.Errorf("info of the overlay: %v, backing error %q; want the FIFO named as the backing error", err, info.BackingError)
	}
	assertNoTemp(t, dir, "pipe", "overlay.qcow2", "probed.qcow2")

	for name, path := range map[string]string{"a directory": dir, "a character device": os.DevNull} {
		_, err := Open(path, OpenOptions{ReadOnly: true})
		if !errors.Is(err, ErrFileType) || !strings.Contains(err.Error(), name) {
			t.Errorf("open %s: got %v, want %q wrapping ErrFileType", path, err, name)
		}
	}
}
