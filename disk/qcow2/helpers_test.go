package qcow2_test

// Helpers shared by the engine's tests: opening images and backing chains,
// comparing contents and extents with qemu-img's, test data.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

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

func (r *rawBacking) Size() int64 { return r.size }

func (r *rawBacking) Close() error { return r.f.Close() }

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
