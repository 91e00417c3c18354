package qcow2_test

// Read-side interoperability: images made by qemu-img and qemu-io must read
// back byte for byte as `qemu-img convert -O raw` sees them, and Status must
// agree with `qemu-img map`. Also the images Open must refuse.
//
// The helpers at the top are shared by write_test.go, crash_test.go and
// fuzz_test.go.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"vmtui/disk/qcow2"
	"vmtui/internal/qemuimg"
)

// ---------------------------------------------------------------------------
// Shared helpers.

// noPanic turns a panic in the engine into a test failure with its stack, so
// that one bad image does not take the other tests down with it. Use it as
// `defer noPanic(t)` on the test goroutine.
func noPanic(t testing.TB) {
	if r := recover(); r != nil {
		t.Fatalf("engine panicked: %v\n%s", r, debug.Stack())
	}
}

// raceEnabled reports whether the test binary was built with -race (CI's
// make test is): the long torture tests then sample fewer states.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// callNoPanic runs f and returns what it panicked with, or nil.
func callNoPanic(f func()) (p any) {
	defer func() {
		if r := recover(); r != nil {
			p = fmt.Sprintf("%v\n%s", r, debug.Stack())
		}
	}()
	f()
	return nil
}

// rawBacking is a raw backing file: it behaves like *os.File (short read and
// io.EOF at its end), so the engine must itself treat what lies past a
// backing file's end as zeros.
type rawBacking struct {
	f    *os.File
	size int64
}

func (r *rawBacking) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *rawBacking) Size() int64                             { return r.size }
func (r *rawBacking) Close() error                            { return r.f.Close() }

// openRawBacking opens a raw file as a backing image.
func openRawBacking(path string) (*rawBacking, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rawBacking{f: f, size: st.Size()}, nil
}

// chainOpener is the test-only BackingOpener: names relative to dir, raw via
// rawBacking, qcow2 via qcow2.Open read-only (recursively), depth bounded.
func chainOpener(dir string) qcow2.BackingOpener { return chainOpenerDepth(dir, 1) }

func chainOpenerDepth(dir string, depth int) qcow2.BackingOpener {
	return func(name, format string) (qcow2.Backing, error) {
		if depth > 8 {
			return nil, fmt.Errorf("test opener: backing chain deeper than 8 at %q", name)
		}
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if format == "" {
			b := make([]byte, 4)
			if f, err := os.Open(p); err == nil {
				f.ReadAt(b, 0)
				f.Close()
			}
			format = "raw"
			if binary.BigEndian.Uint32(b) == qcow2.Magic {
				format = "qcow2"
			}
		}
		switch format {
		case "raw":
			return openRawBacking(p)
		case "qcow2":
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			img, err := qcow2.Open(f, qcow2.Options{ReadOnly: true, OpenBacking: chainOpenerDepth(filepath.Dir(p), depth+1)})
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("test opener: open backing %q: %w", p, err)
			}
			return img, nil
		}
		return nil, fmt.Errorf("test opener: backing format %q of %q", format, name)
	}
}

// openImage opens a qcow2 file with the test opener; it fails the test on error.
func openImage(t testing.TB, path string, readOnly bool) *qcow2.Image {
	t.Helper()
	img, err := tryOpen(path, readOnly)
	if err != nil {
		t.Fatalf("open %s (read-only %v): %v", path, readOnly, err)
	}
	return img
}

func tryOpen(path string, readOnly bool) (*qcow2.Image, error) {
	return tryOpenCache(path, readOnly, 0)
}

