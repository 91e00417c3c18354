package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// checkSpec describes an image made with qemu-img and qemu-io.
type checkSpec struct {
	name   string
	create []string // qemu-img create options after -f qcow2 (without file and size)
	size   string
	io     []string // qemu-io commands run on the image
	// prepare, when set, builds the image instead of create: it receives
	// the path to create.
	prepare func(t *testing.T, dir, path string)
}

func buildCheckImage(t *testing.T, spec checkSpec) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "img.qcow2")
	if spec.prepare != nil {
		spec.prepare(t, dir, path)
	} else {
		args := append([]string{"create", "-q", "-f", "qcow2"}, spec.create...)
		size := spec.size
		if size == "" {
			size = "8M"
		}
		qemuimg.Run(t, append(args, path, size)...)
	}
	if len(spec.io) > 0 {
		qemuimg.IO(t, path, "qcow2", spec.io...)
	}
	return path
}

// checkScatter is a qemu-io workload touching several L2 tables, with partial
// clusters, rewrites, zero writes and a discard.
var checkScatter = []string{
	"write -P 0x11 0 4k",
	"write -P 0x22 100k 3k",
	"write -P 0x33 1M 130k",
	"write -P 0x44 5M 1k",
	"write -P 0x55 7M 64k",
	"write -z 3M 128k",
	"write -P 0x66 0 512",
	"discard 1M 64k",
}

// checkRawWithData makes a raw file with compressible and incompressible data.
func checkRawWithData(t *testing.T, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "src.raw")
	qemuimg.Run(t, "create", "-q", "-f", "raw", raw, "4M")
	qemuimg.IO(t, raw, "raw",
		"write -P 0x11 0 256k",
		"write -P 0x22 1M 64k",
		"write -P 0x33 3M 512k",
	)
	// Incompressible data stays uncompressed in the converted image.
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rnd := make([]byte, 192<<10)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range rnd {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		rnd[i] = byte(x)
	}
	if _, err := f.WriteAt(rnd, 2<<20); err != nil {
		t.Fatal(err)
	}
	return raw
}

func checkCompressedImage(opts string) func(t *testing.T, dir, path string) {
	return func(t *testing.T, dir, path string) {
		raw := checkRawWithData(t, dir)
		qemuimg.Run(t, "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, raw, path)
	}
}

func checkWithSnapshots(opts string) func(t *testing.T, dir, path string) {
	return func(t *testing.T, dir, path string) {
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", opts, path, "8M")
		qemuimg.IO(t, path, "qcow2", "write -P 1 0 256k", "write -P 2 2M 64k")
		qemuimg.Run(t, "snapshot", "-c", "s1", path)
		qemuimg.IO(t, path, "qcow2", "write -P 3 64k 64k", "write -P 4 6M 8k")
		qemuimg.Run(t, "snapshot", "-c", "s2", path)
		qemuimg.IO(t, path, "qcow2", "write -P 5 0 4k", "write -z 2M 64k", "discard 6M 64k")
	}
}

func checkWithBacking(t *testing.T, dir, path string) {
	base := filepath.Join(dir, "base.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", base, "8M")
	qemuimg.IO(t, base, "qcow2", "write -P 7 0 1M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", path, "16M")
	qemuimg.IO(t, path, "qcow2", "write -P 8 64k 4k", "write -z 128k 128k", "write -P 9 12M 64k")
}

func checkWithBitmap(t *testing.T, dir, path string) {
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "64M")
	qemuimg.Run(t, "bitmap", "--add", path, "b0")
	qemuimg.IO(t, path, "qcow2", "write -P 1 0 64k", "write -P 2 40M 1M")
	qemuimg.Run(t, "bitmap", "--add", "-g", "64k", path, "b1")
}

