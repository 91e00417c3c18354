package qcow2_test

// Resizing, odd and dirty images, bitmaps, space reuse, large offsets, and
// the API's contract at its edges.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestResize: growing needs a larger L1 table (512-byte clusters: from 32
// entries to 2048, so the table moves), then data at the new end.
func TestResize(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name     string
		opts     qcow2.CreateOptions
		newSize  int64
		snapshot bool
	}{
		{"cs512", qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 512}, 64<<20 + 512, false},
		{"64k-to-600M", qcow2.CreateOptions{Size: 1 << 20}, 600 << 20, false},
		{"v2-rb16", qcow2.CreateOptions{Size: 1 << 20, Compat: "0.10", ClusterSize: 1024}, 64 << 20, false},
		{"odd", qcow2.CreateOptions{Size: 1<<20 + 512, ClusterSize: 4096}, 5<<20 + 1000, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path, mpath := filepath.Join(dir, c.name+".qcow2"), filepath.Join(dir, c.name+".raw")
			img := createImage(t, path, c.opts)
			model := makeModel(t, mpath, "", img.Size())
			old := img.Size()
			ops := genWorkload(401, old, imgCS(img), 64<<10, 30)
			for i, o := range ops {
				if err := applyImage(img, o); err != nil {
					t.Fatalf("op %d %v: %v", i, o, err)
				}
				applyModel(model, o)
			}
			if err := img.Resize(old / 2); err == nil {
				t.Errorf("Resize to a smaller size (%d -> %d) succeeded, want an error", old, old/2)
			}
			if err := img.Resize(c.newSize); err != nil {
				t.Fatalf("Resize(%d): %v", c.newSize, err)
			}
			want := (c.newSize + 511) &^ 511
			if img.Size() != want {
				t.Errorf("Size() after Resize(%d) = %d, want %d", c.newSize, img.Size(), want)
			}
			model.Truncate(want)
			// Reads of the new area are zeros; writes there and across the old end.
			tail := []wop{
				{kind: 'w', off: old - 100, n: 300, seed: 1},
				{kind: 'w', off: want - 777, n: 777, seed: 2},
				{kind: 'w', off: want / 2, n: 70000, seed: 3},
				{kind: 'z', off: want / 2, n: 1000},
			}
			runWorkload(t, c.name, img, path, model, tail)
			if info := qemuimg.ImageInfo(t, path); info.VirtualSize != want {
				t.Errorf("qemu-img info virtual-size = %d, want %d", info.VirtualSize, want)
			}
		})
	}
}

// TestResizeWithSnapshot: growing an image with an internal snapshot keeps
// the snapshot (its own L1 table and size).
func TestResizeWithSnapshot(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path, mpath := filepath.Join(dir, "rs.qcow2"), filepath.Join(dir, "rs.raw")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M")
	qemuimg.IO(t, path, "qcow2", "write -P 0x21 0 1048576")
	qemuimg.Run(t, "snapshot", "-c", "s1", path)
	snap := qemuimg.ToRaw(t, path, filepath.Join(dir, "s1.raw"))
	qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
	img := openImage(t, path, false)
	if err := img.Resize(40 << 20); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	model := makeModel(t, mpath, "", 40<<20)
	runWorkload(t, "resize-snapshot", img, path, model, genWorkload(402, 40<<20, 512, 64<<10, 100))
	after := filepath.Join(dir, "s1.after.raw")
	qemuimg.Run(t, "convert", "-l", "snapshot.name=s1", "-O", "raw", path, after)
	// qemu-img 7.2 converts a snapshot at the image's current size.
	got := readFile(t, after)
	want := append(bytes.Clone(snap), make([]byte, max(len(got)-len(snap), 0))...)
	if len(got) < len(snap) || !bytes.Equal(got, want) {
		t.Errorf("snapshot s1 changed by Resize and writes (len %d, want %d): %s", len(got), len(want), describeDiff(got[:min(len(got), len(want))], want[:min(len(got), len(want))], 0, 512))
	}
}

