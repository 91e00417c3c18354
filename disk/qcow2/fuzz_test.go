package qcow2_test

// Fuzz targets for the read path, seeded with small qemu-made images in
// testdata/fuzz/*.qcow2 (regenerate with VMTUI_QCOW2_GEN_SEEDS=1 go test
// -run TestGenerateFuzzSeeds). Crashers found by go test -fuzz are kept by
// Go in testdata/fuzz/FuzzOpen and testdata/fuzz/FuzzRead.

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// memFile is an in-memory, read-only qcow2.File.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("memFile: negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	return 0, errors.New("memFile: read-only")
}
func (m *memFile) Sync() error                { return nil }
func (m *memFile) Truncate(int64) error       { return errors.New("memFile: read-only") }
func (m *memFile) Close() error               { return nil }
func (m *memFile) Stat() (fs.FileInfo, error) { return memInfo{int64(len(m.b))}, nil }

type memInfo struct{ size int64 }

func (i memInfo) Name() string       { return "fuzz.qcow2" }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// patternBacking is a 1 MiB backing image whose byte i is backingByte(i).
type patternBacking struct{}

const patternBackingSize = 1 << 20

func backingByte(i int64) byte { return byte(i*7 + 3) }

func (patternBacking) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("patternBacking: negative offset")
	}
	n := 0
	for ; n < len(p) && off+int64(n) < patternBackingSize; n++ {
		p[n] = backingByte(off + int64(n))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (patternBacking) Size() int64  { return patternBackingSize }
func (patternBacking) Close() error { return nil }

func fuzzOpen(data []byte) (*qcow2.Image, error) {
	return qcow2.Open(&memFile{b: data}, qcow2.Options{
		ReadOnly:    true,
		CacheSize:   1 << 20,
		OpenBacking: func(name, format string) (qcow2.Backing, error) { return patternBacking{}, nil },
	})
}

// seedImages returns the committed seed images.
func seedImages(tb testing.TB) map[string][]byte {
	paths, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*.qcow2"))
	if len(paths) == 0 {
		tb.Fatalf("no seed images in testdata/fuzz")
	}
	seeds := map[string][]byte{}
	for _, p := range paths {
		seeds[filepath.Base(p)] = readFile(tb, p)
	}
	return seeds
}

// readBudget bounds the bytes one fuzz input may read.
const readBudget = 4 << 20

// checkExtentRead reads (a bounded part of) an extent and checks that what
// it reads agrees with its kind.
func checkExtentRead(t *testing.T, img *qcow2.Image, e qcow2.Extent, hasBacking bool, budget *int64) {
	n := min(e.Length, 64<<10, *budget)
	if n <= 0 {
		return
	}
	*budget -= n
	buf := make([]byte, n)
	k, err := img.ReadAt(buf, e.Offset)
	if err != nil && !(err == io.EOF && e.Offset+n == img.Size()) {
		return // an error is a fine answer to a broken image
	}
	if int64(k) != n {
		t.Fatalf("ReadAt(len %d, off %d) = %d, %v: short read without an error", n, e.Offset, k, err)
	}
	switch e.Kind {
	case qcow2.ExtentZero:
		if i := bytes.IndexFunc(buf, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("Status says [%d, +%d) is zero, ReadAt at %d reads %#x", e.Offset, e.Length, e.Offset+int64(i), buf[i])
		}
	case qcow2.ExtentBacking:
		if !hasBacking {
			t.Fatalf("Status says [%d, +%d) reads from a backing file, and there is none", e.Offset, e.Length)
		}
		for i, b := range buf {
			off := e.Offset + int64(i)
			want := byte(0)
			if off < patternBackingSize {
				want = backingByte(off)
			}
			if b != want {
				t.Fatalf("Status says [%d, +%d) reads from the backing file; ReadAt at %d reads %#x, the backing file has %#x", e.Offset, e.Length, off, b, want)
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, b := range seedImages(f) {
		f.Add(b)
	}
	for _, b := range qcow2.HostileImages(f) {
		f.Add(b)
	}
	f.Fuzz(fuzzOpenTarget)
}

// fuzzOpenTarget is FuzzOpen's body: open, Status over the disk with reads
// checked against each extent's kind, random reads.
func fuzzOpenTarget(t *testing.T, data []byte) {
	{
		img, err := fuzzOpen(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Open failed with an empty error message")
			}
			return
		}
		defer img.Close()
		h := img.Header()
		size := img.Size()
		if size < 0 {
			t.Fatalf("Size() = %d", size)
		}
		hasBacking := h.BackingFile != ""
		budget := int64(readBudget)
		// Status over the disk (a bounded number of extents).
		for off, i := int64(0), 0; off < size && i < 2000; i++ {
			e, err := img.Status(off, size-off)
			if err != nil {
				break
			}
			if e.Offset != off || e.Length <= 0 || e.Length > size-off {
				t.Fatalf("Status(%d, %d) = %+v", off, size-off, e)
			}
			if e.Kind != qcow2.ExtentData && e.Kind != qcow2.ExtentZero && e.Kind != qcow2.ExtentBacking {
				t.Fatalf("Status(%d, %d): kind %v", off, size-off, e.Kind)
			}
			if i < 64 {
				checkExtentRead(t, img, e, hasBacking, &budget)
			}
			off += e.Length
		}
		// Random reads, including across and past the end.
		hh := fnv.New64a()
		hh.Write(data)
		r := rand.New(rand.NewPCG(hh.Sum64(), 1))
		for i := 0; i < 32 && budget > 0 && size > 0; i++ {
			n := 1 + r.Int64N(min(budget, 256<<10))
			budget -= n
			off := r.Int64N(size + 1024)
			buf := make([]byte, n)
			k, err := img.ReadAt(buf, off)
			if k < 0 || int64(k) > n {
				t.Fatalf("ReadAt(len %d, off %d) = %d", n, off, k)
			}
			if off+n > size && err == nil {
				t.Fatalf("ReadAt(len %d, off %d) past the end of a %d-byte disk returned no error", n, off, size)
			}
			if err == nil && int64(k) != n {
				t.Fatalf("ReadAt(len %d, off %d) = %d, nil", n, off, k)
			}
		}
	}
}

func FuzzRead(f *testing.F) {
	names := []string{}
	seeds := seedImages(f)
	for name := range seeds {
		names = append(names, name)
	}
	for i, name := range names {
		b := seeds[name]
		f.Add(b, int64(0), uint32(65536))
		f.Add(b, int64(100*i+1), uint32(70000))
		f.Add(b, int64(65536-100), uint32(5000))
	}
	for _, b := range qcow2.HostileImages(f) {
		f.Add(b, int64(0), uint32(65536))
	}
	f.Fuzz(func(t *testing.T, data []byte, off int64, n uint32) {
		img, err := fuzzOpen(data)
		if err != nil {
			return
		}
		defer img.Close()
		n %= 1 << 20
		buf := make([]byte, n)
		k, err := img.ReadAt(buf, off)
		if off < 0 {
			if err == nil {
				t.Fatalf("ReadAt at negative offset %d returned no error", off)
			}
			return
		}
		if err != nil && err != io.EOF {
			return
		}
		size := img.Size()
		want := min(int64(n), max(size-off, 0))
		if int64(k) != want {
			t.Fatalf("ReadAt(len %d, off %d) on a %d-byte disk = %d, %v; want %d bytes", n, off, size, k, err, want)
		}
		// The same range read in two parts must agree.
		if k > 1 {
			split := k / 3
			a := make([]byte, split)
			b := make([]byte, k-split)
			_, errA := img.ReadAt(a, off)
			_, errB := img.ReadAt(b, off+int64(split))
			if (errA == nil || errA == io.EOF) && (errB == nil || errB == io.EOF) {
				if !bytes.Equal(a, buf[:split]) || !bytes.Equal(b, buf[split:k]) {
					t.Fatalf("ReadAt(len %d, off %d) differs from the same range read in two parts split at %d", k, off, off+int64(split))
				}
			}
		}
	})
}

// TestFuzzSeedsMatchQemu checks the committed seed images themselves against
// qemu-img, so the seeds are known-good starting points.
func TestFuzzSeedsMatchQemu(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	writeRandomFile(t, filepath.Join(dir, "base.raw"), 64<<10, 11)
	for name, b := range seedImages(t) {
		t.Run(name, func(t *testing.T) {
			defer noPanic(t)
			p := filepath.Join(dir, name)
			os.WriteFile(p, b, 0o444)
			verifyAgainstQemu(t, p)
		})
	}
}

// TestGenerateFuzzSeeds writes the seed images into testdata/fuzz. It runs
// only with VMTUI_QCOW2_GEN_SEEDS=1; the output is committed.
func TestGenerateFuzzSeeds(t *testing.T) {
	if os.Getenv("VMTUI_QCOW2_GEN_SEEDS") == "" {
		t.Skip("set VMTUI_QCOW2_GEN_SEEDS=1 to regenerate testdata/fuzz/*.qcow2")
	}
	qemuimg.Require(t)
	dir := t.TempDir()
	out := filepath.Join("testdata", "fuzz")
	os.MkdirAll(out, 0o755)
	writeRandomFile(t, filepath.Join(dir, "base.raw"), 64<<10, 11)
	src := filepath.Join(dir, "src")
	writeRandomFile(t, src, 64<<10, 12)
	mk := func(name, opts string, size int, cmds ...string) {
		p := filepath.Join(dir, name)
		args := []string{"create", "-q", "-f", "qcow2"}
		if opts != "" {
			args = append(args, "-o", opts)
		}
		qemuimg.Run(t, append(args, p, fmt.Sprint(size))...)
		if len(cmds) > 0 {
			qemuimg.IO(t, p, "qcow2", cmds...)
		}
	}
	common := []string{"write -s " + src + " 100 3000", "write -z 8192 1024", "write -P 0x11 12000 600", "discard 12288 512"}
	mk("v3-cs512.qcow2", "cluster_size=512", 64<<10, append(common, "write -c -P 0x22 16384 512", "write -c -s "+src+" 17408 512")...)
	mk("v2-cs512.qcow2", "cluster_size=512,compat=0.10", 64<<10, common...)
	mk("v3-cs4k-rb1.qcow2", "cluster_size=4096,refcount_bits=1", 64<<10, "write -s "+src+" 5000 9000", "write -z 16384 4096", "write -c -P 0x33 32768 4096")
	mk("v3-cs1k-rb64.qcow2", "cluster_size=1024,refcount_bits=64", 40<<10+512, "write -s "+src+" 1000 3000", "write -P 0x44 40000 1472")
	mk("extl2-cs16k.qcow2", "cluster_size=16384,extended_l2=on", 64<<10, "write -s "+src+" 2048 1024", "write -z 8192 1024", "write -P 0x55 17000 100")
	mk("backing-cs512.qcow2", "cluster_size=512,backing_file=base.raw,backing_fmt=raw", 64<<10, "write -s "+src+" 700 600", "write -z 4096 1024")
	mk("snapshot-cs512.qcow2", "cluster_size=512", 32<<10, "write -s "+src+" 0 4000")
	qemuimg.Run(t, "snapshot", "-c", "s1", filepath.Join(dir, "snapshot-cs512.qcow2"))
	qemuimg.IO(t, filepath.Join(dir, "snapshot-cs512.qcow2"), "qcow2", "write -P 0x66 1000 1000")
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []int64{512, 4096} {
			raw := filepath.Join(dir, fmt.Sprintf("mixed%d.raw", cs))
			makeMixedRaw(t, raw, 8*cs+512, cs)
			name := fmt.Sprintf("%s-cs%d.qcow2", ct, cs)
			qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ct), raw, filepath.Join(dir, name))
		}
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.qcow2"))
	for _, p := range paths {
		b := readFile(t, p)
		if err := os.WriteFile(filepath.Join(out, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", filepath.Base(p), len(b))
	}
}

// memRW is an in-memory, writable qcow2.File.
type memRW struct {
	mu sync.Mutex
	b  []byte
}

func (m *memRW) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return (&memFile{b: m.b}).ReadAt(p, off)
}

func (m *memRW) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, errors.New("memRW: negative offset")
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		if end > 256<<20 {
			return 0, errors.New("memRW: file would exceed 256 MiB")
		}
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memRW) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *memRW) Sync() error  { return nil }
func (m *memRW) Close() error { return nil }
func (m *memRW) Stat() (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memInfo{int64(len(m.b))}, nil
}