// checkGoodImages are consistent images qemu-img made, for the cross-check.
var checkGoodImages = []checkSpec{
	{name: "empty", size: "1G"},
	{name: "default", io: checkScatter},
	{name: "cs512", create: []string{"-o", "cluster_size=512"}, io: checkScatter},
	{name: "cs4k", create: []string{"-o", "cluster_size=4k"}, io: checkScatter},
	{name: "cs2M", create: []string{"-o", "cluster_size=2M"}, size: "64M", io: []string{"write -P 1 0 4k", "write -P 2 5M 3M", "write -z 20M 2M", "write -P 3 63M 1M"}},
	{name: "refcount1", create: []string{"-o", "cluster_size=4k,refcount_bits=1"}, io: checkScatter},
	{name: "refcount2", create: []string{"-o", "cluster_size=4k,refcount_bits=2"}, io: checkScatter},
	{name: "refcount4", create: []string{"-o", "cluster_size=512,refcount_bits=4"}, io: checkScatter},
	{name: "refcount8", create: []string{"-o", "refcount_bits=8"}, io: checkScatter},
	{name: "refcount32", create: []string{"-o", "cluster_size=4k,refcount_bits=32"}, io: checkScatter},
	{name: "refcount64", create: []string{"-o", "cluster_size=512,refcount_bits=64"}, io: checkScatter},
	{name: "compat010", create: []string{"-o", "compat=0.10"}, io: []string{"write -P 1 0 4k", "write -P 2 3M 100k", "write -z 6M 64k"}},
	{name: "extendedL2", create: []string{"-o", "extended_l2=on"}, io: []string{"write -P 1 20k 4k", "write -z 128k 8k", "write -P 2 1M 64k", "write -z -u 3M 64k", "write -P 3 5M 2k"}},
	{name: "extendedL2-cs16k", create: []string{"-o", "extended_l2=on,cluster_size=16k"}, io: checkScatter},
	{name: "zero-alloc", io: []string{"write -P 1 0 1M", "write -z -u 64k 256k", "write -z 512k 64k"}},
	{name: "prealloc-metadata", create: []string{"-o", "preallocation=metadata"}, io: []string{"write -P 1 0 64k"}},
	{name: "prealloc-falloc", create: []string{"-o", "preallocation=falloc,cluster_size=4k"}, io: []string{"write -P 1 8k 4k"}},
	{name: "lazy-refcounts", create: []string{"-o", "lazy_refcounts=on"}, io: checkScatter},
	{name: "compressed-zlib", prepare: checkCompressedImage("compression_type=zlib")},
	{name: "compressed-zstd", prepare: checkCompressedImage("compression_type=zstd")},
	{name: "compressed-cs4k", prepare: checkCompressedImage("cluster_size=4k")},
	{name: "compressed-cs512", prepare: checkCompressedImage("cluster_size=512")},
	{name: "compressed-cs2M", prepare: checkCompressedImage("cluster_size=2M")},
	{name: "compressed-refcount1", prepare: checkCompressedImage("refcount_bits=1")},
	{name: "compressed-extendedL2", prepare: checkCompressedImage("extended_l2=on")},
	{name: "snapshots", prepare: checkWithSnapshots("cluster_size=64k")},
	{name: "snapshots-cs512", prepare: checkWithSnapshots("cluster_size=512")},
	{name: "snapshots-refcount2", prepare: checkWithSnapshots("cluster_size=4k,refcount_bits=2")},
	{name: "backing", prepare: checkWithBacking},
	{name: "bitmap", prepare: checkWithBitmap},
}