// TestWriteOddHeaders: images with header_length 104, 120 (an unknown
// additional field) and an unknown header extension, written, grown and
// closed by the engine, keep those header parts and stay valid for QEMU.
func TestWriteOddHeaders(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	writeRandomFile(t, filepath.Join(dir, "base.raw"), 2<<20, 5)
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want func(b []byte) string // "" when the header is as it should be
	}{
		{"hdrlen104", func(b []byte) {
			cs := clusterSizeOf(b)
			copy(b[104:cs-8], b[112:cs])
			clear(b[cs-8 : cs])
			put32(b, 100, 104)
			put64(b, 8, be64(b, 8)-8)
		}, func(b []byte) string {
			if be32(b, 100) != 104 && be32(b, 100) != 112 {
				return fmt.Sprintf("header length %d", be32(b, 100))
			}
			return ""
		}},
		{"hdrlen120", func(b []byte) {
			insertInHeader(t, b, 112, []byte{1, 2, 3, 4, 5, 6, 7, 8})
			put32(b, 100, 120)
		}, func(b []byte) string {
			if be32(b, 100) != 120 || !bytes.Equal(b[112:120], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
				return fmt.Sprintf("unknown header field not preserved: header length %d, bytes 112-119 % x", be32(b, 100), b[112:120])
			}
			return ""
		}},
		{"unknown-ext", func(b []byte) {
			ext := make([]byte, 8+16)
			put32(ext, 0, 0x12345678)
			put32(ext, 4, 13)
			copy(ext[8:], "hello, qcow2!")
			insertInHeader(t, b, 112, ext)
		}, func(b []byte) string {
			if !bytes.Contains(b[:clusterSizeOf(b)], []byte("hello, qcow2!")) {
				return "unknown header extension not preserved"
			}
			return ""
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path, mpath := filepath.Join(dir, c.name+".qcow2"), filepath.Join(dir, c.name+".raw")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw", path, fmt.Sprint(2<<20))
			qemuimg.IO(t, path, "qcow2", "write -P 0x31 5000 70000")
			b := readFile(t, path)
			// Room for the insertions: 4 KiB clusters have no feature table.
			c.edit(b)
			os.WriteFile(path, b, 0o644)
			qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
			img := openImage(t, path, false)
			if err := img.Resize(16 << 20); err != nil { // the L1 table moves
				t.Fatalf("Resize: %v", err)
			}
			model := makeModel(t, mpath, "", 16<<20)
			runWorkload(t, c.name, img, path, model, genWorkload(403, 16<<20, 4096, 256<<10, 80))
			after := readFile(t, path)
			if msg := c.want(after); msg != "" {
				t.Errorf("after writes and Resize: %s", msg)
			}
			if info := qemuimg.ImageInfo(t, path); info.BackingFilename != "base.raw" || info.BackingFormat != "raw" {
				t.Errorf("backing file after writes: %q (%q), want \"base.raw\" (\"raw\")", info.BackingFilename, info.BackingFormat)
			}
		})
	}
}

// TestOpenDirtyImage: an image with the dirty bit set and a refcount too low
// (as lazy refcounts leave it after a crash) opened read-write must be
// repaired (or refused) — never written as is.
func TestOpenDirtyImage(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "dirty.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "4M")
	qemuimg.IO(t, path, "qcow2", "write -P 0x42 0 200000")
	b := readFile(t, path)
	// Zero the refcount of the first data cluster.
	l2 := int(be64(b, int(be64(b, 40))) & 0x00fffffffffffe00)
	data := int64(be64(b, l2) & 0x00fffffffffffe00)
	rt := int(be64(b, 48))
	rb := int(be64(b, rt) & 0xfffffffffffffe00)
	put16 := func(off int, v uint16) { b[off], b[off+1] = byte(v>>8), byte(v) }
	put16(rb+2*int(data/65536), 0)
	put64(b, 72, be64(b, 72)|qcow2.IncompatDirty)
	os.WriteFile(path, b, 0o644)
	img, err := tryOpen(path, false)
	if err != nil {
		t.Logf("read-write open of a dirty image refused: %v", err)
		return
	}
	model := makeModel(t, filepath.Join(dir, "dirty.raw"), "", 4<<20)
	model.WriteAt(bytes.Repeat([]byte{0x42}, 200000), 0)
	runWorkload(t, "dirty", img, path, model, genWorkload(501, 4<<20, 65536, 256<<10, 60))
	if info := qemuimg.ImageInfo(t, path); info.DirtyFlag {
		t.Errorf("dirty-flag still set after the engine's Close")
	}
}

