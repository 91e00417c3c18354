package disk

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// This file builds the images the tests of this package share.

const oneMiB = 1 << 20

// mapExtent is one extent of qemu-img map --output=json.
type mapExtent struct {
	Start   int64 `json:"start"`
	Length  int64 `json:"length"`
	Depth   int   `json:"depth"`
	Present bool  `json:"present"`
	Zero    bool  `json:"zero"`
	Data    bool  `json:"data"`
}

// qemuMap runs qemu-img map --output=json.
func qemuMap(t *testing.T, path string, format Format) []mapExtent {
	t.Helper()
	out := qemuimg.Run(t, "map", "--output=json", "-f", string(format), path)
	var m []mapExtent
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map %s: %v\n%s", path, err, out)
	}
	return m
}

// dataBlocks reports, for each block of the virtual disk, whether
// qemu-img map says any of it holds data.
func dataBlocks(t *testing.T, path string, format Format, block int64) []bool {
	t.Helper()
	m := qemuMap(t, path, format)
	var size int64
	if len(m) > 0 {
		size = m[len(m)-1].Start + m[len(m)-1].Length
	}
	blocks := make([]bool, (size+block-1)/block)
	for _, e := range m {
		if !e.Data {
			continue
		}
		for b := e.Start / block; b*block < e.Start+e.Length; b++ {
			blocks[b] = true
		}
	}
	return blocks
}

// writeRandom writes n random bytes at off into the file at path.
func writeRandom(t *testing.T, path string, off, n int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// sparseRaw makes an 8 MiB raw image with random data, patterns, explicit
// zeros (allocated on disk), and holes.
func sparseRaw(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "sparse.raw")
	qemuimg.Run(t, "create", "-f", "raw", p, "8M")
	writeRandom(t, p, 0, 1*oneMiB, 1)                 // random, incompressible
	qemuimg.IO(t, p, "raw", "write -P 0x5a 1M 1M")    // compressible
	qemuimg.IO(t, p, "raw", "write -P 0 2M 1M")       // zeros written out
	qemuimg.IO(t, p, "raw", "write -P 0x33 3200k 4k") // 4 KiB of data in a cluster
	writeRandom(t, p, 5*oneMiB+12345, 100, 2)         // unaligned
	qemuimg.IO(t, p, "raw", "write -P 0x77 8188k 4k") // the last 4 KiB
	return p
}

// chainImages makes raw base <- qcow2 mid <- qcow2 top, in different
// directories, named relatively: dir/base/base.raw, dir/mid/mid.qcow2
// (backing "../base/base.raw"), dir/top.qcow2 (backing "mid/mid.qcow2").
// The top is 8 MiB, the base 6 MiB.
func chainImages(t *testing.T, dir string) (top, mid, base string) {
	t.Helper()
	for _, d := range []string{"base", "mid"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base = filepath.Join(dir, "base", "base.raw")
	mid = filepath.Join(dir, "mid", "mid.qcow2")
	top = filepath.Join(dir, "top.qcow2")
	qemuimg.Run(t, "create", "-f", "raw", base, "6M")
	writeRandom(t, base, 0, 3*oneMiB, 3)
	qemuimg.IO(t, base, "raw", "write -P 0x11 4M 1M")
	qemuimg.Run(t, "create", "-f", "qcow2", "-b", "../base/base.raw", "-F", "raw", mid, "6M")
	qemuimg.IO(t, mid, "qcow2", "write -P 0x22 1M 64k", "write -z 2M 128k", "write -P 0x23 5M 4k")
	qemuimg.Run(t, "create", "-f", "qcow2", "-b", "mid/mid.qcow2", "-F", "qcow2", top, "8M")
	qemuimg.IO(t, top, "qcow2", "write -P 0x44 64k 64k", "write -z 4M 64k", "write -P 0x45 7M 100k")
	return top, mid, base
}
