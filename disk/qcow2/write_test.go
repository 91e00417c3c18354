package qcow2_test

// Write side: images written by the engine must satisfy qemu-img (check
// clean with no leaks, info agreeing, compare identical with a raw model).

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"vmtui/disk/qcow2"
	"vmtui/internal/qemuimg"
)

// createImage creates a new image at path; a backing file named in opts is
// opened with the test opener.
func createImage(t testing.TB, path string, opts qcow2.CreateOptions) *qcow2.Image {
	t.Helper()
	img, err := tryCreate(path, opts)
	if err != nil {
		t.Fatalf("Create %s %+v: %v", path, opts, err)
	}
	return img
}

func tryCreate(path string, opts qcow2.CreateOptions) (*qcow2.Image, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	var backing qcow2.Backing
	if opts.BackingFile != "" {
		backing, err = chainOpener(filepath.Dir(path))(opts.BackingFile, opts.BackingFormat)
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	img, err := qcow2.Create(f, opts, backing)
	if err != nil {
		f.Close()
		if backing != nil {
			backing.Close()
		}
		return nil, err
	}
	return img, nil
}

func closeImage(t testing.TB, label string, img *qcow2.Image) {
	t.Helper()
	if err := img.Close(); err != nil {
		t.Fatalf("%s: Close: %v", label, err)
	}
}

func TestCreateMatrix(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	writeRandomFile(t, filepath.Join(dir, "base.raw"), 3<<20+512, 3)
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", filepath.Join(dir, "base.qcow2"), fmt.Sprint(2<<20))
	qemuimg.IO(t, filepath.Join(dir, "base.qcow2"), "qcow2", "write -P 0x5e 1000 300000")
	cases := []struct {
		name string
		opts qcow2.CreateOptions
	}{
		{"default", qcow2.CreateOptions{Size: 100 << 20}},
		{"odd-size", qcow2.CreateOptions{Size: 1000}},
		{"cs512", qcow2.CreateOptions{Size: 10<<20 + 512, ClusterSize: 512}},
		{"cs1k-rb1", qcow2.CreateOptions{Size: 10 << 20, ClusterSize: 1024, RefcountBits: 1}},
		{"cs4k-rb64", qcow2.CreateOptions{Size: 10 << 20, ClusterSize: 4096, RefcountBits: 64}},
		{"cs2M", qcow2.CreateOptions{Size: 64<<20 + 512, ClusterSize: 2 << 20}},
		{"rb2", qcow2.CreateOptions{Size: 10 << 20, RefcountBits: 2}},
		{"rb4", qcow2.CreateOptions{Size: 10 << 20, RefcountBits: 4}},
		{"rb8", qcow2.CreateOptions{Size: 10 << 20, RefcountBits: 8}},
		{"rb32", qcow2.CreateOptions{Size: 10 << 20, RefcountBits: 32}},
		{"v2", qcow2.CreateOptions{Size: 10 << 20, Compat: "0.10"}},
		{"v2-cs512", qcow2.CreateOptions{Size: 10 << 20, Compat: "0.10", ClusterSize: 512}},
		{"lazy", qcow2.CreateOptions{Size: 10 << 20, LazyRefcounts: true}},
		{"zstd", qcow2.CreateOptions{Size: 10 << 20, CompressionType: qcow2.CompressionZstd}},
		{"prealloc-64k", qcow2.CreateOptions{Size: 20<<20 + 512, Preallocation: "metadata"}},
		{"prealloc-cs512", qcow2.CreateOptions{Size: 3<<20 + 512, ClusterSize: 512, Preallocation: "metadata"}},
		{"prealloc-v2", qcow2.CreateOptions{Size: 5 << 20, Compat: "0.10", Preallocation: "metadata"}},
		{"prealloc-rb1", qcow2.CreateOptions{Size: 5 << 20, RefcountBits: 1, Preallocation: "metadata"}},
		{"backing-raw", qcow2.CreateOptions{BackingFile: "base.raw", BackingFormat: "raw"}}, // size from the backing file
		{"backing-qcow2-cs512", qcow2.CreateOptions{Size: 2 << 20, ClusterSize: 512, BackingFile: "base.qcow2", BackingFormat: "qcow2"}},
		{"backing-v2", qcow2.CreateOptions{Size: 3<<20 + 512, Compat: "0.10", BackingFile: "base.raw", BackingFormat: "raw"}},
		{"backing-long-name", qcow2.CreateOptions{Size: 3<<20 + 512, ClusterSize: 1024, BackingFile: "./" + strings.Repeat("./", 300) + "base.raw", BackingFormat: "raw"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path := filepath.Join(dir, c.name+".qcow2")
			closeImage(t, c.name, createImage(t, path, c.opts))
			qemuimg.RequireClean(t, path, false)
			info := qemuimg.ImageInfo(t, path)
			o := c.opts
			wantCS, wantRB, wantCompat, wantCT := o.ClusterSize, o.RefcountBits, o.Compat, "zlib"
			if wantCS == 0 {
				wantCS = 65536
			}
			if wantRB == 0 {
				wantRB = 16
			}
			if wantCompat == "" {
				wantCompat = "1.1"
			}
			if o.CompressionType == qcow2.CompressionZstd {
				wantCT = "zstd"
			}
			d := info.FormatSpecific.Data
			wantSize := (o.Size + 511) &^ 511
			if o.Size == 0 && o.BackingFile != "" {
				st, _ := os.Stat(filepath.Join(dir, o.BackingFile))
				wantSize = st.Size()
			}
			for _, p := range []struct {
				what      string
				got, want any
			}{
				{"virtual-size", info.VirtualSize, wantSize},
				{"cluster-size", info.ClusterSize, wantCS},
				{"compat", d.Compat, wantCompat},
				{"refcount-bits", d.RefcountBits, wantRB},
				{"lazy-refcounts", d.LazyRefcounts, o.LazyRefcounts},
				{"dirty-flag", info.DirtyFlag, false},
				{"corrupt", d.Corrupt, false},
				{"backing-filename", info.BackingFilename, o.BackingFile},
				{"backing-filename-format", info.BackingFormat, o.BackingFormat},
			} {
				if fmt.Sprint(p.got) != fmt.Sprint(p.want) {
					t.Errorf("qemu-img info %s = %v, want %v", p.what, p.got, p.want)
				}
			}
			if wantCompat == "1.1" && d.CompressionType != wantCT {
				t.Errorf("qemu-img info compression-type = %q, want %q", d.CompressionType, wantCT)
			}
			if o.Preallocation == "metadata" {
				// Every cluster allocated in this image.
				out := qemuimg.Run(t, "map", "--output=json", path)
				var ext []mapExtent
				json.Unmarshal([]byte(out), &ext)
				for _, e := range ext {
					if !e.Present || e.Depth != 0 || e.Offset == nil {
						t.Errorf("preallocation=metadata: qemu-img map shows [%d, +%d) not allocated: %+v", e.Start, e.Length, e)
						break
					}
				}
			}
			if o.Preallocation == "" && o.BackingFile == "" {
				// File size close to what qemu-img create makes.
				q := filepath.Join(dir, c.name+".qemu.qcow2")
				args := []string{"create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,refcount_bits=%d,compat=%s", wantCS, wantRB, wantCompat)}
				qemuimg.Run(t, append(args, q, fmt.Sprint(o.Size))...)
				ours, _ := os.Stat(path)
				theirs, _ := os.Stat(q)
				if ours.Size() > 2*theirs.Size()+2*wantCS {
					t.Errorf("created file is %d bytes; qemu-img create makes %d", ours.Size(), theirs.Size())
				}
			}
			verifyAgainstQemu(t, path)
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name  string
		opts  qcow2.CreateOptions
		words []string
	}{
		{"cluster size 256", qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 256}, []string{"cluster"}},
		{"cluster size 4M", qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 4 << 20}, []string{"cluster"}},
		{"cluster size 3000", qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 3000}, []string{"cluster"}},
		{"refcount bits 3", qcow2.CreateOptions{Size: 1 << 20, RefcountBits: 3}, []string{"refcount"}},
		{"refcount bits 128", qcow2.CreateOptions{Size: 1 << 20, RefcountBits: 128}, []string{"refcount"}},
		{"v2 with refcount bits 8", qcow2.CreateOptions{Size: 1 << 20, Compat: "0.10", RefcountBits: 8}, []string{"refcount", "compat", "0.10"}},
		{"compat 2.0", qcow2.CreateOptions{Size: 1 << 20, Compat: "2.0"}, []string{"compat"}},
		{"v2 with lazy refcounts", qcow2.CreateOptions{Size: 1 << 20, Compat: "0.10", LazyRefcounts: true}, []string{"lazy", "compat", "0.10"}},
		{"v2 with zstd", qcow2.CreateOptions{Size: 1 << 20, Compat: "0.10", CompressionType: qcow2.CompressionZstd}, []string{"compat", "compression", "zstd", "0.10"}},
		{"negative size", qcow2.CreateOptions{Size: -1}, []string{"size"}},
		{"backing without format", qcow2.CreateOptions{Size: 1 << 20, BackingFile: "base.raw"}, []string{"format"}},
		{"backing name 1024 bytes", qcow2.CreateOptions{Size: 1 << 20, BackingFile: strings.Repeat("a", 1024), BackingFormat: "raw"}, []string{"backing", "1023"}},
		{"preallocation full", qcow2.CreateOptions{Size: 1 << 20, Preallocation: "full"}, []string{"preallocation"}},
		{"compression type 5", qcow2.CreateOptions{Size: 1 << 20, CompressionType: 5}, []string{"compression"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path := filepath.Join(dir, fmt.Sprintf("bad%d.qcow2", i))
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			var backing qcow2.Backing
			if c.opts.BackingFile != "" {
				bp := filepath.Join(dir, fmt.Sprintf("bad%d.base", i))
				os.WriteFile(bp, make([]byte, 65536), 0o644)
				rb, err := openRawBacking(bp)
				if err != nil {
					t.Fatal(err)
				}
				defer rb.Close()
				backing = rb
			}
			img, err := qcow2.Create(f, c.opts, backing)
			if err == nil {
				img.Close()
				t.Fatalf("Create %+v succeeded, want an error mentioning one of %q", c.opts, c.words)
			}
			f.Close()
			if !errSays(err, c.words...) {
				t.Errorf("Create error %q does not say what is wrong (want one of %q)", err, c.words)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Random workloads against a raw model.

// wop is one operation of a workload.
type wop struct {
	kind byte // 'w' write, 'z' WriteZeroes, 'f' Flush
	off  int64
	n    int64
	seed uint64
}

func (o wop) String() string {
	switch o.kind {
	case 'w':
		return fmt.Sprintf("WriteAt(len %d, off %d)", o.n, o.off)
	case 'z':
		return fmt.Sprintf("WriteZeroes(off %d, n %d)", o.off, o.n)
	}
	return "Flush()"
}

// genWorkload returns count operations on a disk of size bytes: unaligned
// writes from 1 byte to maxLen, overlapping earlier ones, near cluster
// boundaries, zero writes (some cluster aligned), and flushes.
func genWorkload(seed uint64, size, cs, maxLen int64, count int) []wop {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	var ops []wop
	for len(ops) < count {
		var o wop
		o.seed = r.Uint64()
		maxBits := bits.Len64(uint64(maxLen))
		o.n = 1 + r.Int64N(min(maxLen, int64(1)<<r.IntN(maxBits+1)))
		switch p := r.IntN(100); {
		case p < 5:
			ops = append(ops, wop{kind: 'f'})
			continue
		case p < 20:
			o.kind = 'z'
			if r.IntN(2) == 0 {
				o.n = (1 + r.Int64N(max(min(maxLen/cs, 8), 1))) * cs
			}
		default:
			o.kind = 'w'
		}
		o.n = min(o.n, size)
		switch q := r.IntN(10); {
		case q < 4 || len(ops) == 0:
			o.off = r.Int64N(size - o.n + 1)
		case q < 7:
			o.off = r.Int64N(size/cs+1)*cs + r.Int64N(cs) - cs/2
		default:
			prev := ops[r.IntN(len(ops))]
			o.off = prev.off + r.Int64N(prev.n+1) - o.n/2
		}
		if o.kind == 'z' && r.IntN(2) == 0 {
			o.off = o.off / cs * cs
		}
		o.off = max(0, min(o.off, size-o.n))
		ops = append(ops, o)
	}
	return ops
}

var zeroChunk = make([]byte, 1<<20)

// applyModel applies an operation to the raw model file.
func applyModel(model *os.File, o wop) error {
	switch o.kind {
	case 'w':
		b := make([]byte, o.n)
		fillData(b, o.seed)
		_, err := model.WriteAt(b, o.off)
		return err
	case 'z':
		for done := int64(0); done < o.n; {
			k := min(o.n-done, int64(len(zeroChunk)))
			if _, err := model.WriteAt(zeroChunk[:k], o.off+done); err != nil {
				return err
			}
			done += k
		}
	}
	return nil
}

// applyImage applies an operation through the engine.
func applyImage(img *qcow2.Image, o wop) error {
	switch o.kind {
	case 'w':
		b := make([]byte, o.n)
		fillData(b, o.seed)
		n, err := img.WriteAt(b, o.off)
		if err == nil && n != len(b) {
			err = fmt.Errorf("wrote %d bytes", n)
		}
		return err
	case 'z':
		return img.WriteZeroes(o.off, o.n)
	}
	return img.Flush()
}

// makeModel creates a raw model of size bytes, initially a copy of from (a
// raw file) or empty.
func makeModel(t testing.TB, path, from string, size int64) *os.File {
	t.Helper()
	if from != "" {
		b := readFile(t, from)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

// runWorkload applies ops to img and the model, closes img and checks the
// result with qemu-img (compare, check with no leaks) and by reopening.
func runWorkload(t *testing.T, label string, img *qcow2.Image, path string, model *os.File, ops []wop) {
	t.Helper()
	for i, o := range ops {
		if err := applyImage(img, o); err != nil {
			t.Fatalf("%s: op %d %v: %v", label, i, o, err)
		}
		if err := applyModel(model, o); err != nil {
			t.Fatal(err)
		}
	}
	closeImage(t, label, img)
	model.Close()
	r := qemuimg.RequireClean(t, path, false)
	if out, err := qemuimg.Output("compare", "-f", "qcow2", "-F", "raw", path, model.Name()); err != nil {
		t.Errorf("%s: qemu-img compare with the model after %d ops: %v %s", label, len(ops), err, out)
	}
	// Reopen and reread (e).
	img2 := openImage(t, path, true)
	defer img2.Close()
	compareImageWithRaw(t, label+" reopened vs model", img2, model.Name(), imgCS(img2))
	compareStatus(t, label+" reopened", img2, path, img2.Header().BackingFile != "")
	t.Logf("%s: %d ops, qemu-img check: %d/%d clusters allocated, %d compressed, image end %d",
		label, len(ops), r.AllocatedClusters, r.TotalClusters, r.CompressedClusters, r.ImageEndOffset)
}

func TestWriteWorkloads(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	mk := func(name string) (string, string) {
		return filepath.Join(dir, name+".qcow2"), filepath.Join(dir, name+".model.raw")
	}
	fresh := []struct {
		name   string
		opts   qcow2.CreateOptions
		maxLen int64
		count  int
	}{
		{"fresh-64k", qcow2.CreateOptions{Size: 48<<20 + 512}, 4 << 20, 150},
		{"fresh-cs512", qcow2.CreateOptions{Size: 8<<20 + 512, ClusterSize: 512}, 256 << 10, 250},
		{"fresh-cs4k-rb1", qcow2.CreateOptions{Size: 16 << 20, ClusterSize: 4096, RefcountBits: 1}, 1 << 20, 200},
		{"fresh-v2", qcow2.CreateOptions{Size: 16 << 20, Compat: "0.10"}, 1 << 20, 150},
		{"fresh-lazy", qcow2.CreateOptions{Size: 16 << 20, LazyRefcounts: true}, 1 << 20, 150},
		{"fresh-2M-zstd", qcow2.CreateOptions{Size: 20 << 20, ClusterSize: 2 << 20, CompressionType: qcow2.CompressionZstd}, 4 << 20, 60},
		{"prealloc-cs1k", qcow2.CreateOptions{Size: 4 << 20, ClusterSize: 1024, Preallocation: "metadata"}, 64 << 10, 200},
	}
	for i, c := range fresh {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path, mpath := mk(c.name)
			img := createImage(t, path, c.opts)
			model := makeModel(t, mpath, "", img.Size())
			cs := imgCS(img)
			runWorkload(t, c.name, img, path, model, genWorkload(uint64(i+1), img.Size(), cs, c.maxLen, c.count))
			if c.opts.LazyRefcounts {
				if info := qemuimg.ImageInfo(t, path); info.DirtyFlag {
					t.Errorf("lazy refcounts: dirty-flag still set after Close")
				}
			}
		})
	}

	// A tiny L2 cache: tables are evicted (and metadata flushed) in the
	// middle of writes.
	for i, c := range []struct {
		name   string
		opts   qcow2.CreateOptions
		cache  int64
		maxLen int64
	}{
		{"tiny-cache-cs512", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, 1024, 64 << 10},
		{"tiny-cache-cs4k-backing", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 4096, BackingFile: "tcbase.raw", BackingFormat: "raw"}, 8192, 256 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path, mpath := mk(c.name)
			from := ""
			if c.opts.BackingFile != "" {
				from = filepath.Join(dir, c.opts.BackingFile)
				writeRandomFile(t, from, int(c.opts.Size), 55)
			}
			closeImage(t, c.name, createImage(t, path, c.opts))
			img, err := tryOpenCache(path, false, c.cache)
			if err != nil {
				t.Fatal(err)
			}
			model := makeModel(t, mpath, from, c.opts.Size)
			runWorkload(t, c.name, img, path, model, genWorkload(uint64(700+i), c.opts.Size, imgCS(img), c.maxLen, 250))
			ro, err := tryOpenCache(path, true, c.cache)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			compareImageWithRaw(t, c.name+" read with a tiny cache", ro, mpath, imgCS(ro))
		})
	}

	// Rewrites of compressed clusters of qemu-img-compressed images.
	for i, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []int64{4096, 65536} {
			name := fmt.Sprintf("compressed-%s-cs%d", ct, cs)
			t.Run(name, func(t *testing.T) {
				defer noPanic(t)
				path, mpath := mk(name)
				src := filepath.Join(dir, name+".src")
				makeMixedRaw(t, src, 8<<20+512, cs)
				qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ct), src, path)
				model := makeModel(t, mpath, src, 8<<20+512)
				img := openImage(t, path, false)
				runWorkload(t, name, img, path, model, genWorkload(uint64(100+i), img.Size(), cs, 3*cs, 200))
			})
		}
	}

	// A qemu-made image with internal snapshots: shared clusters must be
	// copied, the snapshots must stay intact.
	snapCases := []struct {
		name        string
		opts        string
		extra       string
		staleCopied bool // COPIED left set on shared clusters (refcount 2)
	}{
		{"snapshot-64k", "cluster_size=65536", "write -c -P 0x31 6291456 65536", false},
		{"snapshot-cs512", "cluster_size=512", "write -c -P 0x31 6291456 65536", false},
		{"snapshot-rb2", "cluster_size=4096,refcount_bits=2", "write -P 0x31 6291456 65536", false},
		{"snapshot-stale-copied", "cluster_size=65536", "write -c -P 0x31 6291456 65536", true},
	}
	for i, c := range snapCases {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			srcs := makeSources(t, t.TempDir())
			path, mpath := mk(c.name)
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", c.opts, path, fmt.Sprint(8<<20))
			qemuimg.IO(t, path, "qcow2", fmt.Sprintf("write -s %s 0 1000000", srcs[0]), "write -P 0x99 3000000 200000",
				c.extra)
			qemuimg.Run(t, "snapshot", "-c", "s1", path)
			qemuimg.IO(t, path, "qcow2", fmt.Sprintf("write -s %s 500000 300000", srcs[1]))
			qemuimg.Run(t, "snapshot", "-c", "s2", path)
			qemuimg.IO(t, path, "qcow2", "write -z 3000000 100000")
			snaps := map[string][]byte{}
			for _, s := range []string{"s1", "s2"} {
				p := filepath.Join(dir, c.name+"."+s+".raw")
				qemuimg.Run(t, "convert", "-l", "snapshot.name="+s, "-O", "raw", path, p)
				snaps[s] = readFile(t, p)
			}
			qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
			if c.staleCopied {
				setCopiedEverywhere(t, path)
			}
			model := makeModel(t, mpath, "", 8<<20)
			img := openImage(t, path, false)
			ops := genWorkload(uint64(200+i), img.Size(), imgCS(img), 1<<20, 120)
			if c.staleCopied {
				// The check would complain about the planted COPIED flags
				// that no write touched: check data and snapshots only.
				for j, o := range ops {
					if err := applyImage(img, o); err != nil {
						t.Fatalf("op %d %v: %v", j, o, err)
					}
					applyModel(model, o)
				}
				closeImage(t, c.name, img)
				model.Close()
				if r := qemuimg.Check(t, path); r.Corruptions > 0 {
					// Only COPIED complaints are expected; a refcount below
					// the references means a shared cluster was freed.
					out, _ := qemuimg.Output("check", "-f", "qcow2", path)
					t.Logf("check after stale-COPIED workload: %d corruptions\n%s", r.Corruptions, out)
					if strings.Contains(r.Stderr, "ERROR cluster") {
						t.Errorf("refcount corruption after writing an image with stale COPIED flags:\n%s", r.Stderr)
					}
				}
				qemuimg.Compare(t, path, "qcow2", model.Name(), "raw")
			} else {
				runWorkload(t, c.name, img, path, model, ops)
			}
			for _, s := range []string{"s1", "s2"} {
				p := filepath.Join(dir, c.name+"."+s+".after.raw")
				qemuimg.Run(t, "convert", "-l", "snapshot.name="+s, "-O", "raw", path, p)
				if got := readFile(t, p); !bytes.Equal(got, snaps[s]) {
					t.Errorf("snapshot %s changed by writes to the active layer: %s", s, describeDiff(got, snaps[s], 0, 512))
				}
			}
		})
	}

	// Backing chains: partial-cluster COW from the chain.
	t.Run("backing-chain", func(t *testing.T) {
		defer noPanic(t)
		srcs := makeSources(t, t.TempDir())
		base := filepath.Join(dir, "wbase.raw")
		writeRandomFile(t, base, 12<<20+100, 31)
		mid := filepath.Join(dir, "wmid.qcow2")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "wbase.raw", "-F", "raw", mid, fmt.Sprint(12<<20))
		qemuimg.IO(t, mid, "qcow2", fmt.Sprintf("write -s %s 100000 500000", srcs[0]), "write -z 1048576 1048576",
			"write -z 5000000 3000", fmt.Sprintf("write -c -s %s 8388608 4096", srcs[1]))
		path, mpath := mk("backing-chain")
		qemuimg.Run(t, "convert", "-O", "raw", mid, mpath)
		// Create refuses a size other than the backing file's (qemu-img
		// allows it): grow the overlay with Resize instead.
		img := createImage(t, path, qcow2.CreateOptions{BackingFile: "wmid.qcow2", BackingFormat: "qcow2"})
		if err := img.Resize(16 << 20); err != nil {
			t.Fatalf("Resize overlay to 16 MiB: %v", err)
		}
		model := makeModel(t, mpath, "", 16<<20)
		runWorkload(t, "backing-chain", img, path, model, genWorkload(301, 16<<20, 65536, 1<<20, 200))
	})
	t.Run("backing-cs512-over-64k", func(t *testing.T) {
		defer noPanic(t)
		base := filepath.Join(dir, "wbase2.qcow2")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", base, fmt.Sprint(6<<20))
		qemuimg.IO(t, base, "qcow2", "write -P 0x41 0 6291456", "write -z 65536 65536")
		path, mpath := mk("backing-cs512")
		qemuimg.Run(t, "convert", "-O", "raw", base, mpath)
		img := createImage(t, path, qcow2.CreateOptions{Size: 6 << 20, ClusterSize: 512, BackingFile: "wbase2.qcow2", BackingFormat: "qcow2"})
		model := makeModel(t, mpath, "", 6<<20)
		runWorkload(t, "backing-cs512", img, path, model, genWorkload(302, 6<<20, 512, 64<<10, 200))
	})
	t.Run("v2-over-backing", func(t *testing.T) {
		// No zero flag in version 2: zero writes must hide the backing data
		// some other way.
		defer noPanic(t)
		base := filepath.Join(dir, "wbase4.raw")
		writeRandomFile(t, base, 8<<20, 34)
		path, mpath := mk("v2-backing")
		img := createImage(t, path, qcow2.CreateOptions{Compat: "0.10", ClusterSize: 4096, BackingFile: "wbase4.raw", BackingFormat: "raw"})
		model := makeModel(t, mpath, base, 8<<20)
		runWorkload(t, "v2-backing", img, path, model, genWorkload(305, 8<<20, 4096, 256<<10, 200))
	})
	t.Run("backing-odd-size", func(t *testing.T) {
		// A backing file whose size is not a multiple of 512: the last
		// cluster's COW reads past the backing file's end.
		defer noPanic(t)
		base := filepath.Join(dir, "wbase5.raw")
		writeRandomFile(t, base, 5<<20+1000, 35)
		path, mpath := mk("backing-odd")
		img := createImage(t, path, qcow2.CreateOptions{BackingFile: "wbase5.raw", BackingFormat: "raw"})
		model := makeModel(t, mpath, base, img.Size())
		ops := genWorkload(306, img.Size(), 65536, 100<<10, 100)
		ops = append(ops, wop{kind: 'w', off: img.Size() - 3000, n: 10, seed: 5}, wop{kind: 'w', off: 5 << 20, n: 1, seed: 6})
		runWorkload(t, "backing-odd", img, path, model, ops)
	})
	t.Run("extl2-over-backing", func(t *testing.T) {
		defer noPanic(t)
		base := filepath.Join(dir, "wbase3.raw")
		writeRandomFile(t, base, 6<<20, 33)
		path, mpath := mk("extl2")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,extended_l2=on", "-b", "wbase3.raw", "-F", "raw", path, fmt.Sprint(8<<20))
		qemuimg.IO(t, path, "qcow2", "write -P 0x11 20480 4096", "write -z 131072 8192",
			"write -c -P 0x22 262144 65536", "write -c -s "+base+" 327680 65536")
		qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
		model := makeModel(t, mpath, "", 8<<20)
		img := openImage(t, path, false)
		runWorkload(t, "extl2", img, path, model, genWorkload(303, 8<<20, 65536, 200<<10, 200))
	})

	// ZERO_ALLOC clusters (zero flag with a host cluster) made by QEMU.
	t.Run("qemu-zero-alloc", func(t *testing.T) {
		defer noPanic(t)
		path, mpath := mk("zero-alloc")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,preallocation=metadata", path, fmt.Sprint(8<<20))
		qemuimg.IO(t, path, "qcow2", "write -P 0x42 0 4194304", "write -z 65536 1048576", "write -z 3000000 5000")
		qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
		model := makeModel(t, mpath, "", 8<<20)
		img := openImage(t, path, false)
		runWorkload(t, "zero-alloc", img, path, model, genWorkload(307, 8<<20, 4096, 64<<10, 200))
	})

	// Refcount structures rebuilt by qemu-img amend (refcount_bits 16 -> 64
	// -> 2), and a persistent bitmap: the metadata layout is QEMU's, not
	// the one a fresh image has.
	t.Run("amended", func(t *testing.T) {
		defer noPanic(t)
		path, mpath := mk("amended")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, fmt.Sprint(8<<20))
		qemuimg.IO(t, path, "qcow2", "write -P 0x51 0 3000000", "write -z 100000 200000")
		qemuimg.Run(t, "amend", "-o", "refcount_bits=64", path)
		qemuimg.IO(t, path, "qcow2", "write -P 0x52 5000000 100000")
		qemuimg.Run(t, "amend", "-o", "refcount_bits=2", path)
		qemuimg.Run(t, "convert", "-O", "raw", path, mpath)
		verifyAgainstQemu(t, path)
		model := makeModel(t, mpath, "", 8<<20)
		img := openImage(t, path, false)
		runWorkload(t, "amended", img, path, model, genWorkload(308, 8<<20, 4096, 256<<10, 150))
	})

	// The refcount table must grow: 512-byte clusters with 64-bit refcounts
	// (one refcount block covers 32 KiB of file, one table cluster 2 MiB),
	// writes spread over a sparse 384 MiB disk.
	t.Run("reftable-growth", func(t *testing.T) {
		defer noPanic(t)
		path, mpath := mk("growth")
		img := createImage(t, path, qcow2.CreateOptions{Size: 384 << 20, ClusterSize: 512, RefcountBits: 64})
		before := be32(readFile(t, path)[:64], 56)
		model := makeModel(t, mpath, "", img.Size())
		r := rand.New(rand.NewPCG(304, 1))
		var ops []wop
		for i := 0; i < 700; i++ {
			n := 1 + r.Int64N(9000)
			ops = append(ops, wop{kind: 'w', off: r.Int64N(img.Size() - n), n: n, seed: r.Uint64()})
			if i%50 == 0 {
				ops = append(ops, wop{kind: 'f'})
			}
		}
		runWorkload(t, "reftable-growth", img, path, model, ops)
		b := readFile(t, path)
		if after := be32(b, 56); after <= before {
			t.Errorf("test did not make the refcount table grow: %d clusters before, %d after (file %d bytes)", before, after, len(b))
		}
	})
}

