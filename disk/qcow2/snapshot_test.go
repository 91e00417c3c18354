package qcow2_test

// Internal snapshots against qemu-img: snapshots made by qemu-img are
// listed, applied and deleted by the engine and the reverse, with qemu-img
// check clean after every operation.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// snapDisk is the virtual size of the snapshot tests' images.
const snapDisk = 4 << 20

// readAll reads the whole virtual disk of img.
func readAll(t testing.TB, img *qcow2.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("read disk: %v", err)
	}
	return b
}

// qemuContents is the disk as qemu-img reads it.
func qemuContents(t testing.TB, path string) []byte {
	t.Helper()
	return qemuimg.ToRaw(t, path, filepath.Join(t.TempDir(), "contents.raw"))
}

// qemuSnapshots is what qemu-img info --output=json says of the snapshots.
type qemuSnapshot struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMStateSize uint64 `json:"vm-state-size"`
	ICount      *int64 `json:"icount"`
}

func qemuSnapshots(t testing.TB, path string) []qemuSnapshot {
	t.Helper()
	var info struct {
		Snapshots []qemuSnapshot `json:"snapshots"`
	}
	out := qemuimg.Run(t, "info", "--output=json", "-U", path)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	return info.Snapshots
}

// requireSame fails unless got equals want, naming the first difference.
func requireSame(t testing.TB, label string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: contents differ from byte %d (got %d bytes, want %d)", label, i, len(got), len(want))
	}
}

func TestSnapshotQemuMade(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	for _, cs := range []int64{4096, 65536} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.qcow2")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), path, fmt.Sprint(snapDisk))
			qemuimg.IO(t, path, "qcow2", "write -P 0x11 0 3M", "write -c -P 0x12 3M 128k")
			qemuimg.Run(t, "snapshot", "-c", "first", path)
			first := qemuContents(t, path)
			qemuimg.IO(t, path, "qcow2", "write -P 0x21 100k 200k", "write -z 1M 64k", "write -P 0x22 3900k 100k")
			qemuimg.Run(t, "snapshot", "-c", "second", path)
			second := qemuContents(t, path)
			qemuimg.IO(t, path, "qcow2", "write -P 0x31 5 100000")
			qsn := qemuSnapshots(t, path)

			img := openImage(t, path, false)
			sns, err := img.Snapshots()
			if err != nil {
				t.Fatal(err)
			}
			if len(sns) != 2 || len(qsn) != 2 {
				t.Fatalf("engine lists %d snapshots, qemu-img %d", len(sns), len(qsn))
			}
			for i, sn := range sns {
				q := qsn[i]
				if sn.ID != q.ID || sn.Name != q.Name || sn.Date.Unix() != q.DateSec || int64(sn.Date.Nanosecond()) != q.DateNsec ||
					sn.VMStateSize != q.VMStateSize || q.ICount == nil || sn.ICount != *q.ICount || sn.DiskSize != snapDisk {
					t.Errorf("snapshot %d: engine %+v, qemu-img %+v", i, sn, q)
				}
			}
			if err := img.ApplySnapshot("first"); err != nil {
				t.Fatal(err)
			}
			requireSame(t, "after applying first", readAll(t, img), first)
			flushClean(t, img, path)
			if err := img.ApplySnapshot("2"); err != nil { // by ID
				t.Fatal(err)
			}
			requireSame(t, "after applying second", readAll(t, img), second)
			flushClean(t, img, path)
			if err := img.ApplySnapshot("nope"); !errors.Is(err, qcow2.ErrSnapshotNotFound) {
				t.Fatalf("apply of a missing snapshot: %v", err)
			}
			for _, name := range []string{"first", "second"} {
				if err := img.DeleteSnapshot(name); err != nil {
					t.Fatal(err)
				}
				flushClean(t, img, path)
			}
			requireSame(t, "after deleting both", readAll(t, img), second)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if q := qemuSnapshots(t, path); len(q) != 0 {
				t.Fatalf("qemu-img still lists %v", q)
			}
			requireSame(t, "qemu-img after deleting both", qemuContents(t, path), second)
			qemuimg.RequireClean(t, path, false)
		})
	}
}

// flushClean flushes img and requires qemu-img check to find it clean.
func flushClean(t testing.TB, img *qcow2.Image, path string) {
	t.Helper()
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, path, false)
}

