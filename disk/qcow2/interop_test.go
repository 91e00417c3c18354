package qcow2_test

// Read-side interoperability: images made by qemu-img and qemu-io must read
// back byte for byte as `qemu-img convert -O raw` sees them, and Status must
// agree with `qemu-img map`.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

type matrixCase struct {
	name  string
	cs    int64
	size  int64
	opts  string // qemu-img create -o
	v2    bool
	extL2 bool
}

func interopMatrix() []matrixCase {
	var cases []matrixCase
	add := func(cs, size int64, opts string) {
		name := fmt.Sprintf("cs%d-%s", cs, strings.NewReplacer("=", "", ",", "-", "refcount_bits", "rb", "compat", "v", "extended_l2on", "extl2", "lazy_refcountson", "lazy", "preallocation", "prealloc").Replace(opts))
		cases = append(cases, matrixCase{
			name: name, cs: cs, size: size,
			opts:  fmt.Sprintf("cluster_size=%d,%s", cs, opts),
			v2:    strings.Contains(opts, "compat=0.10"),
			extL2: strings.Contains(opts, "extended_l2=on"),
		})
	}
	small := map[int64]int64{512: 1<<20 + 512, 1024: 2<<20 + 512, 4096: 5<<20 + 512, 65536: 8<<20 + 512, 2 << 20: 24<<20 + 512}
	for _, cs := range []int64{512, 1024, 4096, 65536, 2 << 20} {
		size := small[cs]
		big := size
		if cs == 65536 {
			big = 520<<20 + 512 // crosses the first L2 table's 512 MiB
		}
		add(cs, size, "compat=0.10")
		add(cs, size, "compat=1.1,refcount_bits=1")
		add(cs, big, "compat=1.1,refcount_bits=16")
		add(cs, size, "compat=1.1,refcount_bits=64")
		add(cs, size, "compat=1.1,lazy_refcounts=on")
		if cs >= 16384 {
			add(cs, big, "compat=1.1,extended_l2=on")
			add(cs, size, "compat=1.1,extended_l2=on,refcount_bits=1")
		}
	}
	for _, rb := range []int{2, 4, 8, 32} {
		add(4096, small[4096], fmt.Sprintf("compat=1.1,refcount_bits=%d", rb))
	}
	add(65536, 8<<20+512, "compat=1.1,preallocation=metadata")
	add(512, 1<<20+512, "compat=1.1,preallocation=metadata")
	add(65536, 8<<20+512, "compat=0.10,preallocation=metadata")
	add(4096, 4<<20+512, "compat=1.1,preallocation=falloc")
	add(4096, 4<<20+512, "compat=1.1,preallocation=full")
	return cases
}

// makeSources writes three 1 MiB random files for qemu-io write -s.
func makeSources(t testing.TB, dir string) []string {
	var srcs []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("src%d", i))
		writeRandomFile(t, p, 1<<20, uint64(100+i))
		srcs = append(srcs, p)
	}
	return srcs
}