// imgCS is the image's cluster size.
func imgCS(img *qcow2.Image) int64 {
	h := img.Header()
	return h.ClusterSize()
}

// TestAPIContract: offsets out of range, read-only and closed images,
// zero-length requests.
func TestAPIContract(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "api.qcow2")
	img := createImage(t, path, qcow2.CreateOptions{Size: 1 << 20})
	size := img.Size()
	mustErr := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s succeeded, want an error", what)
		}
	}
	_, err := img.ReadAt(make([]byte, 10), -1)
	mustErr("ReadAt at -1", err)
	_, err = img.WriteAt(make([]byte, 10), -1)
	mustErr("WriteAt at -1", err)
	if n, err := img.ReadAt(make([]byte, 10), size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	n, err := img.WriteAt(bytes.Repeat([]byte{1}, 20), size-10)
	mustErr("WriteAt across the end", err)
	if n > 10 {
		t.Errorf("WriteAt across the end reported %d bytes written", n)
	}
	_, err = img.WriteAt([]byte{1}, size)
	mustErr("WriteAt at the end", err)
	mustErr("WriteZeroes across the end", img.WriteZeroes(size-10, 20))
	mustErr("WriteZeroes at -512", img.WriteZeroes(-512, 512))
	mustErr("WriteZeroes of -5 bytes", img.WriteZeroes(0, -5))
	mustErr("WriteCompressed of a short cluster", img.WriteCompressed(65536, make([]byte, 100)))
	mustErr("WriteCompressed past the end", img.WriteCompressed(size, make([]byte, 65536)))
	if n, err := img.WriteAt(nil, 100); n != 0 || err != nil {
		t.Errorf("WriteAt of 0 bytes = %d, %v", n, err)
	}
	if n, err := img.ReadAt(nil, 100); n != 0 || err != nil {
		t.Errorf("ReadAt of 0 bytes = %d, %v", n, err)
	}
	if err := img.WriteZeroes(100, 0); err != nil {
		t.Errorf("WriteZeroes of 0 bytes: %v", err)
	}
	closeImage(t, "api", img)
	_, err = img.ReadAt(make([]byte, 10), 0)
	mustErr("ReadAt after Close", err)
	_, err = img.WriteAt(make([]byte, 10), 0)
	mustErr("WriteAt after Close", err)
	mustErr("Flush after Close", img.Flush())
	img.Close() // a second Close must not panic
	qemuimg.RequireClean(t, path, false)
	if b := readFile(t, path); bytes.Contains(b, []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
		t.Errorf("a refused write reached the file")
	}

	ro := openImage(t, path, true)
	_, err = ro.WriteAt([]byte{1}, 0)
	if !errors.Is(err, qcow2.ErrReadOnly) {
		t.Errorf("WriteAt on a read-only image: %v, want ErrReadOnly", err)
	}
	mustErr("WriteZeroes on a read-only image", ro.WriteZeroes(0, 512))
	mustErr("Resize on a read-only image", ro.Resize(2<<20))
	mustErr("WriteCompressed on a read-only image", ro.WriteCompressed(0, make([]byte, 65536)))
	ro.Close()
	if info := qemuimg.ImageInfo(t, path); info.VirtualSize != 1<<20 {
		t.Errorf("virtual size after a refused Resize: %d", info.VirtualSize)
	}
}