func TestSnapshotEngineMade(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	for _, tc := range []struct {
		cs   int64
		opts string
	}{
		{4096, "refcount_bits=16"},
		{65536, "refcount_bits=16"},
		{65536, "refcount_bits=8"},
		{65536, "compat=0.10"},
		{65536, "extended_l2=on"},
		{16384, "extended_l2=on,refcount_bits=4"},
	} {
		t.Run(fmt.Sprintf("%d-%s", tc.cs, tc.opts), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "e.qcow2")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,%s", tc.cs, tc.opts), path, fmt.Sprint(snapDisk))
			img := openImage(t, path, false)
			model := make([]byte, snapDisk)
			write := func(off int64, n int, v byte) {
				t.Helper()
				p := bytes.Repeat([]byte{v}, n)
				if _, err := img.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
			write(0, 3<<20, 0x41)
			date := time.Date(2026, 12, 2, 4, 5, 6, 789000000, time.UTC)
			s1, err := img.CreateSnapshot(qcow2.Snapshot{Name: "before", Date: date})
			if err != nil {
				t.Fatal(err)
			}
			if s1.ID != "1" {
				t.Fatalf("first snapshot's ID %q", s1.ID)
			}
			flushClean(t, img, path)
			first := bytes.Clone(model)
			write(4097, 70000, 0x42)
			write(2<<20, 1<<20, 0x43)
			if err := img.WriteZeroes(0, tc.cs); err != nil {
				t.Fatal(err)
			}
			clear(model[:tc.cs])
			if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "before", Date: date}); err == nil {
				t.Fatal("a second snapshot named before was made")
			}
			if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "after", Date: date.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			second := bytes.Clone(model)
			write(3<<20, 4096, 0x44)
			flushClean(t, img, path)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			requireSame(t, "qemu-img reads the active state", qemuContents(t, path), model)
			q := qemuSnapshots(t, path)
			if len(q) != 2 || q[0].Name != "before" || q[0].ID != "1" || q[0].DateSec != date.Unix() || q[0].DateNsec != 789000000 || q[1].Name != "after" {
				t.Fatalf("qemu-img lists %+v", q)
			}
			// qemu-img applies and deletes what the engine made.
			qemuimg.Run(t, "snapshot", "-a", "before", path)
			qemuimg.RequireClean(t, path, false)
			requireSame(t, "qemu-img applied before", qemuContents(t, path), first)
			qemuimg.Run(t, "snapshot", "-a", "after", path)
			requireSame(t, "qemu-img applied after", qemuContents(t, path), second)
			qemuimg.Run(t, "snapshot", "-d", "before", path)
			qemuimg.RequireClean(t, path, false)

			// The engine applies a snapshot made by qemu-img over its own.
			qemuimg.IO(t, path, "qcow2", "write -P 0x55 0 1M")
			qemuimg.Run(t, "snapshot", "-c", "qemu", path)
			img = openImage(t, path, false)
			if err := img.ApplySnapshot("after"); err != nil {
				t.Fatal(err)
			}
			requireSame(t, "engine applied after", readAll(t, img), second)
			if err := img.ApplySnapshot("qemu"); err != nil {
				t.Fatal(err)
			}
			third := readAll(t, img)
			if third[0] != 0x55 || third[1<<20] != second[1<<20] {
				t.Fatal("engine applied qemu: wrong data")
			}
			for _, name := range []string{"after", "qemu"} {
				if err := img.DeleteSnapshot(name); err != nil {
					t.Fatal(err)
				}
				flushClean(t, img, path)
			}
			write(5, 100, 0x66) // in place again, COPIED flags back
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuimg.RequireClean(t, path, false)
		})
	}
}

// TestSnapshotCopyOnWrite: writes after a snapshot leave the snapshot's
// data alone, whatever the write's shape (partial, whole, zero, compressed).
func TestSnapshotCopyOnWrite(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	path := filepath.Join(t.TempDir(), "c.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, fmt.Sprint(snapDisk))
	img := openImage(t, path, false)
	base := make([]byte, snapDisk)
	fillData(base, 7)
	if _, err := img.WriteAt(base, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "base", Date: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("partial"), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(make([]byte, 8192), 8192); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteZeroes(1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("base"); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "after apply", readAll(t, img), base)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, path, false)
	requireSame(t, "qemu-img after apply", qemuContents(t, path), base)
}

func TestSnapshotRefusals(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	one := filepath.Join(dir, "one.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", one, "1M")
	img := openImage(t, one, false)
	var ue *qcow2.UnsupportedError
	if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "x"}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "1-bit") {
		t.Fatalf("1-bit refcounts: %v", err)
	}
	img.Close()
	two := filepath.Join(dir, "two.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", two, "1M")
	img = openImage(t, two, false)
	defer img.Close()
	if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "x", VMStateSize: 1}); !errors.As(err, &ue) {
		t.Fatalf("VM state: %v", err)
	}
	if _, err := img.CreateSnapshot(qcow2.Snapshot{}); err == nil {
		t.Fatal("a snapshot without a name was made")
	}
	if err := img.DeleteSnapshot("x"); !errors.Is(err, qcow2.ErrSnapshotNotFound) {
		t.Fatalf("delete of a missing snapshot: %v", err)
	}
	// 2-bit refcounts: the active state and two snapshots share a cluster
	// at most; a third snapshot is refused, the image left as it was.
	narrow := filepath.Join(dir, "narrow.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=2", narrow, "1M")
	qemuimg.IO(t, narrow, "qcow2", "write -P 7 0 64k")
	img2 := openImage(t, narrow, false)
	for _, name := range []string{"a", "b"} {
		if _, err := img2.CreateSnapshot(qcow2.Snapshot{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := img2.CreateSnapshot(qcow2.Snapshot{Name: "c"}); err == nil || !strings.Contains(err.Error(), "at most 3") {
		t.Fatalf("a third snapshot with 2-bit refcounts: %v", err)
	}
	if sns, err := img2.Snapshots(); err != nil || len(sns) != 2 {
		t.Fatalf("after the refusal: %v, %v", sns, err)
	}
	if err := img2.Close(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, narrow, false)
	ro := openImage(t, two, true)
	defer ro.Close()
	if _, err := ro.CreateSnapshot(qcow2.Snapshot{Name: "x"}); !errors.Is(err, qcow2.ErrReadOnly) {
		t.Fatalf("read-only: %v", err)
	}
}