// checkPath runs Check on the image at path.
func checkPath(t *testing.T, path string, mode RepairMode) (*CheckResult, error) {
	t.Helper()
	flag := os.O_RDONLY
	if mode != RepairNone {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Check(t.Context(), f, mode)
}

// checkExitClass is the qemu-img check exit code a result corresponds to.
func checkExitClass(r *CheckResult) int {
	switch {
	case r.CheckErrors > 0:
		return 1
	case r.Corruptions > 0:
		return 2
	case r.Leaks > 0:
		return 3
	}
	return 0
}

// compareCheckWithQemu fails unless Check agrees with qemu-img check on path.
func compareCheckWithQemu(t *testing.T, path string) *CheckResult {
	t.Helper()
	got, err := checkPath(t, path, RepairNone)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := qemuimg.Check(t, path)
	type counts struct {
		Exit, Corruptions, Leaks, CheckErrors         int
		Total, Allocated, Fragmented, Compressed, End int64
	}
	g := counts{checkExitClass(got), got.Corruptions, got.Leaks, got.CheckErrors,
		got.TotalClusters, got.AllocatedClusters, got.FragmentedClusters, got.CompressedClusters, got.ImageEndOffset}
	w := counts{want.ExitCode, want.Corruptions, want.Leaks, want.CheckErrors,
		want.TotalClusters, want.AllocatedClusters, want.FragmentedClusters, want.CompressedClusters, want.ImageEndOffset}
	t.Logf("check: %+v", g)
	if g != w {
		t.Errorf("Check disagrees with qemu-img check:\n got  %+v\n want %+v\nour messages:\n%s\nqemu-img:\n%s",
			g, w, strings.Join(got.Messages, "\n"), want.Stderr)
	}
	return got
}

func TestCheckMatchesQemuImg(t *testing.T) {
	qemuimg.Require(t)
	for _, spec := range checkGoodImages {
		t.Run(spec.name, func(t *testing.T) {
			path := buildCheckImage(t, spec)
			got := compareCheckWithQemu(t, path)
			if checkExitClass(got) != 0 {
				t.Errorf("image made by qemu-img is not clean: %+v\n%s", got, strings.Join(got.Messages, "\n"))
			}
			// Make sure each image holds what its name promises.
			h := openPokeImage(t, path).h
			switch {
			case strings.HasPrefix(spec.name, "compressed") && got.CompressedClusters == 0:
				t.Errorf("no compressed clusters")
			case strings.HasPrefix(spec.name, "snapshots") && h.NbSnapshots != 2:
				t.Errorf("%d snapshots, want 2", h.NbSnapshots)
			case spec.name == "bitmap" && (h.Bitmaps == nil || h.Bitmaps.Count != 2 || h.AutoclearFeatures&AutoclearBitmaps == 0):
				t.Errorf("bitmaps extension %+v, autoclear %#x; want 2 consistent bitmaps", h.Bitmaps, h.AutoclearFeatures)
			case spec.name == "compressed-zstd" && h.CompressionType != CompressionZstd:
				t.Errorf("compression type %v", h.CompressionType)
			case strings.HasPrefix(spec.name, "extendedL2") && !h.ExtendedL2():
				t.Errorf("no extended L2 entries")
			case spec.name != "empty" && got.AllocatedClusters == 0:
				t.Errorf("no allocated clusters")
			}
		})
	}
}

// pokeImage gives tests access to an image's metadata for damaging it.
type pokeImage struct {
	t    *testing.T
	path string
	f    *os.File
	h    *Header
}

func openPokeImage(t *testing.T, path string) *pokeImage {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return &pokeImage{t: t, path: path, f: f, h: h}
}

func (img *pokeImage) u64(off int64) uint64 {
	var b [8]byte
	if _, err := img.f.ReadAt(b[:], off); err != nil {
		img.t.Fatalf("read %d: %v", off, err)
	}
	return binary.BigEndian.Uint64(b[:])
}

func (img *pokeImage) putU64(off int64, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if _, err := img.f.WriteAt(b[:], off); err != nil {
		img.t.Fatalf("write %d: %v", off, err)
	}
}

func (img *pokeImage) l1Entry(i int64) uint64 { return img.u64(int64(img.h.L1TableOffset) + i*8) }

// l2EntryOffset returns the file offset of L2 entry j of the table that
// L1 entry i points to.
func (img *pokeImage) l2EntryOffset(i, j int64) int64 {
	l2 := l1Entry(img.l1Entry(i)).l2Offset()
	if l2 == 0 {
		img.t.Fatalf("L1 entry %d is unallocated", i)
	}
	return l2 + j*img.h.l2EntrySize()
}

// refblock returns the file offset of the refcount block covering cluster k.
func (img *pokeImage) refblock(k int64) int64 {
	per := img.h.refcountBlockEntries()
	off := refTableEntry(img.u64(int64(img.h.RefcountTableOffset) + (k/per)*8)).blockOffset()
	if off == 0 {
		img.t.Fatalf("no refcount block for cluster %d", k)
	}
	return off
}

func (img *pokeImage) block(k int64) (int64, []byte) {
	off := img.refblock(k)
	b := make([]byte, img.h.ClusterSize())
	if _, err := img.f.ReadAt(b, off); err != nil {
		img.t.Fatalf("read refcount block at %d: %v", off, err)
	}
	return off, b
}

func (img *pokeImage) refcount(k int64) uint64 {
	_, b := img.block(k)
	return refcount(b, k%img.h.refcountBlockEntries(), img.h.RefcountOrder)
}

func (img *pokeImage) setRefcount(k int64, v uint64) {
	off, b := img.block(k)
	setRefcount(b, k%img.h.refcountBlockEntries(), img.h.RefcountOrder, v)
	if _, err := img.f.WriteAt(b, off); err != nil {
		img.t.Fatal(err)
	}
}

func (img *pokeImage) size() int64 {
	fi, err := img.f.Stat()
	if err != nil {
		img.t.Fatal(err)
	}
	return fi.Size()
}

// checkDamage is a deliberately broken image.
type checkDamage struct {
	name  string
	spec  checkSpec
	poke  func(img *pokeImage)
	class int // expected qemu-img check exit code
}

// pokeLeak grows the file by one cluster and gives it refcount 1.
func pokeLeak(img *pokeImage) {
	cs := img.h.ClusterSize()
	end := (img.size()+cs-1)/cs*cs + cs
	if err := img.f.Truncate(end); err != nil {
		img.t.Fatal(err)
	}
	img.setRefcount(end/cs-1, 1)
}

var checkDamages = []checkDamage{
	{name: "leak", spec: checkSpec{io: checkScatter}, poke: pokeLeak, class: 3},
	{name: "leak-cs512-refcount1", spec: checkSpec{create: []string{"-o", "cluster_size=512,refcount_bits=1"}, io: checkScatter}, poke: pokeLeak, class: 3},
	{name: "leak-refcount4", spec: checkSpec{create: []string{"-o", "cluster_size=4k,refcount_bits=4"}, io: checkScatter}, poke: pokeLeak, class: 3},
	{name: "leak-refcount64", spec: checkSpec{create: []string{"-o", "refcount_bits=64"}, io: checkScatter}, poke: pokeLeak, class: 3},
	{name: "leak-compat010", spec: checkSpec{create: []string{"-o", "compat=0.10"}, io: checkScatter}, poke: pokeLeak, class: 3},
	{name: "leak-raised-refcount", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		// A used data cluster with refcount 2: a leak, and COPIED wrong.
		k := l2Entry(img.u64(img.l2EntryOffset(0, 0))).offset() / img.h.ClusterSize()
		img.setRefcount(k, 2)
	}, class: 2},
	{name: "zeroed-refcount", spec: checkSpec{io: checkScatter}, poke: pokeZeroRefcount, class: 2},
	{name: "zeroed-refcount-refcount2", spec: checkSpec{create: []string{"-o", "cluster_size=4k,refcount_bits=2"}, io: checkScatter}, poke: pokeZeroRefcount, class: 2},
	{name: "truncated-under-data", spec: checkSpec{io: []string{"write -P 1 0 64k", "write -P 2 1M 64k", "write -P 3 2M 128k"}}, poke: func(img *pokeImage) {
		// The last two data clusters (2M, 2M+64k) are the last in the file.
		last := l2Entry(img.u64(img.l2EntryOffset(0, 32))).offset()
		if err := img.f.Truncate(last); err != nil {
			img.t.Fatal(err)
		}
	}, class: 2},
	{name: "unaligned-l2", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		off := int64(img.h.L1TableOffset)
		img.putU64(off, img.u64(off)+512)
	}, class: 2},
	{name: "unaligned-data", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		off := img.l2EntryOffset(0, 1)
		img.putU64(off, img.u64(off)+0x1000)
	}, class: 2},
	{name: "reserved-bits", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		off := img.l2EntryOffset(0, 0)
		img.putU64(off, img.u64(off)|1<<57)
		l1 := int64(img.h.L1TableOffset)
		img.putU64(l1, img.u64(l1)|1<<60)
	}, class: 2},
	{name: "copied-on-shared", spec: checkSpec{prepare: checkWithSnapshots("cluster_size=64k")}, poke: pokeCopiedOnShared, class: 2},
	{name: "copied-on-shared-refcount2", spec: checkSpec{prepare: checkWithSnapshots("cluster_size=4k,refcount_bits=2")}, poke: pokeCopiedOnShared, class: 2},
	{name: "copied-missing", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		off := img.l2EntryOffset(0, 0)
		img.putU64(off, img.u64(off)&^oflagCopied)
		l1 := int64(img.h.L1TableOffset)
		img.putU64(l1, img.u64(l1)&^oflagCopied)
	}, class: 2},
	{name: "l2-overlaps-refblock", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		l1 := int64(img.h.L1TableOffset)
		img.putU64(l1, uint64(img.refblock(0))|oflagCopied)
	}, class: 2},
	{name: "l2-on-header", spec: checkSpec{create: []string{"-o", "cluster_size=4k"}, io: checkScatter}, poke: func(img *pokeImage) {
		l1 := int64(img.h.L1TableOffset)
		img.putU64(l1+8, oflagCopied) // L2 offset 0: QEMU reads cluster 0 as an L2 table
	}, class: 2},
	{name: "compressed-past-eof", spec: checkSpec{prepare: checkCompressedImage("cluster_size=64k")}, poke: func(img *pokeImage) {
		off := img.l2EntryOffset(0, 0)
		e := l2Entry(img.u64(off))
		if !e.compressed() {
			img.t.Fatalf("entry %#x is not compressed", uint64(e))
		}
		img.putU64(off, uint64(compressedEntry(img.size()+3*img.h.ClusterSize()+100, 1000, img.h.ClusterBits)))
	}, class: 2},
	{name: "refblock-outside", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		rt := int64(img.h.RefcountTableOffset)
		img.putU64(rt+8, uint64(img.size()+10*img.h.ClusterSize())&^uint64(img.h.ClusterSize()-1))
	}, class: 2},
	{name: "refblock-unaligned", spec: checkSpec{io: checkScatter}, poke: func(img *pokeImage) {
		rt := int64(img.h.RefcountTableOffset)
		img.putU64(rt+8, 0x10200)
	}, class: 2},
	{name: "ext-l2-bad-bitmap", spec: checkSpec{create: []string{"-o", "extended_l2=on"}, io: []string{"write -P 1 0 64k", "write -P 2 1M 4k"}}, poke: func(img *pokeImage) {
		off := img.l2EntryOffset(0, 0)
		img.putU64(off+8, img.u64(off+8)|1<<32) // alloc and zero both set
		off = img.l2EntryOffset(0, 5)
		img.putU64(off+8, 1) // alloc bit on an unallocated cluster
	}, class: 2},
	{name: "snapshot-l1-unaligned", spec: checkSpec{prepare: checkWithSnapshots("cluster_size=64k")}, poke: func(img *pokeImage) {
		off := int64(img.h.SnapshotsOffset)
		img.putU64(off, img.u64(off)+8)
	}, class: 2},
}

