package qcow2_test

// Write side: images written by the engine must satisfy qemu-img (check
// clean with no leaks, info agreeing, compare identical with a raw model).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
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