// tryOpenCache opens with an L2 cache of cacheSize bytes (0: the default).
func tryOpenCache(path string, readOnly bool, cacheSize int64) (*qcow2.Image, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	img, err := qcow2.Open(f, qcow2.Options{ReadOnly: readOnly, OpenBacking: chainOpener(filepath.Dir(path)), CacheSize: cacheSize})
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

// fillData fills b deterministically from seed with a mix of random,
// text-like (compressible) and run-length content.
func fillData(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	switch seed % 3 {
	case 0:
		i := 0
		for ; i+8 <= len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], r.Uint64())
		}
		for ; i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
	case 1:
		words := []string{"qcow2 ", "cluster ", "refcount ", "L2 table ", "vmtui ", "\n", "backing ", "0123456789 "}
		for i := 0; i < len(b); {
			i += copy(b[i:], words[r.IntN(len(words))])
		}
	default:
		for i := 0; i < len(b); {
			n := 1 + r.IntN(700)
			c := byte(r.Uint32())
			for j := 0; j < n && i < len(b); j++ {
				b[i] = c
				i++
			}
		}
	}
}

// writeRandomFile writes n bytes of random data to path.
func writeRandomFile(t testing.TB, path string, n int, seed uint64) {
	t.Helper()
	b := make([]byte, n)
	fillData(b, seed*3) // seed*3 % 3 == 0: random
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// describeDiff explains the first difference between got and want, which
// were read at virtual offset base.
func describeDiff(got, want []byte, base, cs int64) string {
	first := -1
	count := 0
	last := 0
	for i := range got {
		if got[i] != want[i] {
			if first < 0 {
				first = i
			}
			last = i
			count++
		}
	}
	if first < 0 {
		return "no difference"
	}
	end := first + 16
	if end > len(got) {
		end = len(got)
	}
	off := base + int64(first)
	return fmt.Sprintf("virtual offset %d (cluster %d + %d): got % x, want % x; %d bytes differ in [%d, %d]",
		off, off/cs, off%cs, got[first:end], want[first:end], count, off, base+int64(last))
}

// compareImageWithRaw reads the whole virtual disk in chunks and compares it
// with the raw file; it reports the first difference of each differing chunk
// (at most a few).
func compareImageWithRaw(t testing.TB, label string, img *qcow2.Image, rawPath string, cs int64) {
	t.Helper()
	ref, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	st, _ := ref.Stat()
	size := img.Size()
	if size != st.Size() {
		t.Errorf("%s: Size() = %d, want %d (qemu-img's raw conversion)", label, size, st.Size())
		if st.Size() < size {
			size = st.Size()
		}
	}
	const chunk = 4 << 20
	got := make([]byte, chunk)
	want := make([]byte, chunk)
	bad := 0
	for off := int64(0); off < size; off += chunk {
		n := min(int64(chunk), size-off)
		g, w := got[:n], want[:n]
		clear(g)
		k, err := img.ReadAt(g, off)
		if err != nil && !(err == io.EOF && off+n == img.Size() && k == int(n)) {
			t.Errorf("%s: ReadAt(len %d, off %d) = %d, %v", label, n, off, k, err)
			bad++
		} else if k != int(n) {
			t.Errorf("%s: ReadAt(len %d, off %d) = %d bytes, want %d", label, n, off, k, n)
			bad++
		}
		if _, err := ref.ReadAt(w, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s: whole-disk read differs from qemu-img convert: %s", label, describeDiff(g, w, off, cs))
			bad++
		}
		if bad >= 3 {
			t.Errorf("%s: giving up on the whole-disk comparison", label)
			return
		}
	}
}

// randomReads reads random unaligned ranges around cluster, L2-table and
// end-of-disk boundaries and compares them with the raw file, including
// reads that cross or start past the end (io.EOF expected).
func randomReads(t testing.TB, label string, img *qcow2.Image, rawPath string, cs, l2span int64, seed uint64, count int) {
	t.Helper()
	ref, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	size := img.Size()
	r := rand.New(rand.NewPCG(seed, 77))
	bad := 0
	for i := 0; i < count && bad < 5; i++ {
		var off int64
		switch r.IntN(4) {
		case 0:
			off = r.Int64N(size)
		case 1:
			off = r.Int64N(size/cs+1)*cs + r.Int64N(64) - 32
		case 2:
			off = r.Int64N(size/l2span+1)*l2span + r.Int64N(2*cs) - cs
		default:
			off = size - r.Int64N(3*cs) + r.Int64N(cs/2+1)
		}
		off = max(off, 0)
		n := 1 + r.Int64N(min(3*cs, 1<<20))
		buf := make([]byte, n)
		k, err := img.ReadAt(buf, off)
		wantN := min(n, max(size-off, 0))
		if int64(k) != wantN {
			t.Errorf("%s: ReadAt(len %d, off %d) = %d bytes (err %v), want %d", label, n, off, k, err, wantN)
			bad++
			continue
		}
		if wantN < n && err != io.EOF {
			t.Errorf("%s: ReadAt(len %d, off %d) past the end of a %d-byte disk: err = %v, want io.EOF", label, n, off, size, err)
			bad++
		}
		if wantN == n && err != nil && !(err == io.EOF && off+n == size) {
			t.Errorf("%s: ReadAt(len %d, off %d) = %v", label, n, off, err)
			bad++
			continue
		}
		want := make([]byte, wantN)
		ref.ReadAt(want, off)
		if !bytes.Equal(buf[:wantN], want) {
			t.Errorf("%s: ReadAt(len %d, off %d): %s", label, n, off, describeDiff(buf[:wantN], want, off, cs))
			bad++
		}
	}
}

// mapExtent is one entry of qemu-img map --output=json.
type mapExtent struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset"`
}