func pokeZeroRefcount(img *pokeImage) {
	k := l2Entry(img.u64(img.l2EntryOffset(0, 0))).offset() / img.h.ClusterSize()
	if k == 0 {
		img.t.Fatal("L2 entry 0 is unallocated")
	}
	img.setRefcount(k, 0)
}

func pokeCopiedOnShared(img *pokeImage) {
	off := img.l2EntryOffset(0, 1)
	e := l2Entry(img.u64(off))
	if e.offset() == 0 || e.copied() {
		img.t.Fatalf("L2 entry %#x is not an allocated shared cluster", uint64(e))
	}
	if r := img.refcount(e.offset() / img.h.ClusterSize()); r < 2 {
		img.t.Fatalf("cluster of L2 entry %#x has refcount %d, want a shared one", uint64(e), r)
	}
	img.putU64(off, uint64(e.withCopied(true)))
}

func TestCheckDamagedMatchesQemuImg(t *testing.T) {
	qemuimg.Require(t)
	for _, d := range checkDamages {
		t.Run(d.name, func(t *testing.T) {
			path := buildCheckImage(t, d.spec)
			d.poke(openPokeImage(t, path))
			got := compareCheckWithQemu(t, path)
			if c := checkExitClass(got); c != d.class {
				t.Errorf("exit class %d, want %d\n%s", c, d.class, strings.Join(got.Messages, "\n"))
			}
		})
	}
}