// contentCmds returns the qemu-io commands that fill a matrix image:
// unaligned random and pattern writes, zero writes with and without unmap,
// discard, a rewrite of a zeroed cluster, compressed clusters (one
// compressible, one not), subcluster writes on extended L2, writes crossing
// an L2 table and up to the end of the disk.
func contentCmds(c matrixCase, srcs []string, seed uint64) []string {
	cs, size := c.cs, c.size
	entry := int64(8)
	if c.extL2 {
		entry = 16
	}
	l2span := cs * (cs / entry)
	cmds := []string{
		"write -P 0xab 12345 70000",
		fmt.Sprintf("write -s %s %d 2", srcs[0], cs-1),
		fmt.Sprintf("write -s %s %d 700", srcs[1], size-700),
	}
	if l2span+300 < size {
		cmds = append(cmds, fmt.Sprintf("write -s %s %d 300", srcs[2], l2span-100))
	}
	a := (size - 9*cs) / 2 / cs * cs
	if a < 0 {
		panic("matrix image too small for its cluster size")
	}
	cmds = append(cmds,
		fmt.Sprintf("write -P 0x44 %d %d", a, 6*cs),
		fmt.Sprintf("write -s %s %d %d", srcs[0], a+cs/3, min(cs, 1<<20)),
		fmt.Sprintf("write -z %d %d", a+cs, cs),
		fmt.Sprintf("write -z -u %d %d", a+2*cs, 2*cs),
		fmt.Sprintf("write -z %d 200", a+4*cs+100),
		fmt.Sprintf("discard %d %d", a+5*cs, cs),
		fmt.Sprintf("write -s %s %d 10", srcs[1], a+2*cs+cs/2+3), // partial rewrite of a zero cluster
	)
	if !strings.Contains(c.opts, "preallocation") { // compression cannot overwrite anything
		cmds = append(cmds, fmt.Sprintf("write -c -P 0x77 %d %d", a+7*cs, cs))
		if cs <= 1<<20 { // -s sources are 1 MiB
			cmds = append(cmds, fmt.Sprintf("write -c -s %s %d %d", srcs[2], a+8*cs, cs))
		} else {
			cmds = append(cmds, fmt.Sprintf("write -c -P 0x78 %d %d", a+8*cs, cs))
		}
	}
	if c.extL2 {
		b := a + 6*cs
		sub := cs / 32
		cmds = append(cmds,
			fmt.Sprintf("write -s %s %d %d", srcs[0], b+3*sub+17, 2*sub),
			fmt.Sprintf("write -z %d %d", b+10*sub, 3*sub),
			fmt.Sprintf("write -P 0x5a %d %d", b+31*sub, sub),
		)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < 6; i++ {
		n := 1 + r.Int64N(min(3*cs, 1<<20))
		off := r.Int64N(size - n)
		cmds = append(cmds, fmt.Sprintf("write -s %s %d %d", srcs[i%3], off, n))
	}
	return cmds
}

func TestInteropMatrix(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	srcs := makeSources(t, dir)
	for i, c := range interopMatrix() {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path := filepath.Join(dir, c.name+".qcow2")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", c.opts, path, fmt.Sprint(c.size))
			qemuimg.IO(t, path, "qcow2", contentCmds(c, srcs, uint64(i))...)
			verifyAgainstQemu(t, path)
		})
	}
}

// makeMixedRaw writes a raw file of size bytes made of clusters of random
// data (incompressible), text, zeros and runs, for compression tests.
func makeMixedRaw(t testing.TB, path string, size, cs int64) {
	t.Helper()
	b := make([]byte, size)
	for off, i := int64(0), uint64(0); off < size; off, i = off+cs, i+1 {
		end := min(off+cs, size)
		switch i % 4 {
		case 0:
			fillData(b[off:end], i*3) // random
		case 1:
			fillData(b[off:end], i*3+1) // text
		case 2: // zeros
		case 3:
			fillData(b[off:end], i*3+2) // runs
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestInteropCompressed(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []int64{512, 4096, 65536, 2 << 20} {
			for _, ext := range []bool{false, true} {
				if ext && cs < 16384 {
					continue
				}
				name := fmt.Sprintf("%s-cs%d", ct, cs)
				opts := fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ct)
				if ext {
					name += "-extl2"
					opts += ",extended_l2=on"
				}
				t.Run(name, func(t *testing.T) {
					defer noPanic(t)
					src := filepath.Join(dir, name+".src")
					// Not a multiple of the cluster size: the last cluster is partial.
					size := int64(1<<20 + 512)
					if cs == 2<<20 {
						size = 5<<20 + 512
					}
					makeMixedRaw(t, src, size, cs)
					path := filepath.Join(dir, name+".qcow2")
					qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, src, path)
					verifyAgainstQemu(t, path)
					// qemu-img's raw conversion equals the source, so this is a
					// direct check as well.
					img := openImage(t, path, true)
					defer img.Close()
					compareImageWithRaw(t, name+" vs source", img, src, cs)
				})
			}
		}
	}
}

