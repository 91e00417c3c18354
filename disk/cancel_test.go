package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestCommitCancel cancels a commit from its progress callback once part
// of the data is in the base: Commit stops before the next chunk, returns
// context.Canceled, and the base is consistent and holds what was copied.
func TestCommitCancel(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", base, "64M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
	qemuimg.IO(t, overlay, "qcow2", "write -P 0x5a 0 32M", "write -z 32M 32M")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls, after int
	var cancelledAt, last int64
	err := Commit(ctx, overlay, CommitOptions{Progress: func(done, total int64) {
		calls++
		if ctx.Err() != nil {
			after++
		}
		last = done
		if cancelledAt == 0 && done >= 8<<20 {
			cancelledAt = done
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit cancelled at %d bytes: got %v, want context.Canceled", cancelledAt, err)
	}
	if after > 0 || last != cancelledAt {
		t.Errorf("Commit went on after the cancellation at %d bytes: %d more progress calls, last at %d", cancelledAt, after, last)
	}
	// The base is consistent, and has the data up to the cancellation.
	qemuimg.RequireClean(t, base, false)
	qemuimg.IO(t, base, "qcow2", "read -P 0x5a 0 8M")
	if m := qemuMap(t, base, FormatQcow2); len(m) == 0 || !m[0].Data || m[0].Length >= 32<<20 {
		t.Errorf("base after a cancelled commit: %+v, want data at the start, less than the overlay's 32 MiB", m)
	}
}

// TestOperationsCancelledBeforeStart: with a cancelled context every disk
// operation returns an error wrapping context.Canceled and changes nothing.
func TestOperationsCancelledBeforeStart(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", base, "4M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
	qemuimg.IO(t, overlay, "qcow2", "write -P 1 0 1M")
	before := map[string][]byte{}
	for _, p := range []string{base, overlay} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		before[p] = b
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, infoErr := Info(ctx, overlay, InfoOptions{})
	_, checkErr := Check(ctx, overlay, qcow2.RepairAll, CheckOptions{})
	for name, err := range map[string]error{
		"info":   infoErr,
		"check":  checkErr,
		"commit": Commit(ctx, overlay, CommitOptions{}),
		"resize": Resize(ctx, overlay, 8<<20),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: got %v, want context.Canceled", name, err)
		}
	}
	for p, b := range before {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(b) {
			t.Errorf("%s changed", filepath.Base(p))
		}
	}
}