func TestCheckMessages(t *testing.T) {
	qemuimg.Require(t)
	for _, tc := range []struct {
		damage string
		want   []string // substrings of lines, in qemu-img's words
	}{
		{"leak", []string{"Leaked cluster ", " refcount=1 reference=0"}},
		{"zeroed-refcount", []string{"ERROR cluster ", " refcount=0 reference=1", "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000"}},
		{"truncated-under-data", []string{"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x"}},
		{"unaligned-l2", []string{": Table is not cluster aligned; L1 entry corrupted"}},
	} {
		t.Run(tc.damage, func(t *testing.T) {
			var d checkDamage
			for _, x := range checkDamages {
				if x.name == tc.damage {
					d = x
				}
			}
			path := buildCheckImage(t, d.spec)
			d.poke(openPokeImage(t, path))
			got, err := checkPath(t, path, RepairNone)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(got.Messages, "\n")
			want := qemuimg.Check(t, path)
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("messages lack %q:\n%s", w, all)
				}
				if !strings.Contains(want.Stderr, w) {
					t.Errorf("qemu-img's messages lack %q (the test is wrong):\n%s", w, want.Stderr)
				}
			}
		})
	}
}

func TestCheckRepair(t *testing.T) {
	qemuimg.Require(t)
	for _, tc := range []struct {
		damage      string
		mode        RepairMode
		leaksFixed  int
		corrFixed   int
		corruptions int    // left after repair
		wantErr     string // a refused repair: part of the error
	}{
		{damage: "leak", mode: RepairLeaks, leaksFixed: 1},
		{damage: "leak-cs512-refcount1", mode: RepairLeaks, leaksFixed: 1},
		{damage: "leak-refcount4", mode: RepairLeaks, leaksFixed: 1},
		{damage: "leak-refcount64", mode: RepairLeaks, leaksFixed: 1},
		{damage: "leak-compat010", mode: RepairLeaks, leaksFixed: 1},
		{damage: "leak", mode: RepairAll, leaksFixed: 1},
		{damage: "zeroed-refcount", mode: RepairAll, corrFixed: 2},
		{damage: "zeroed-refcount-refcount2", mode: RepairAll, corrFixed: 2},
		{damage: "leak-raised-refcount", mode: RepairAll, leaksFixed: 1, corrFixed: 1},
		{damage: "copied-on-shared", mode: RepairAll, corrFixed: 1},
		{damage: "copied-on-shared-refcount2", mode: RepairAll, corrFixed: 1},
		{damage: "copied-missing", mode: RepairAll, corrFixed: 2},
		// Corruptions make a leak repair unsafe: refused, as qemu-img refuses.
		{damage: "zeroed-refcount", mode: RepairLeaks, wantErr: "use -r all"},
		{damage: "unaligned-l2", mode: RepairLeaks, wantErr: "cannot be repaired by refcount changes"},
		{damage: "unaligned-l2", mode: RepairAll, wantErr: "cannot be repaired by refcount changes"},
		// Damaged tables or refcount blocks that would have to be rebuilt.
		{damage: "refblock-unaligned", mode: RepairAll, wantErr: "cannot be repaired"},
		{damage: "l2-overlaps-refblock", mode: RepairAll, wantErr: "cannot be repaired"},
	} {
		name := tc.damage + "/" + map[RepairMode]string{RepairLeaks: "leaks", RepairAll: "all"}[tc.mode]
		t.Run(name, func(t *testing.T) {
			var d checkDamage
			for _, x := range checkDamages {
				if x.name == tc.damage {
					d = x
				}
			}
			path := buildCheckImage(t, d.spec)
			d.poke(openPokeImage(t, path))
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := checkPath(t, path, tc.mode)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Check: got error %v, want one containing %q", err, tc.wantErr)
				}
				after, _ := os.ReadFile(path)
				if !bytes.Equal(before, after) {
					t.Errorf("a refused repair changed the image")
				}
				if got == nil || got.Corruptions == 0 {
					t.Errorf("a refused repair should still return the check result, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got.LeaksFixed != tc.leaksFixed || got.CorruptionsFixed != tc.corrFixed {
				t.Errorf("fixed %d leaks, %d corruptions; want %d, %d\n%s", got.LeaksFixed, got.CorruptionsFixed,
					tc.leaksFixed, tc.corrFixed, strings.Join(got.Messages, "\n"))
			}
			// The result describes the repaired image, like qemu-img check -r.
			after := compareCheckWithQemu(t, path)
			if got.Corruptions != after.Corruptions || got.Leaks != after.Leaks || got.ImageEndOffset != after.ImageEndOffset {
				t.Errorf("repair result %+v does not describe the repaired image %+v", got, after)
			}
			if tc.corruptions == 0 {
				qemuimg.RequireClean(t, path, false)
			} else if tc.corruptions > 0 && got.Corruptions != tc.corruptions {
				t.Errorf("%d corruptions left, want %d", got.Corruptions, tc.corruptions)
			} else if got.Corruptions == 0 || got.Leaks != 0 {
				t.Errorf("got %d corruptions, %d leaks left; want corruptions and no leaks", got.Corruptions, got.Leaks)
			}
		})
	}
}