// kindRun is a run of the virtual disk with one status, as a string
// ("data", "data/compressed", "zero", "backing").
type kindRun struct {
	start, end int64
	kind       string
}

func mergeRuns(runs []kindRun) []kindRun {
	var out []kindRun
	for _, r := range runs {
		if n := len(out); n > 0 && out[n-1].kind == r.kind && out[n-1].end == r.start {
			out[n-1].end = r.end
			continue
		}
		out = append(out, r)
	}
	return out
}

// qemuRuns classifies qemu-img map's extents the way Status describes the
// top image alone.
func qemuRuns(t testing.TB, path string, hasBacking bool) []kindRun {
	t.Helper()
	out := qemuimg.Run(t, "map", "--output=json", path)
	var ext []mapExtent
	if err := json.Unmarshal([]byte(out), &ext); err != nil {
		t.Fatalf("qemu-img map %s: %v", path, err)
	}
	var runs []kindRun
	for _, e := range ext {
		k := "zero"
		switch {
		case hasBacking && (e.Depth > 0 || !e.Present):
			k = "backing"
		case e.Data && e.Offset == nil:
			k = "data/compressed"
		case e.Data:
			k = "data"
		}
		runs = append(runs, kindRun{e.Start, e.Start + e.Length, k})
	}
	return mergeRuns(runs)
}

// engineRuns walks Status over the whole disk.
func engineRuns(t testing.TB, label string, img *qcow2.Image) []kindRun {
	t.Helper()
	size := img.Size()
	var runs []kindRun
	for off, i := int64(0), 0; off < size; i++ {
		if i > 4<<20 {
			t.Errorf("%s: Status: more than 4M extents; stopping at %d", label, off)
			return nil
		}
		e, err := img.Status(off, size-off)
		if err != nil {
			t.Errorf("%s: Status(%d, %d): %v", label, off, size-off, err)
			return nil
		}
		if e.Offset != off || e.Length <= 0 || e.Offset+e.Length > size {
			t.Errorf("%s: Status(%d, %d) = %+v: want an extent starting at %d, 0 < length <= %d", label, off, size-off, e, off, size-off)
			return nil
		}
		k := e.Kind.String()
		if e.Compressed {
			k += "/compressed"
		}
		runs = append(runs, kindRun{e.Offset, e.Offset + e.Length, k})
		off += e.Length
	}
	return mergeRuns(runs)
}