// setCopiedEverywhere sets the COPIED flag on every active L1 entry and
// every allocated L2 entry, as a careless tool might (64 KiB clusters, no
// extended L2).
func setCopiedEverywhere(t testing.TB, path string) {
	t.Helper()
	b := readFile(t, path)
	cs := int64(clusterSizeOf(b))
	l1 := int(be64(b, 40))
	for i := 0; i < int(be32(b, 36)); i++ {
		e := be64(b, l1+8*i)
		l2 := int64(e & 0x00fffffffffffe00)
		if l2 == 0 {
			continue
		}
		put64(b, l1+8*i, e|1<<63)
		for j := int64(0); j < cs/8; j++ {
			p := int(l2 + 8*j)
			if e2 := be64(b, p); e2&0x00fffffffffffe00 != 0 && e2&(1<<62) == 0 {
				put64(b, p, e2|1<<63)
			}
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

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

// TestConcurrentWrites: goroutines writing disjoint pieces of the same
// unallocated clusters at once, overlapping writes, zero writes, reads and
// flushes, with and without a backing file. Run with -race.
func TestConcurrentWrites(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	writeRandomFile(t, filepath.Join(dir, "cbase.raw"), 8<<20, 41)
	for _, c := range []struct {
		name  string
		opts  qcow2.CreateOptions
		cache int64
	}{
		{"64k", qcow2.CreateOptions{Size: 8 << 20}, 0},
		{"cs512", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, 0},
		{"cs512-tiny-cache", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, 1024},
		{"64k-backing", qcow2.CreateOptions{Size: 8 << 20, BackingFile: "cbase.raw", BackingFormat: "raw"}, 0},
		{"4k-rb1-backing-tiny-cache", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 4096, RefcountBits: 1, BackingFile: "cbase.raw", BackingFormat: "raw"}, 8192},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path := filepath.Join(dir, c.name+".qcow2")
			img := createImage(t, path, c.opts)
			if c.cache != 0 {
				closeImage(t, c.name, img)
				var err error
				if img, err = tryOpenCache(path, false, c.cache); err != nil {
					t.Fatal(err)
				}
			}
			var want []byte
			if c.opts.BackingFile != "" {
				want = readFile(t, filepath.Join(dir, c.opts.BackingFile))
			} else {
				want = make([]byte, 8<<20)
			}
			const G = 8
			const piece = 3001 // not a divisor of any cluster size
			// Region 1, [0, 4 MiB): goroutine g writes pieces j*G+g: every
			// cluster is written by all goroutines at about the same time.
			// Region 2, [4 MiB, 6 MiB): overlapping writes of byte g+1.
			// Region 3, [6 MiB, 8 MiB): goroutine g owns a slice; writes then
			// zeroes part of it.
			type span struct{ off, n int64 }
			overl := make([][]span, G)
			var wg sync.WaitGroup
			errs := make(chan error, 4*G)
			stop := make(chan struct{})
			for g := 0; g < G; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 9))
					buf := make([]byte, piece)
					for j := 0; ; j++ {
						off := int64(j*G+g) * piece
						if off+piece > 4<<20 {
							break
						}
						fillData(buf, uint64(off))
						if _, err := img.WriteAt(buf, off); err != nil {
							errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, off, err)
							return
						}
						if j%10 == 0 {
							// Overlapping region.
							n := 1 + r.Int64N(100000)
							o := 4<<20 + r.Int64N(2<<20-n)
							if _, err := img.WriteAt(bytes.Repeat([]byte{byte(g + 1)}, int(n)), o); err != nil {
								errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, o, err)
								return
							}
							overl[g] = append(overl[g], span{o, n})
						}
					}
					// Region 3.
					own := int64(6<<20) + int64(g)*(2<<20)/G
					seg := make([]byte, (2<<20)/G)
					fillData(seg, uint64(own))
					if _, err := img.WriteAt(seg, own); err != nil {
						errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, own, err)
						return
					}
					if err := img.WriteZeroes(own+1000, int64(len(seg))/2); err != nil {
						errs <- fmt.Errorf("goroutine %d: WriteZeroes(off %d): %v", g, own+1000, err)
					}
				}(g)
			}
			// A reader and a flusher alongside.
			var aux sync.WaitGroup
			aux.Add(2)
			go func() {
				defer aux.Done()
				buf := make([]byte, 100000)
				for i := int64(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := img.ReadAt(buf, (i*7919*512)%(8<<20-100000)); err != nil {
						errs <- fmt.Errorf("concurrent ReadAt: %v", err)
						return
					}
				}
			}()
			go func() {
				defer aux.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := img.Flush(); err != nil {
						errs <- fmt.Errorf("concurrent Flush: %v", err)
						return
					}
				}
			}()
			wg.Wait()
			close(stop)
			aux.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				img.Close()
				return
			}
			// Expected content of regions 1 and 3.
			for off := int64(0); off+piece <= 4<<20; off += piece {
				fillData(want[off:off+piece], uint64(off))
			}
			for g := 0; g < G; g++ {
				own := int64(6<<20) + int64(g)*(2<<20)/G
				seg := want[own : own+(2<<20)/G]
				fillData(seg, uint64(own))
				clear(want[own+1000 : own+1000+int64(len(seg))/2])
			}
			got := make([]byte, 8<<20)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			checkRegions := func(what string, got []byte) {
				for _, rg := range [][2]int64{{0, 4 << 20}, {6 << 20, 8 << 20}} {
					if !bytes.Equal(got[rg[0]:rg[1]], want[rg[0]:rg[1]]) {
						t.Errorf("%s: %s", what, describeDiff(got[rg[0]:rg[1]], want[rg[0]:rg[1]], rg[0], imgCS(img)))
					}
				}
				// Region 2: each byte is one of the writers' bytes, or the
				// original when nobody wrote it.
				writers := make([][]byte, 2<<20)
				for g := 0; g < G; g++ {
					for _, s := range overl[g] {
						for i := s.off - 4<<20; i < s.off-4<<20+s.n; i++ {
							writers[i] = append(writers[i], byte(g+1))
						}
					}
				}
				bad := 0
				for i := range writers {
					b := got[4<<20+i]
					ok := len(writers[i]) == 0 && b == want[4<<20+i] || bytes.IndexByte(writers[i], b) >= 0
					if !ok && bad < 3 {
						t.Errorf("%s: overlapping region, offset %d: got %#x, want one of % x (or original %#x)", what, 4<<20+i, b, writers[i], want[4<<20+i])
						bad++
					}
				}
			}
			checkRegions("in memory", got)
			closeImage(t, c.name, img)
			qemuimg.RequireClean(t, path, false)
			raw := qemuimg.ToRaw(t, path, path+".raw")
			checkRegions("qemu-img convert", raw)
		})
	}
}

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