// TestCheckRepairClearsFlags: RepairAll clears the corrupt and dirty bits of
// a consistent image; RepairLeaks clears only the dirty bit.
func TestCheckRepairClearsFlags(t *testing.T) {
	qemuimg.Require(t)
	for _, tc := range []struct {
		name        string
		set         uint64
		mode        RepairMode
		wantDirty   bool
		wantCorrupt bool
	}{
		{"dirty/leaks", IncompatDirty, RepairLeaks, false, false},
		{"dirty/all", IncompatDirty, RepairAll, false, false},
		{"corrupt/leaks", IncompatCorrupt, RepairLeaks, false, true},
		{"corrupt/all", IncompatCorrupt, RepairAll, false, false},
		{"dirty+corrupt/all", IncompatDirty | IncompatCorrupt, RepairAll, false, false},
		{"dirty/none", IncompatDirty, RepairNone, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := buildCheckImage(t, checkSpec{create: []string{"-o", "lazy_refcounts=on"}, io: checkScatter})
			img := openPokeImage(t, path)
			img.putU64(72, img.u64(72)|tc.set)
			pokeLeak(img)
			got, err := checkPath(t, path, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if tc.mode != RepairNone && (got.Leaks != 0 || got.LeaksFixed != 1) {
				t.Errorf("got %d leaks, %d fixed; want 0, 1", got.Leaks, got.LeaksFixed)
			}
			info := qemuimg.ImageInfo(t, path)
			if info.DirtyFlag != tc.wantDirty || info.FormatSpecific.Data.Corrupt != tc.wantCorrupt {
				t.Errorf("dirty=%v corrupt=%v, want %v %v", info.DirtyFlag, info.FormatSpecific.Data.Corrupt, tc.wantDirty, tc.wantCorrupt)
			}
		})
	}
}