// TestInteropBackingChain: raw base <- qcow2 (4k clusters) <- qcow2 (64k
// clusters, larger than the base), zero clusters in the middle hiding base
// data, and an extended-L2 overlay with partly allocated subclusters.
func TestInteropBackingChain(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	srcs := makeSources(t, dir)
	base := filepath.Join(dir, "base.raw")
	writeRandomFile(t, base, 3<<20+1000, 9) // not a multiple of 512 even
	mid := filepath.Join(dir, "mid.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw", mid, fmt.Sprint(3<<20+4096))
	qemuimg.IO(t, mid, "qcow2",
		fmt.Sprintf("write -s %s 5000 10000", srcs[0]),
		"write -z 65536 131072",                                 // zero clusters hiding base data
		"write -z 300000 5000",                                  // partial: zeros written into COWed clusters
		"discard 1048576 65536",                                 // v3 with backing: zero clusters
		fmt.Sprintf("write -s %s %d 7000", srcs[1], 3<<20-3000), // across the base's end
	)
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", "mid.qcow2", "-F", "qcow2", top, fmt.Sprint(6<<20))
	qemuimg.IO(t, top, "qcow2",
		fmt.Sprintf("write -s %s 70000 100", srcs[2]), // partial cluster: COW from the chain
		"write -z 196608 65536",
		fmt.Sprintf("write -s %s %d 70000", srcs[0], 3<<20+100), // beyond the mid and base ends
		fmt.Sprintf("write -s %s %d 100", srcs[1], 6<<20-100),
	)
	t.Run("mid", func(t *testing.T) { defer noPanic(t); verifyAgainstQemu(t, mid) })
	t.Run("top", func(t *testing.T) { defer noPanic(t); verifyAgainstQemu(t, top) })

	// Extended L2 over a backing file: unallocated subclusters of an
	// allocated cluster read from below.
	ext := filepath.Join(dir, "ext.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,extended_l2=on", "-b", "base.raw", "-F", "raw", ext, fmt.Sprint(4<<20))
	qemuimg.IO(t, ext, "qcow2",
		fmt.Sprintf("write -s %s 20480 4096", srcs[0]), // subclusters 10-11 only
		"write -z 131072 8192",                         // zero subclusters
		fmt.Sprintf("write -s %s 200013 100", srcs[1]), // inside one subcluster: COW within it
		fmt.Sprintf("write -c -s %s 327680 65536", srcs[2]),
		"write -c -P 0x12 393216 65536",
		fmt.Sprintf("write -s %s %d 5000", srcs[0], 3<<20+2048), // past the base's end
	)
	t.Run("extl2-over-raw", func(t *testing.T) { defer noPanic(t); verifyAgainstQemu(t, ext) })

	// A base larger than the overlay, named with a relative path through a
	// directory.
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	small := filepath.Join(sub, "small.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "../mid.qcow2", "-F", "qcow2", small, fmt.Sprint(1<<20))
	qemuimg.IO(t, small, "qcow2", fmt.Sprintf("write -s %s 1000 3000", srcs[2]))
	t.Run("base-larger-relative", func(t *testing.T) { defer noPanic(t); verifyAgainstQemu(t, small) })

	// No backing format extension (as older tools wrote): the backing
	// file's format is left to the opener (detected by content).
	nofmt := filepath.Join(dir, "nofmt.qcow2")
	b := readFile(t, top)
	removeHeaderExt(t, b, 0xe2792aca)
	os.WriteFile(nofmt, b, 0o644)
	t.Run("no-backing-format", func(t *testing.T) {
		defer noPanic(t)
		img := openImage(t, nofmt, true)
		h := img.Header()
		img.Close()
		if h.BackingFile != "mid.qcow2" || h.BackingFormat != "" {
			t.Errorf("backing %q format %q, want \"mid.qcow2\" and no format", h.BackingFile, h.BackingFormat)
		}
		verifyAgainstQemu(t, nofmt)
	})
}

// removeHeaderExt removes the header extension of type typ from cluster 0.
func removeHeaderExt(t testing.TB, b []byte, typ uint32) {
	t.Helper()
	cs := clusterSizeOf(b)
	off := int(be32(b, 100))
	for off+8 <= cs {
		et, n := be32(b, off), int(be32(b, off+4))
		if et == 0 {
			break
		}
		total := 8 + (n+7)&^7
		if et == typ {
			copy(b[off:cs-total], b[off+total:cs])
			clear(b[cs-total : cs])
			if bo := be64(b, 8); bo > uint64(off) {
				put64(b, 8, bo-uint64(total))
			}
			return
		}
		off += total
	}
	t.Fatalf("test bug: no header extension %#x", typ)
}

func TestInteropSnapshot(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	srcs := makeSources(t, dir)
	for _, cs := range []int64{512, 65536} {
		path := filepath.Join(dir, fmt.Sprintf("snap%d.qcow2", cs))
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), path, fmt.Sprint(4<<20))
		qemuimg.IO(t, path, "qcow2", fmt.Sprintf("write -s %s 0 300000", srcs[0]), "write -P 0x99 1000000 100000")
		qemuimg.Run(t, "snapshot", "-c", "s1", path)
		qemuimg.IO(t, path, "qcow2", fmt.Sprintf("write -s %s 100000 50000", srcs[1]), "write -z 1000000 65536",
			fmt.Sprintf("write -s %s 2000000 7000", srcs[2]))
		qemuimg.Run(t, "snapshot", "-c", "s2", path)
		qemuimg.IO(t, path, "qcow2", "write -P 0x31 5 10")
		t.Run(filepath.Base(path), func(t *testing.T) { defer noPanic(t); verifyAgainstQemu(t, path) })
	}
}