// compareStatus compares Status with qemu-img map and reports the first
// disagreement.
func compareStatus(t testing.TB, label string, img *qcow2.Image, path string, hasBacking bool) {
	t.Helper()
	got := engineRuns(t, label, img)
	if got == nil {
		return
	}
	want := qemuRuns(t, path, hasBacking)
	if !equalRuns(got, want) {
		t.Errorf("%s: Status disagrees with qemu-img map: %s", label, firstRunDiff(got, want))
	}
}

func equalRuns(a, b []kindRun) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstRunDiff(got, want []kindRun) string {
	kindAt := func(runs []kindRun, off int64) kindRun {
		for _, r := range runs {
			if r.start <= off && off < r.end {
				return r
			}
		}
		return kindRun{off, off, "none"}
	}
	// Walk the union of boundaries.
	var offs []int64
	for _, r := range got {
		offs = append(offs, r.start)
	}
	for _, r := range want {
		offs = append(offs, r.start)
	}
	best := int64(-1)
	for _, o := range offs {
		g, w := kindAt(got, o), kindAt(want, o)
		if g.kind != w.kind && (best < 0 || o < best) {
			best = o
		}
	}
	if best < 0 {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				return fmt.Sprintf("run %d: got %s [%d, %d), want %s [%d, %d)", i, got[i].kind, got[i].start, got[i].end, want[i].kind, want[i].start, want[i].end)
			}
		}
		return fmt.Sprintf("got %d runs, want %d", len(got), len(want))
	}
	g, w := kindAt(got, best), kindAt(want, best)
	return fmt.Sprintf("at virtual offset %d: got %s (run [%d, %d)), want %s (run [%d, %d))", best, g.kind, g.start, g.end, w.kind, w.start, w.end)
}

// checkHeaderAgainstInfo compares Header() with qemu-img info.
func checkHeaderAgainstInfo(t testing.TB, label string, img *qcow2.Image, path string) {
	t.Helper()
	info := qemuimg.ImageInfo(t, path)
	h := img.Header()
	wantVersion := uint32(3)
	if info.FormatSpecific.Data.Compat == "0.10" {
		wantVersion = 2
	}
	type pair struct {
		what      string
		got, want any
	}
	for _, p := range []pair{
		{"Size()", img.Size(), info.VirtualSize},
		{"Version", h.Version, wantVersion},
		{"ClusterSize()", h.ClusterSize(), info.ClusterSize},
		{"RefcountBits()", h.RefcountBits(), info.FormatSpecific.Data.RefcountBits},
		{"ExtendedL2()", h.ExtendedL2(), info.FormatSpecific.Data.ExtendedL2},
		{"LazyRefcounts()", h.LazyRefcounts(), info.FormatSpecific.Data.LazyRefcounts},
		{"Dirty()", h.Dirty(), info.DirtyFlag},
		{"Corrupt()", h.Corrupt(), info.FormatSpecific.Data.Corrupt},
		{"BackingFile", h.BackingFile, info.BackingFilename},
		{"BackingFormat", h.BackingFormat, info.BackingFormat},
	} {
		if fmt.Sprint(p.got) != fmt.Sprint(p.want) {
			t.Errorf("%s: Header %s = %v, want %v (qemu-img info)", label, p.what, p.got, p.want)
		}
	}
	if ct := info.FormatSpecific.Data.CompressionType; ct != "" && h.CompressionType.String() != ct {
		t.Errorf("%s: Header CompressionType = %v, want %v (qemu-img info)", label, h.CompressionType, ct)
	}
}

// verifyAgainstQemu is the full read-side check of one qcow2 file: header vs
// info, whole disk and random reads vs qemu-img convert, Status vs map.
func verifyAgainstQemu(t *testing.T, path string) {
	t.Helper()
	label := filepath.Base(path)
	raw := path + ".ref.raw"
	qemuimg.Run(t, "convert", "-O", "raw", path, raw)
	defer os.Remove(raw)
	img := openImage(t, path, true)
	defer img.Close()
	h := img.Header()
	cs := h.ClusterSize()
	entry := int64(8)
	if h.ExtendedL2() {
		entry = 16
	}
	l2span := cs * (cs / entry)
	checkHeaderAgainstInfo(t, label, img, path)
	compareImageWithRaw(t, label, img, raw, cs)
	randomReads(t, label, img, raw, cs, l2span, uint64(len(path))*7919, 300)
	compareStatus(t, label, img, path, h.BackingFile != "")
}

