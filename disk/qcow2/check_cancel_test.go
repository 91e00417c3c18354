package qcow2

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// cancelFile is a File that cancels a context at its n-th read or write
// and counts the reads and writes made after that.
type cancelFile struct {
	File
	cancel                  context.CancelFunc
	atRead, atWrite         int // 0: never
	reads, writes           int
	readsAfter, writesAfter int
	cancelled               bool
	cancelledAt             time.Time
}

func (f *cancelFile) ReadAt(p []byte, off int64) (int, error) {
	if f.cancelled {
		f.readsAfter++
	}
	f.reads++
	n, err := f.File.ReadAt(p, off)
	if f.reads == f.atRead {
		f.fire()
	}
	return n, err
}

func (f *cancelFile) WriteAt(p []byte, off int64) (int, error) {
	if f.cancelled {
		f.writesAfter++
	}
	f.writes++
	n, err := f.File.WriteAt(p, off)
	if f.writes == f.atWrite {
		f.fire()
	}
	return n, err
}

func (f *cancelFile) fire() {
	f.cancelled, f.cancelledAt = true, time.Now()
	f.cancel()
}

// makeBigMetadataImage writes an image of 512-byte clusters whose 16 MiB
// are all allocated (preallocation=metadata): 512 L2 tables and 130
// refcount blocks to read.
func makeBigMetadataImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.qcow2")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Create(f, CreateOptions{Size: 16 << 20, ClusterSize: 512, Preallocation: "metadata"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// countIO runs an uncancelled check of path and returns its reads and writes.
func countIO(t *testing.T, path string, mode RepairMode) (reads, writes int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cf := &cancelFile{File: f, cancel: func() {}}
	if _, err := Check(t.Context(), cf, mode); err != nil {
		t.Fatalf("Check: %v", err)
	}
	return cf.reads, cf.writes
}

// TestCheckCancel: a cancelled check stops at once, before its next table
// read, and returns context.Canceled; a read-only check leaves the image
// untouched.
func TestCheckCancel(t *testing.T) {
	qemuimg.Require(t)
	path := makeBigMetadataImage(t)
	total, _ := countIO(t, path, RepairNone)
	if total < 600 {
		t.Fatalf("an uncancelled check makes %d reads: the image is too small to interrupt", total)
	}
	// Cancelled before it starts, the check reads nothing.
	{
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		cf := &cancelFile{File: f, cancel: cancel}
		if _, err := Check(ctx, cf, RepairNone); !errors.Is(err, context.Canceled) || cf.reads != 0 {
			t.Errorf("Check with a cancelled context: %v after %d reads, want context.Canceled and no read", err, cf.reads)
		}
		f.Close()
	}
	// The first few reads are the header's.
	for _, at := range []int{5, 10, total / 3, total * 2 / 3, total - 5} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cf := &cancelFile{File: f, cancel: cancel, atRead: at}
		res, err := Check(ctx, cf, RepairNone)
		returned := time.Now()
		f.Close()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled at read %d of %d: got %+v, %v; want context.Canceled", at, total, res, err)
			continue
		}
		// The check looks at its context before every table it reads.
		if cf.readsAfter > 1 {
			t.Errorf("cancelled at read %d of %d: %d more reads after the cancellation, want at most 1", at, total, cf.readsAfter)
		}
		t.Logf("cancelled at read %d of %d: returned %v later, after %d more reads", at, total, returned.Sub(cf.cancelledAt), cf.readsAfter)
	}
	qemuimg.RequireClean(t, path, false)
}

// TestCheckRepairCancel: a repair cancelled after its first refcount block
// write stops there; the image has fewer leaks and nothing worse.
func TestCheckRepairCancel(t *testing.T) {
	qemuimg.Require(t)
	path := makeBigMetadataImage(t)
	// Unlink the second half of the L2 tables: they and the clusters they
	// map leak, across many refcount blocks.
	img := openPokeImage(t, path)
	half := int64(img.h.L1Size) / 2
	zeros := make([]byte, (int64(img.h.L1Size)-half)*8)
	if _, err := img.f.WriteAt(zeros, int64(img.h.L1TableOffset)+half*8); err != nil {
		t.Fatal(err)
	}
	before := qemuimg.Check(t, path)
	if before.Leaks < 1000 || before.Corruptions != 0 {
		t.Fatalf("damaged image: %d leaks, %d corruptions; want many leaks and no corruption", before.Leaks, before.Corruptions)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cf := &cancelFile{File: f, cancel: cancel, atWrite: 1}
	res, err := Check(ctx, cf, RepairLeaks)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("repair cancelled at its first write: got %+v, %v; want context.Canceled", res, err)
	}
	if cf.writesAfter > 0 {
		t.Errorf("%d writes after the cancellation, want none", cf.writesAfter)
	}
	after := qemuimg.Check(t, path)
	if after.Corruptions != 0 || after.CheckErrors != 0 || after.Leaks == 0 || after.Leaks >= before.Leaks {
		t.Errorf("after a cancelled repair: %d corruptions, %d check errors, %d leaks (%d before); want only fewer leaks\n%s",
			after.Corruptions, after.CheckErrors, after.Leaks, before.Leaks, after.Stderr)
	}
	// Finished, the repair leaves a clean image.
	if _, err := checkPath(t, path, RepairLeaks); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, path, false)
	if strings.Contains(after.Stderr, "ERROR") {
		t.Errorf("qemu-img check reports errors after the cancelled repair:\n%s", after.Stderr)
	}
}