// header editing helpers

func be32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }

func be64(b []byte, off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }

func put32(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }

func put64(b []byte, off int, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }

func clusterSizeOf(b []byte) int { return 1 << be32(b, 20) }

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// insertInHeader inserts data at pos in cluster 0, shifting the rest of the
// cluster (which must end in zeros) and the backing file name offset.
func insertInHeader(t testing.TB, b []byte, pos int, data []byte) {
	t.Helper()
	cs := clusterSizeOf(b)
	tail := b[cs-len(data) : cs]
	if !bytes.Equal(tail, make([]byte, len(data))) {
		t.Fatal("no room in cluster 0 to insert")
	}
	copy(b[pos+len(data):cs], b[pos:cs-len(data)])
	copy(b[pos:], data)
	if bo := be64(b, 8); bo >= uint64(pos) && bo != 0 {
		put64(b, 8, bo+uint64(len(data)))
	}
}

// TestInteropOddHeaders: header_length 104 (no compression type field),
// header_length 120 (an unknown additional field), an unknown header
// extension before the end marker, with and without a backing file.
func TestInteropOddHeaders(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	srcs := makeSources(t, dir)
	base := filepath.Join(dir, "base.raw")
	writeRandomFile(t, base, 1<<20, 5)
	mk := func(name string, backing bool) (string, []byte) {
		p := filepath.Join(dir, name)
		args := []string{"create", "-q", "-f", "qcow2"}
		if backing {
			args = append(args, "-b", "base.raw", "-F", "raw")
		}
		qemuimg.Run(t, append(args, p, fmt.Sprint(2<<20))...)
		qemuimg.IO(t, p, "qcow2", fmt.Sprintf("write -s %s 1000 100000", srcs[0]), "write -z 196608 65536",
			fmt.Sprintf("write -c -s %s 393216 65536", srcs[1]), "write -c -P 0x3c 458752 65536")
		return p, readFile(t, p)
	}
	edits := []struct {
		name string
		edit func(b []byte)
	}{
		{"hdrlen104", func(b []byte) {
			// Move the extensions 8 bytes down, drop the compression field.
			cs := clusterSizeOf(b)
			copy(b[104:cs-8], b[112:cs])
			clear(b[cs-8 : cs])
			put32(b, 100, 104)
			if bo := be64(b, 8); bo != 0 {
				put64(b, 8, bo-8)
			}
		}},
		{"hdrlen120", func(b []byte) {
			insertInHeader(t, b, 112, []byte{0, 0, 0, 0, 0, 0, 0, 0})
			put32(b, 100, 120)
		}},
		{"unknown-ext", func(b []byte) {
			ext := make([]byte, 8+16)
			put32(ext, 0, 0x12345678)
			put32(ext, 4, 13)
			copy(ext[8:], "hello, qcow2!")
			insertInHeader(t, b, 112, ext)
		}},
	}
	for _, backing := range []bool{false, true} {
		for _, e := range edits {
			name := e.name
			if backing {
				name += "-backing"
			}
			t.Run(name, func(t *testing.T) {
				defer noPanic(t)
				p, b := mk(name+".qcow2", backing)
				want := qemuimg.ToRaw(t, p, p+".orig.raw")
				e.edit(b)
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				// qemu-img must still read the edited image the same way, or
				// the edit is wrong.
				if got := qemuimg.ToRaw(t, p, p+".edited.raw"); !bytes.Equal(got, want) {
					t.Fatalf("test bug: qemu-img reads the edited image differently")
				}
				verifyAgainstQemu(t, p)
				img := openImage(t, p, true)
				defer img.Close()
				h := img.Header()
				wantHL := map[string]uint32{"hdrlen104": 104, "hdrlen120": 120, "unknown-ext": 112}[e.name]
				if h.HeaderLength != wantHL {
					t.Errorf("HeaderLength = %d, want %d", h.HeaderLength, wantHL)
				}
				if backing && (h.BackingFile != "base.raw" || h.BackingFormat != "raw") {
					t.Errorf("backing = %q (%q), want \"base.raw\" (\"raw\")", h.BackingFile, h.BackingFormat)
				}
			})
		}
	}
}