// TestWriteBitmapsImage: writing an image with a persistent dirty bitmap
// (which the engine does not keep in step) must leave an image QEMU opens and
// checks clean, with the bitmap no longer trusted.
func TestWriteBitmapsImage(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path, mpath := filepath.Join(dir, "bm.qcow2"), filepath.Join(dir, "bm.raw")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", path, "4M")
	qemuimg.IO(t, path, "qcow2", "write -P 1 0 100000")
	qemuimg.Run(t, "bitmap", "--add", path, "b0")
	qemuimg.IO(t, path, "qcow2", "write -P 2 200000 100000")
	qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
	model := makeModel(t, mpath, "", 4<<20)
	img := openImage(t, path, false)
	for i, o := range genWorkload(601, 4<<20, 65536, 256<<10, 40) {
		if err := applyImage(img, o); err != nil {
			t.Fatalf("op %d %v: %v", i, o, err)
		}
		applyModel(model, o)
	}
	closeImage(t, "bitmaps", img)
	model.Close()
	// The engine clears the bitmaps autoclear bit (the spec's way to say
	// the bitmap is stale); QEMU then counts the bitmap's clusters as
	// leaked. Harmless, but visible as qemu-img check exit code 3.
	if r := qemuimg.RequireClean(t, path, true); r.Leaks > 0 {
		t.Logf("after the engine's writes: %d leaked clusters (the stale bitmap's)", r.Leaks)
	}
	qemuimg.Compare(t, path, "qcow2", mpath, "raw")
	// QEMU must not trust the stale bitmap any more.
	out := qemuimg.Run(t, "info", "--output=json", path)
	if strings.Contains(out, `"b0"`) && !strings.Contains(out, `"in-use"`) {
		t.Errorf("after writes by the engine, qemu-img info still lists bitmap b0 as valid:\n%s", out)
	}
	// QEMU must still open it read-write; dropping the stale bitmap may
	// leak its clusters.
	qemuimg.IO(t, path, "qcow2", "write -P 3 0 512")
	if r := qemuimg.RequireClean(t, path, true); r.Leaks > 0 {
		t.Logf("after QEMU dropped the stale bitmap: %d leaked clusters (harmless)", r.Leaks)
	}
}

// TestSpaceReuse: clusters freed by zero writes must be reused by later
// allocations, within a session and after reopening, or an image grows
// without bound under a discard-and-rewrite workload. QEMU 7.2 running the
// same loop (qemu-io: write 4M, flush, write -z 4M, flush; ten times) ends
// with an image end offset of 4521984 bytes.
func TestSpaceReuse(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen-%v", reopen), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "reuse.qcow2")
			img := createImage(t, path, qcow2.CreateOptions{Size: 64 << 20})
			data := make([]byte, 4<<20)
			for i := 0; i < 10; i++ {
				fillData(data, uint64(i))
				if _, err := img.WriteAt(data, 0); err != nil {
					t.Fatalf("cycle %d: WriteAt: %v", i, err)
				}
				if err := img.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := img.WriteZeroes(0, 4<<20); err != nil {
					t.Fatalf("cycle %d: WriteZeroes: %v", i, err)
				}
				if err := img.Flush(); err != nil {
					t.Fatal(err)
				}
				if reopen {
					closeImage(t, "reuse", img)
					img = openImage(t, path, false)
				}
			}
			// Finally 4 MiB of live data again.
			if _, err := img.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			closeImage(t, "reuse", img)
			r := qemuimg.RequireClean(t, path, false)
			st, _ := os.Stat(path)
			t.Logf("after 10 cycles: file %d bytes, image end offset %d", st.Size(), r.ImageEndOffset)
			if limit := int64(3 * 4 << 20); st.Size() > limit || r.ImageEndOffset > limit {
				t.Errorf("after 10 cycles of writing 4 MiB and zeroing it, then writing 4 MiB: file of %d bytes, image end offset %d; want at most %d (QEMU: 4521984); freed clusters are not reused",
					st.Size(), r.ImageEndOffset, limit)
			}
		})
	}
}