// ---------------------------------------------------------------------------
// The matrix.

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

func be32(b []byte, off int) uint32     { return binary.BigEndian.Uint32(b[off:]) }
func be64(b []byte, off int) uint64     { return binary.BigEndian.Uint64(b[off:]) }
func put32(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }
func put64(b []byte, off int, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }
func clusterSizeOf(b []byte) int        { return 1 << be32(b, 20) }
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

// ---------------------------------------------------------------------------
// Must-refuse cases.

// refuseBase makes a 64 KiB-cluster v3 image with data at virtual 0..200000,
// a compressed cluster at 1 MiB and a 4 MiB virtual size, and returns its
// bytes and the host offsets of its L2 table and first data cluster.
func refuseBase(t testing.TB, dir string) (b []byte, l2 int64) {
	t.Helper()
	p := filepath.Join(dir, "refuse-base.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", p, "4M")
	qemuimg.IO(t, p, "qcow2", "write -P 0x61 0 200000", "write -c -P 0x62 1048576 65536")
	b = readFile(t, p)
	l1 := be64(b, 40)
	l2 = int64(be64(b, int(l1)) & 0x00fffffffffffe00)
	if l2 == 0 {
		t.Fatal("test bug: no L2 table")
	}
	return b, l2
}

// errSays reports whether err's text contains one of the words (case-insensitively).
func errSays(err error, words ...string) bool {
	s := strings.ToLower(err.Error())
	for _, w := range words {
		if strings.Contains(s, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

func TestOpenRefuses(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	orig, l2 := refuseBase(t, dir)
	cs := int64(clusterSizeOf(orig))
	l1off := int(be64(orig, 40))
	cases := []struct {
		name  string
		edit  func(b []byte) []byte
		words []string // the error must contain one
	}{
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, []string{"not a qcow2"}},
		{"version 1", func(b []byte) []byte { put32(b, 4, 1); return b }, []string{"version"}},
		{"version 4", func(b []byte) []byte { put32(b, 4, 4); return b }, []string{"version"}},
		{"unknown incompatible bit 5", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<5); return b }, []string{"incompatible"}},
		{"unknown incompatible bit 63", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<63); return b }, []string{"incompatible"}},
		{"crypt_method 1 (AES)", func(b []byte) []byte { put32(b, 32, 1); return b }, []string{"encrypt"}},
		{"crypt_method 2 (LUKS)", func(b []byte) []byte { put32(b, 32, 2); return b }, []string{"encrypt"}},
		{"external data file bit", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<2); return b }, []string{"data file"}},
		{"cluster_bits 8", func(b []byte) []byte { put32(b, 20, 8); return b }, []string{"cluster"}},
		{"cluster_bits 22", func(b []byte) []byte { put32(b, 20, 22); return b }, []string{"cluster"}},
		{"cluster_bits 0xffffffff", func(b []byte) []byte { put32(b, 20, 0xffffffff); return b }, []string{"cluster"}},
		{"L1 with 2^32-1 entries", func(b []byte) []byte { put32(b, 36, 0xffffffff); return b }, []string{"L1"}},
		{"L1 offset unaligned", func(b []byte) []byte { put64(b, 40, be64(b, 40)+512); return b }, []string{"L1"}},
		{"L1 offset past EOF", func(b []byte) []byte { put64(b, 40, 1<<40); return b }, []string{"L1"}},
		{"L1 offset huge", func(b []byte) []byte { put64(b, 40, 0xffffffffffff0000); return b }, []string{"L1"}},
		{"L1 empty", func(b []byte) []byte { put32(b, 36, 0); return b }, []string{"L1"}},
		{"L1 too small for the size", func(b []byte) []byte { put64(b, 24, 1<<40); return b }, []string{"L1"}},
		{"virtual size 2^63", func(b []byte) []byte { put64(b, 24, 1<<63); return b }, []string{"L1", "size"}},
		{"refcount table offset unaligned", func(b []byte) []byte { put64(b, 48, be64(b, 48)+8); return b }, []string{"refcount"}},
		{"refcount table past EOF", func(b []byte) []byte { put64(b, 48, 1<<40); return b }, []string{"refcount"}},
		{"refcount table clusters huge", func(b []byte) []byte { put32(b, 56, 0xffffffff); return b }, []string{"refcount"}},
		{"refcount table clusters 0", func(b []byte) []byte { put32(b, 56, 0); return b }, []string{"refcount"}},
		{"refcount order 7", func(b []byte) []byte { put32(b, 96, 7); return b }, []string{"refcount"}},
		{"header length 100", func(b []byte) []byte { put32(b, 100, 100); return b }, []string{"header length"}},
		{"header length 108", func(b []byte) []byte { put32(b, 100, 108); return b }, []string{"header length"}},
		{"header length past cluster", func(b []byte) []byte { put32(b, 100, 1<<20); return b }, []string{"header length"}},
		{"compression bit without type", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<3); return b }, []string{"compression"}},
		{"compression type 2", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<3); b[104] = 2; return b }, []string{"compression"}},
		{"backing name of 1024 bytes", func(b []byte) []byte {
			put64(b, 8, 4096)
			put32(b, 16, 1024)
			copy(b[4096:], bytes.Repeat([]byte("a"), 1024))
			return b
		}, []string{"backing"}},
		{"backing name outside cluster 0", func(b []byte) []byte { put64(b, 8, uint64(cs)-10); put32(b, 16, 100); return b }, []string{"backing"}},
		{"backing name past EOF", func(b []byte) []byte { put64(b, 8, 1<<40); put32(b, 16, 10); return b }, []string{"backing"}},
		{"snapshot table past EOF", func(b []byte) []byte { put32(b, 60, 1); put64(b, 64, 1<<40); return b }, []string{"snapshot"}},
		{"snapshot table unaligned", func(b []byte) []byte { put32(b, 60, 1); put64(b, 64, uint64(cs)+8); return b }, []string{"snapshot"}},
		{"too many snapshots", func(b []byte) []byte { put32(b, 60, 0xffffffff); put64(b, 64, uint64(cs)); return b }, []string{"snapshot"}},
		{"extension longer than the cluster", func(b []byte) []byte {
			put32(b, 112, 0x12345678)
			put32(b, 116, 0xfffffff0)
			return b
		}, []string{"extension"}},
		{"crypto header extension", func(b []byte) []byte {
			ext := make([]byte, 24)
			put32(ext, 0, 0x0537be77)
			put32(ext, 4, 16)
			insertInHeader(t, b, 112, ext)
			return b
		}, []string{"encrypt"}},
		{"data file extension", func(b []byte) []byte {
			ext := make([]byte, 16)
			put32(ext, 0, 0x44415441)
			put32(ext, 4, 4)
			copy(ext[8:], "data")
			insertInHeader(t, b, 112, ext)
			return b
		}, []string{"data file"}},
		{"empty file", func(b []byte) []byte { return b[:0] }, []string{"short", "qcow2", "header", "empty"}},
		{"truncated inside L1", func(b []byte) []byte { return b[:l1off+4] }, []string{"L1", "end", "short", "truncat"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.edit(bytes.Clone(orig))
			p := filepath.Join(t.TempDir(), "bad.qcow2")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{true, false} {
				var img *qcow2.Image
				var err error
				if pv := callNoPanic(func() { img, err = tryOpen(p, ro) }); pv != nil {
					t.Fatalf("Open (read-only %v) panicked: %v", ro, pv)
				}
				if err == nil {
					img.Close()
					t.Errorf("Open (read-only %v) succeeded, want an error mentioning %q", ro, c.words)
					continue
				}
				if !errSays(err, c.words...) {
					t.Errorf("Open (read-only %v) error %q does not say what is wrong (want one of %q)", ro, err, c.words)
				}
			}
		})
	}

	// Bad table entries: Open may succeed, reading the cluster must fail.
	l2e := func(b []byte, i int) int { return int(l2) + 8*i }
	comp := l2e(nil, 16) // the compressed cluster at 1 MiB
	if be64(orig, comp)&(1<<62) == 0 {
		t.Fatalf("test bug: L2 entry 16 = %#x is not compressed", be64(orig, comp))
	}
	readCases := []struct {
		name  string
		off   int64 // virtual offset to read
		edit  func(b []byte)
		words []string
	}{
		{"L2 entry reserved bit 1", 0, func(b []byte) { put64(b, l2e(b, 0), be64(b, l2e(b, 0))|2) }, []string{"reserved", "L2"}},
		{"L2 entry reserved bit 60", 65536, func(b []byte) { put64(b, l2e(b, 1), be64(b, l2e(b, 1))|1<<60) }, []string{"reserved", "L2"}},
		{"L2 entry unaligned offset", 65536, func(b []byte) { put64(b, l2e(b, 1), be64(b, l2e(b, 1))+512) }, []string{"align", "L2"}},
		{"L1 entry reserved bits", 0, func(b []byte) { put64(b, l1off, be64(b, l1off)|1<<58) }, []string{"reserved", "L1"}},
		{"L1 entry unaligned", 0, func(b []byte) { put64(b, l1off, be64(b, l1off)+512) }, []string{"align", "L1", "L2"}},
		{"L1 entry past EOF", 0, func(b []byte) { put64(b, l1off, 1<<63|1<<40) }, []string{"L2", "end", "EOF", "past"}},
		{"compressed descriptor past EOF", 1 << 20, func(b []byte) {
			put64(b, comp, 1<<62|1<<40) // 1 sector at byte 2^40
		}, []string{"compress", "end", "EOF", "past"}},
		{"compressed descriptor at the header", 1 << 20, func(b []byte) {
			put64(b, comp, 1<<62|3<<54|16) // 4 sectors of header bytes: not deflate
		}, []string{"compress", "inflate", "deflate", "corrupt", "invalid"}},
	}
	for _, c := range readCases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.edit(b)
			p := filepath.Join(t.TempDir(), "bad.qcow2")
			os.WriteFile(p, b, 0o644)
			var img *qcow2.Image
			var err error
			if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
				t.Fatalf("Open panicked: %v", pv)
			}
			if err != nil {
				if !errSays(err, c.words...) {
					t.Errorf("Open error %q does not say what is wrong (want one of %q)", err, c.words)
				}
				return
			}
			defer img.Close()
			buf := make([]byte, 4096)
			var n int
			if pv := callNoPanic(func() { n, err = img.ReadAt(buf, c.off) }); pv != nil {
				t.Fatalf("ReadAt(%d) panicked: %v", c.off, pv)
			}
			if err == nil {
				t.Errorf("ReadAt(len 4096, off %d) = %d, nil; want an error mentioning %q (first bytes % x)", c.off, n, c.words, buf[:8])
			} else if !errSays(err, c.words...) {
				t.Errorf("ReadAt(off %d) error %q does not say what is wrong (want one of %q)", c.off, err, c.words)
			}
			var st error
			if pv := callNoPanic(func() { _, st = img.Status(c.off, 4096) }); pv != nil {
				t.Errorf("Status(%d) panicked: %v", c.off, pv)
			}
			_ = st
		})
	}

	// Extended L2 entries with invalid subcluster bitmaps.
	{
		p := filepath.Join(dir, "ext-base.qcow2")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", p, "4M")
		qemuimg.IO(t, p, "qcow2", "write -P 0x61 0 200000")
		eb := readFile(t, p)
		el1 := int(be64(eb, 40))
		el2 := int(be64(eb, el1) & 0x00fffffffffffe00)
		for _, c := range []struct {
			name string
			edit func(b []byte)
		}{
			{"ext-L2 subcluster both allocated and zero", func(b []byte) { put64(b, el2+8, be64(b, el2+8)|1<<32) }},
			{"ext-L2 unallocated cluster with allocated subclusters", func(b []byte) { put64(b, el2, 0) }},
		} {
			t.Run(c.name, func(t *testing.T) {
				b := bytes.Clone(eb)
				c.edit(b)
				p := filepath.Join(t.TempDir(), "bad.qcow2")
				os.WriteFile(p, b, 0o644)
				var img *qcow2.Image
				var err error
				if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
					t.Fatalf("Open panicked: %v", pv)
				}
				if err != nil {
					return
				}
				defer img.Close()
				buf := make([]byte, 4096)
				var n int
				if pv := callNoPanic(func() { n, err = img.ReadAt(buf, 0) }); pv != nil {
					t.Fatalf("ReadAt panicked: %v", pv)
				}
				if err == nil {
					t.Errorf("ReadAt(len 4096, off 0) = %d, nil; want an error about the invalid L2 entry (first bytes % x)", n, buf[:8])
				}
				if pv := callNoPanic(func() { _, err = img.Status(0, 65536) }); pv != nil {
					t.Fatalf("Status panicked: %v", pv)
				}
				if err == nil {
					t.Errorf("Status(0, 65536) = nil error; want an error about the invalid L2 entry")
				}
			})
		}
	}

	// Truncated copies: cut at many points. Cuts before the end of the L1
	// table must fail to open; any cut must not panic, and reads of
	// what remains either fail or succeed without panicking.
	l1end := l1off + 8*int(be32(orig, 36))
	cuts := []int{1, 3, 4, 8, 71, 72, 100, 103, 104, 111, 112, 113, 200, 511, 512, int(cs) - 1, int(cs), int(cs) + 1,
		l1off - 1, l1off, l1off + 1, l1end - 1}
	for c := 0; c < len(orig); c += 4099 {
		cuts = append(cuts, c)
	}
	for _, cut := range cuts {
		if cut >= len(orig) || cut < 0 {
			continue
		}
		p := filepath.Join(dir, "cut.qcow2")
		os.WriteFile(p, orig[:cut], 0o644)
		var img *qcow2.Image
		var err error
		if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
			t.Errorf("cut at %d: Open panicked: %v", cut, pv)
			continue
		}
		if cut < l1end {
			if err == nil {
				img.Close()
				t.Errorf("cut at %d (L1 table ends at %d): Open succeeded, want an error", cut, l1end)
			}
			continue
		}
		if err != nil {
			continue
		}
		buf := make([]byte, 1<<20)
		for off := int64(0); off < img.Size(); off += int64(len(buf)) {
			if pv := callNoPanic(func() { img.ReadAt(buf, off); img.Status(off, int64(len(buf))) }); pv != nil {
				t.Errorf("cut at %d: ReadAt/Status at %d panicked: %v", cut, off, pv)
				break
			}
		}
		img.Close()
	}
}

// TestOpenBackingMissing: without an opener, an image with a backing file
// fails to open with an error naming it.
func TestOpenBackingMissing(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	writeRandomFile(t, base, 65536, 1)
	p := filepath.Join(dir, "o.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p, "1M")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer noPanic(t)
	img, err := qcow2.Open(f, qcow2.Options{ReadOnly: true})
	if err == nil {
		img.Close()
		t.Fatalf("Open without OpenBacking of an image with a backing file succeeded, want an error")
	}
	f.Close()
	if !strings.Contains(err.Error(), "base.raw") {
		t.Errorf("Open error %q does not name the backing file \"base.raw\"", err)
	}
}