// TestConcurrentReadWhileFreeing: readers must never see another cluster's
// data while writers zero clusters (freeing their host clusters), flush, and
// write them again (which may reuse freed host clusters). Every 8-byte word
// of guest cluster c holds c<<20|version or zero.
func TestConcurrentReadWhileFreeing(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "rf.qcow2")
	const cs, clusters = 4096, 256
	const compressed = 64 // clusters after the first 256 hold compressed data, read whole
	closeImage(t, "rf", createImage(t, path, qcow2.CreateOptions{Size: cs * (clusters + compressed), ClusterSize: cs}))
	// Reads of the file pause now and then, as a loaded disk would, so
	// that writes happen between a read's lookup and its I/O.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(&slowReadFile{File: f}, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(b []byte, c, v int64) {
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], uint64(c<<20|v))
		}
	}
	cbuf := make([]byte, cs)
	for c := int64(clusters); c < clusters+compressed; c++ {
		fill(cbuf, c, 0)
		if err := img.WriteCompressed(c*cs, cbuf); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := int64(0); w < 2; w++ {
		wg.Add(1)
		go func(w int64) {
			defer wg.Done()
			buf := make([]byte, cs)
			for v := int64(1); v < 40; v++ {
				for c := w; c < clusters; c += 2 {
					fill(buf, c, v)
					if _, err := img.WriteAt(buf, c*cs); err != nil {
						errs <- err
						return
					}
				}
				if err := img.Flush(); err != nil {
					errs <- err
					return
				}
				for c := w; c < clusters; c += 2 {
					if c%3 == v%3 {
						if err := img.WriteZeroes(c*cs, cs); err != nil {
							errs <- err
							return
						}
					}
				}
				if err := img.Flush(); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	var rg sync.WaitGroup
	rg.Add(1)
	go func() {
		// Whole compressed clusters while the writers grow the file.
		defer rg.Done()
		buf := make([]byte, cs)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := clusters + i%compressed
			if _, err := img.ReadAt(buf, c*cs); err != nil {
				errs <- err
				return
			}
			for k := 0; k < cs; k += 8 {
				if word := binary.LittleEndian.Uint64(buf[k:]); word != uint64(c<<20) {
					errs <- fmt.Errorf("reader: compressed guest cluster %d holds %#x at byte %d, want %#x", c, word, k, c<<20)
					return
				}
			}
		}
	}()
	for rd := 0; rd < 2; rd++ {
		rg.Add(1)
		go func(rd int) {
			defer rg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 8))
			buf := make([]byte, 8*cs)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c0 := r.Int64N(clusters - 8)
				if _, err := img.ReadAt(buf, c0*cs); err != nil {
					errs <- err
					return
				}
				for i := 0; i < len(buf); i += 8 {
					word := binary.LittleEndian.Uint64(buf[i:])
					c := c0 + int64(i)/cs
					if word != 0 && int64(word>>20) != c {
						errs <- fmt.Errorf("reader: guest cluster %d (offset %d) holds a word of guest cluster %d (version %d)", c, c*cs+int64(i)%cs, word>>20, word&(1<<20-1))
						return
					}
				}
			}
		}(rd)
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	closeImage(t, "rf", img)
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