// TestLargeOffsets: virtual offsets beyond 4 GiB, and host offsets beyond
// 4 GiB: the image starts as QEMU's preallocation=metadata of 5 GiB (a
// sparse file whose clusters are all in use), is grown to 6 GiB, and new
// clusters, L2 tables and refcount blocks land past 5 GiB, normal and
// compressed.
func TestLargeOffsets(t *testing.T) {
	qemuimg.Require(t)
	for _, c := range []struct {
		name string
		opts string
	}{
		{"64k", "cluster_size=65536"},
		{"2M-rb1", "cluster_size=2097152,refcount_bits=1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			dir := t.TempDir()
			path, mpath := filepath.Join(dir, "big.qcow2"), filepath.Join(dir, "big.raw")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", c.opts+",preallocation=metadata", path, fmt.Sprint(5<<30))
			img := openImage(t, path, false)
			cs := imgCS(img)
			if err := img.Resize(6 << 30); err != nil {
				t.Fatalf("Resize: %v", err)
			}
			model := makeModel(t, mpath, "", img.Size())
			var ops []wop
			for i, off := range []int64{0, 4<<30 - 1000, 4 << 30, 5<<30 - 3000, 5<<30 + 12345, 6<<30 - 70000} {
				ops = append(ops, wop{kind: 'w', off: off, n: min(70000, img.Size()-off), seed: uint64(i)})
			}
			ops = append(ops, wop{kind: 'f'}, wop{kind: 'z', off: 5<<30 + 4*cs, n: 2 * cs}, wop{kind: 'w', off: 5<<30 + 4*cs + 3, n: 5, seed: 9})
			for i, o := range ops {
				if err := applyImage(img, o); err != nil {
					t.Fatalf("op %d %v: %v", i, o, err)
				}
				applyModel(model, o)
			}
			// A compressed cluster above 5 GiB, virtual and host.
			coff := int64(5<<30 + 256<<20)
			comp := bytes.Repeat([]byte("big offsets "), int(cs)/12+1)[:cs]
			if err := img.WriteCompressed(coff, comp); err != nil {
				t.Fatalf("WriteCompressed at %d: %v", coff, err)
			}
			model.WriteAt(comp, coff)
			closeImage(t, c.name, img)
			model.Close()
			qemuimg.RequireClean(t, path, false)
			qemuimg.Compare(t, path, "qcow2", mpath, "raw")
			img = openImage(t, path, true)
			defer img.Close()
			ref, _ := os.Open(mpath)
			defer ref.Close()
			for _, o := range append(ops, wop{off: coff, n: cs}) {
				if o.kind == 'f' {
					continue
				}
				lo, hi := max(o.off-cs, 0), min(o.off+o.n+cs, img.Size())
				got, want := make([]byte, hi-lo), make([]byte, hi-lo)
				if _, err := img.ReadAt(got, lo); err != nil {
					t.Fatalf("ReadAt(len %d, off %d): %v", hi-lo, lo, err)
				}
				ref.ReadAt(want, lo)
				if !bytes.Equal(got, want) {
					t.Errorf("%s: %s", c.name, describeDiff(got, want, lo, cs))
				}
			}
			compareStatus(t, c.name, img, path, false)
			if st, _ := os.Stat(path); st.Size() <= 5<<30+cs {
				t.Errorf("test bug: nothing allocated past 5 GiB (file %d bytes)", st.Size())
			}
		})
	}
}

// TestOpenAfterQemuCrash: QEMU with lazy refcounts crashes (qemu-io's abort
// command) after writes, leaving the dirty bit and refcounts below the
// references. The engine's read-write open must repair the image before it
// allocates anything; after a workload the image checks clean.
func TestOpenAfterQemuCrash(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	for _, cs := range []int{512, 65536} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			path, mpath := filepath.Join(dir, fmt.Sprintf("lazy%d.qcow2", cs)), filepath.Join(dir, fmt.Sprintf("lazy%d.raw", cs))
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("lazy_refcounts=on,cluster_size=%d", cs), path, fmt.Sprint(8<<20))
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5 0 1M", "-c", "flush", "-c", "write -P 0x6 2M 100k",
				"-c", "write -z 512k 64k", "-c", "abort", path)
			cmd.Dir = dir // a core dump, if any, stays in the temporary directory
			out, _ := cmd.CombinedOutput()
			r := qemuimg.Check(t, path)
			if r.Corruptions == 0 {
				t.Fatalf("test bug: the crashed image has no refcount errors (qemu-io said %s)", out)
			}
			if info := qemuimg.ImageInfo(t, path); !info.DirtyFlag {
				t.Fatalf("test bug: the crashed image is not dirty")
			}
			qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
			img, err := tryOpen(path, false)
			if err != nil {
				t.Fatalf("read-write open of a dirty image after a QEMU crash: %v", err)
			}
			if h := img.Header(); h.Dirty() {
				t.Errorf("the image is still dirty after a read-write open")
			}
			model := makeModel(t, mpath, "", 8<<20)
			runWorkload(t, "after-crash", img, path, model, genWorkload(uint64(cs), 8<<20, int64(cs), 256<<10, 80))
			if info := qemuimg.ImageInfo(t, path); info.DirtyFlag {
				t.Errorf("dirty-flag still set after the engine's Close")
			}
		})
	}
}