// TestInteropUnalignedSize: a header size that is not a multiple of 512;
// QEMU 7.2 rounds it down on open.
func TestInteropUnalignedSize(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "odd.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", p, fmt.Sprint(1<<20+1024))
	qemuimg.IO(t, p, "qcow2", "write -P 0x42 0 1049600")
	b := readFile(t, p)
	put64(b, 24, 1<<20+700)
	os.WriteFile(p, b, 0o644)
	verifyAgainstQemu(t, p)
}

// TestInteropHeaderBits: the dirty and corrupt bits are reported by Header;
// a corrupt image opens read-only but not read-write.
func TestInteropHeaderBits(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "bits.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", p, "1M")
	qemuimg.IO(t, p, "qcow2", "write -P 0x42 0 100000")
	orig := readFile(t, p)
	for _, bit := range []uint64{qcow2.IncompatDirty, qcow2.IncompatCorrupt, qcow2.IncompatDirty | qcow2.IncompatCorrupt} {
		b := bytes.Clone(orig)
		put64(b, 72, be64(b, 72)|bit)
		os.WriteFile(p, b, 0o644)
		info := qemuimg.ImageInfo(t, p)
		img, err := tryOpen(p, true)
		if err != nil {
			t.Errorf("incompat bits %#x: read-only open: %v", bit, err)
			continue
		}
		h := img.Header()
		if h.Dirty() != info.DirtyFlag || h.Corrupt() != info.FormatSpecific.Data.Corrupt {
			t.Errorf("incompat bits %#x: Dirty() = %v, Corrupt() = %v; want %v, %v (qemu-img info)",
				bit, h.Dirty(), h.Corrupt(), info.DirtyFlag, info.FormatSpecific.Data.Corrupt)
		}
		got := make([]byte, 100000)
		if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x42}, 100000)) {
			t.Errorf("incompat bits %#x: read-only read: err %v, data equal %v", bit, err, bytes.Equal(got, bytes.Repeat([]byte{0x42}, 100000)))
		}
		img.Close()
		if bit&qcow2.IncompatCorrupt != 0 {
			img, err := tryOpen(p, false)
			if err == nil {
				img.Close()
				t.Errorf("incompat bits %#x: read-write open of a corrupt image succeeded, want an error", bit)
			} else if !errors.Is(err, qcow2.ErrCorrupt) && !strings.Contains(strings.ToLower(err.Error()), "corrupt") {
				t.Errorf("incompat bits %#x: read-write open: %v; want an error saying the image is corrupt", bit, err)
			}
		}
	}
}