// TestCheckLazyRefcountsCrash repairs an image whose writer died with lazy
// refcounts: refcounts lag behind the L2 tables and the dirty bit is set.
func TestCheckLazyRefcountsCrash(t *testing.T) {
	qemuimg.Require(t)
	path := buildCheckImage(t, checkSpec{create: []string{"-o", "lazy_refcounts=on,cluster_size=4k"}})
	// qemu-io's abort kills the process without flushing refcounts.
	_, err := checkQemuIOMayFail(path, "write -P 1 0 64k", "write -P 2 1M 8k", "flush", "abort")
	if err == nil {
		t.Fatal("qemu-io abort exited cleanly")
	}
	if !qemuimg.ImageInfo(t, path).DirtyFlag {
		// QEMU 7.2 leaves the dirty bit set; without it this test would check nothing.
		t.Fatal("qemu-io abort left the image clean: the test's dirty image was not made")
	}
	compareCheckWithQemu(t, path)
	got, err := checkPath(t, path, RepairAll)
	if err != nil {
		t.Fatal(err)
	}
	if got.Corruptions != 0 || got.Leaks != 0 {
		t.Errorf("after RepairAll: %+v\n%s", got, strings.Join(got.Messages, "\n"))
	}
	qemuimg.RequireClean(t, path, false)
	if qemuimg.ImageInfo(t, path).DirtyFlag {
		t.Error("dirty flag still set after RepairAll")
	}
}

func checkQemuIOMayFail(path string, cmds ...string) (string, error) {
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput()
	return string(out), err
}
