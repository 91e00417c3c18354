package qcow2_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// BenchmarkSnapshot: a disk-only snapshot of a 10 GiB image with 2 GiB
// allocated (64 KiB clusters), and its deletion (bench/snapshot.sh times
// the commands beside qemu-img's).
func BenchmarkSnapshot(b *testing.B) {
	qemuimg.Require(b)
	path := filepath.Join(b.TempDir(), "b.qcow2")
	qemuimg.Run(b, "create", "-q", "-f", "qcow2", "-o", "preallocation=falloc", path, "2G")
	qemuimg.Run(b, "resize", "-q", path, "10G")
	img := openImage(b, path, false)
	defer img.Close()
	for b.Loop() {
		if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: "b", Date: time.Now()}); err != nil {
			b.Fatal(err)
		}
		if err := img.DeleteSnapshot("b"); err != nil {
			b.Fatal(err)
		}
	}
}
