package qcow2_test

// Compressed writes: WriteCompressed, rewrites of compressed clusters, and
// reads of compressed data right after it is written.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestWriteCompressed(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	for _, c := range []struct {
		cs int64
		ct qcow2.CompressionType
		v2 bool
		rb int
	}{
		{65536, qcow2.CompressionZlib, false, 0}, {65536, qcow2.CompressionZstd, false, 0}, {512, qcow2.CompressionZlib, false, 0},
		{4096, qcow2.CompressionZstd, false, 0}, {65536, qcow2.CompressionZlib, true, 0}, {2 << 20, qcow2.CompressionZlib, false, 0},
		{4096, qcow2.CompressionZlib, false, 1}, {4096, qcow2.CompressionZstd, false, 2},
	} {
		name := fmt.Sprintf("cs%d-%v-v2%v-rb%d", c.cs, c.ct, c.v2, c.rb)
		t.Run(name, func(t *testing.T) {
			defer noPanic(t)
			path, mpath := filepath.Join(dir, name+".qcow2"), filepath.Join(dir, name+".raw")
			clusters := int64(40)
			if c.cs >= 2<<20 {
				clusters = 8
			}
			opts := qcow2.CreateOptions{Size: clusters*c.cs + 512, ClusterSize: c.cs, CompressionType: c.ct, RefcountBits: c.rb}
			if c.v2 {
				opts.Compat = "0.10"
			}
			img := createImage(t, path, opts)
			size := img.Size()
			model := makeModel(t, mpath, "", size)
			for i := int64(0); i*c.cs < size; i++ {
				if i%5 == 4 {
					continue // left unallocated
				}
				n := min(c.cs, size-i*c.cs)
				data := make([]byte, n)
				fillData(data, uint64(i)) // random, text, runs in turn
				if i%7 == 6 {
					clear(data) // all zeros
				}
				if err := img.WriteCompressed(i*c.cs, data); err != nil {
					t.Fatalf("WriteCompressed(cluster %d, %d bytes): %v", i, n, err)
				}
				model.WriteAt(data, i*c.cs)
			}
			// Compressed writes must not overwrite anything.
			if err := img.WriteCompressed(0, make([]byte, c.cs)); err == nil {
				t.Errorf("WriteCompressed over an allocated cluster succeeded, want an error")
			}
			if err := img.WriteCompressed(c.cs/2, make([]byte, c.cs)); err == nil {
				t.Errorf("WriteCompressed at an unaligned offset succeeded, want an error")
			}
			closeImage(t, name, img)
			r := qemuimg.RequireClean(t, path, false)
			if r.CompressedClusters == 0 {
				t.Errorf("qemu-img check: no compressed clusters")
			}
			qemuimg.Compare(t, path, "qcow2", mpath, "raw")
			verifyAgainstQemu(t, path)
			// Rewrite parts of compressed clusters.
			img = openImage(t, path, false)
			runWorkload(t, name+" rewrite", img, path, model, genWorkload(uint64(c.cs)+7, size, c.cs, 2*c.cs, 60))
		})
	}
}