// FuzzWriteRoundTrip decodes a workload from the input (cluster size,
// refcount width, version, then 7-byte operations: write, zero write,
// compressed write, flush, resize, reopen), applies it to a new image in
// memory and to a model, and requires the image to read as the model, before
// and after reopening, and the engine's own Check to find it consistent.
func FuzzWriteRoundTrip(f *testing.F) {
	f.Add([]byte{0, 4, 0, 'w', 0, 0, 0, 10, 0, 1, 'f', 0, 0, 0, 0, 0, 0})
	f.Add([]byte{7, 0, 0, 'w', 1, 2, 3, 200, 1, 7, 'z', 1, 2, 0, 100, 0, 0, 'c', 0, 5, 0, 0, 0, 0, 'o', 0, 0, 0, 0, 0, 0, 'w', 1, 2, 9, 255, 255, 3})
	f.Add([]byte{2, 6, 1, 'r', 0, 0, 0, 0, 0, 0, 'w', 255, 255, 255, 255, 255, 9, 'z', 0, 0, 0, 255, 255, 0, 'o', 0, 0, 0, 0, 0, 0})
	f.Add([]byte{3, 1, 0, 'c', 0, 1, 0, 0, 0, 0, 'c', 0, 2, 0, 0, 0, 0, 'w', 0, 1, 128, 0, 16, 0, 'z', 0, 2, 0, 0, 16, 0, 'o', 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		cs := int64(512) << (data[0] % 8) // 512 .. 64 KiB
		rb := 1 << (data[1] % 7)          // 1 .. 64 bits
		compat := []string{"1.1", "0.10"}[data[2]%2]
		if compat == "0.10" {
			rb = 16
		}
		size := int64(1 << 20)
		file := &memRW{}
		img, err := qcow2.Create(file, qcow2.CreateOptions{Size: size, ClusterSize: cs, RefcountBits: rb, Compat: compat}, nil)
		if err != nil {
			t.Fatalf("Create(cs %d, rb %d, compat %s): %v", cs, rb, compat, err)
		}
		defer func() {
			if img != nil {
				img.Close()
			}
		}()
		model := make([]byte, size)
		ops := data[3:]
		for i := 0; i+7 <= len(ops) && i < 7*64; i += 7 {
			op := ops[i:]
			off := int64(op[1])<<16 | int64(op[2])<<8 | int64(op[3])
			n := int64(op[4])<<8 | int64(op[5])
			seed := uint64(op[6])
			off %= size
			n = min(n, size-off)
			switch op[0] % 6 {
			case 0: // write
				b := make([]byte, n)
				fillData(b, seed)
				if _, err := img.WriteAt(b, off); err != nil {
					t.Fatalf("op %d: WriteAt(len %d, off %d): %v", i/7, n, off, err)
				}
				copy(model[off:], b)
			case 1: // zero write
				if err := img.WriteZeroes(off, n); err != nil {
					t.Fatalf("op %d: WriteZeroes(%d, %d): %v", i/7, off, n, err)
				}
				clear(model[off : off+n])
			case 2: // compressed write, if the cluster is free
				c := off / cs * cs
				b := make([]byte, min(cs, size-c))
				fillData(b, seed)
				if e, err := img.Status(c, int64(len(b))); err == nil && e.Kind == qcow2.ExtentZero && e.Length == int64(len(b)) {
					if err := img.WriteCompressed(c, b); err == nil {
						copy(model[c:], b)
					}
				}
			case 3:
				if err := img.Flush(); err != nil {
					t.Fatalf("op %d: Flush: %v", i/7, err)
				}
			case 4: // grow by up to 64 KiB
				grow := (n%128 + 1) * 512
				if err := img.Resize(size + grow); err != nil {
					t.Fatalf("op %d: Resize(%d): %v", i/7, size+grow, err)
				}
				size += grow
				model = append(model, make([]byte, grow)...)
			case 5: // close and reopen
				if err := img.Close(); err != nil {
					t.Fatalf("op %d: Close: %v", i/7, err)
				}
				if img, err = qcow2.Open(file, qcow2.Options{}); err != nil {
					t.Fatalf("op %d: reopen: %v", i/7, err)
				}
			}
		}
		check := func(when string) {
			got := make([]byte, size)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatalf("%s: ReadAt: %v", when, err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("%s: %s", when, describeDiff(got, model, 0, cs))
			}
		}
		check("before reopening")
		if err := img.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		r, err := qcow2.Check(t.Context(), &memRW{b: bytes.Clone(file.b)}, qcow2.RepairNone)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if r.Corruptions != 0 || r.Leaks != 0 || r.CheckErrors != 0 {
			t.Fatalf("Check: %d corruptions, %d leaks, %d check errors: %q", r.Corruptions, r.Leaks, r.CheckErrors, r.Messages)
		}
		if img, err = qcow2.Open(file, qcow2.Options{ReadOnly: true}); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		check("after reopening")
	})
}