// TestCompressedRewriteReadsNew: a compressed cluster read (and perhaps
// cached), zeroed, and written again compressed with other data of the same
// compressed size must read the new data, also when its host bytes are
// reused.
func TestCompressedRewriteReadsNew(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "cz.qcow2")
	img := createImage(t, path, qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 4096})
	defer func() {
		if img != nil {
			img.Close()
		}
	}()
	got := make([]byte, 4096)
	for round := 0; round < 6; round++ {
		// Fresh guest clusters each round (zero clusters would do too).
		// Reads in two parts (a partial read may go through a cache of
		// decompressed clusters), the round's first cluster read last, so
		// that the next round's first read, likely at the same host bytes
		// with the same descriptor, would hit a stale cache entry.
		first := int64(round * 4)
		for c := first; c < first+4; c++ {
			data := bytes.Repeat([]byte{byte(round*16 + int(c) + 1)}, 4096) // same compressed size every time
			if err := img.WriteCompressed(c*4096, data); err != nil {
				t.Fatalf("round %d: WriteCompressed(cluster %d): %v", round, c, err)
			}
		}
		for _, c := range []int64{first, first + 1, first + 2, first + 3, first} {
			want := byte(round*16 + int(c) + 1)
			if _, err := img.ReadAt(got[:1000], c*4096); err != nil {
				t.Fatal(err)
			}
			if _, err := img.ReadAt(got[1000:], c*4096+1000); err != nil {
				t.Fatal(err)
			}
			if i := bytes.IndexFunc(got, func(r rune) bool { return r != rune(want) }); i >= 0 {
				t.Fatalf("round %d: cluster %d reads %#x at byte %d, want %#x", round, c, got[i], i, want)
			}
		}
		if err := img.WriteZeroes(int64(round)*4*4096, 4*4096); err != nil {
			t.Fatal(err)
		}
		if err := img.Flush(); err != nil {
			t.Fatal(err)
		}
		if round == 3 {
			closeImage(t, "cz", img)
			img = openImage(t, path, false)
		}
	}
	closeImage(t, "cz", img)
	img = nil
	qemuimg.RequireClean(t, path, false)
}

// TestWriteCompressedOverZeroCluster: QEMU 7.2 accepts a compressed write to
// a zero cluster without a host cluster (it only refuses clusters with a
// host offset); so should the engine.
func TestWriteCompressedOverZeroCluster(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "cz0.qcow2")
	img := createImage(t, path, qcow2.CreateOptions{Size: 1 << 20})
	defer img.Close()
	if _, err := img.WriteAt(make([]byte, 65536), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteZeroes(0, 65536); err != nil { // a zero cluster now
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("compressible "), 65536/13+1)[:65536]
	if err := img.WriteCompressed(0, data); err != nil {
		t.Errorf("WriteCompressed over a zero cluster: %v (QEMU 7.2's qemu-io write -c accepts it)", err)
	}
}

// slowReadFile delays one in four reads by up to 3 ms.
type slowReadFile struct {
	*os.File
	n atomic.Int64
}

func (f *slowReadFile) ReadAt(p []byte, off int64) (int, error) {
	if k := f.n.Add(1); k%4 == 0 {
		time.Sleep(time.Duration(k%3+1) * time.Millisecond)
	}
	return f.File.ReadAt(p, off)
}

// TestReadCompressedAtFileEnd: compressed clusters written at the end of the
// file read back at once, before any Flush, while clusters the engine has
// allocated (an L2 table here) but not yet written lie beyond the end of
// the file. Found by FuzzWriteRoundTrip (testdata/fuzz/FuzzWriteRoundTrip).
func TestReadCompressedAtFileEnd(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path, mpath := filepath.Join(dir, "ce.qcow2"), filepath.Join(dir, "ce.raw")
	img := createImage(t, path, qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 512, RefcountBits: 32})
	model := makeModel(t, mpath, "", 1<<20)
	for _, off := range []int64{0xe6e00, 0xa0000} {
		b := make([]byte, 512)
		fillData(b, 110)
		if err := img.WriteCompressed(off, b); err != nil {
			t.Fatalf("WriteCompressed(%#x): %v", off, err)
		}
		model.WriteAt(b, off)
		got := make([]byte, 512)
		if _, err := img.ReadAt(got, off); err != nil {
			st, _ := os.Stat(path)
			t.Errorf("ReadAt(len 512, off %#x) right after WriteCompressed: %v (file %d bytes)", off, err, st.Size())
		} else if !bytes.Equal(got, b) {
			t.Errorf("ReadAt(len 512, off %#x) right after WriteCompressed: %s", off, describeDiff(got, b, off, 512))
		}
	}
	closeImage(t, "ce", img)
	model.Close()
	qemuimg.RequireClean(t, path, false)
	qemuimg.Compare(t, path, "qcow2", mpath, "raw")
}
