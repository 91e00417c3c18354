package disk

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestConvert(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	raw := sparseRaw(t, dir)
	top, _, _ := chainImages(t, dir)
	compressed := filepath.Join(dir, "compressed.qcow2")
	qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", raw, compressed)
	odd := filepath.Join(dir, "odd.raw") // ends in a partial cluster
	qemuimg.Run(t, "create", "-f", "raw", odd, "1124k")
	qemuimg.IO(t, odd, "raw", "write -P 0x21 0 512k")
	writeRandom(t, odd, 1000*1024, 100*1024, 5)
	zstd := filepath.Join(dir, "zstd.qcow2")
	qemuimg.Run(t, "convert", "-c", "-o", "compression_type=zstd", "-f", "raw", "-O", "qcow2", raw, zstd)

	tests := []struct {
		name      string
		src       string
		srcFormat Format
		opts      ConvertOptions
		// compressed: the output must hold compressed clusters.
		compressed bool
	}{
		{"raw to qcow2", raw, FormatRaw, ConvertOptions{}, false},
		{"raw to qcow2 4k clusters", raw, FormatRaw, ConvertOptions{ClusterSize: 4096}, false},
		{"raw to qcow2 2M clusters", raw, FormatRaw, ConvertOptions{ClusterSize: 2 * oneMiB}, false},
		{"raw to qcow2 one worker", raw, FormatRaw, ConvertOptions{Workers: 1}, false},
		{"raw to raw", raw, FormatRaw, ConvertOptions{Format: FormatRaw}, false},
		{"chain to qcow2", top, FormatQcow2, ConvertOptions{}, false},
		{"chain to raw", top, FormatQcow2, ConvertOptions{Format: FormatRaw}, false},
		{"compressed qcow2 to raw", compressed, FormatQcow2, ConvertOptions{Format: FormatRaw}, false},
		{"zstd qcow2 to qcow2", zstd, FormatQcow2, ConvertOptions{}, false},
		{"raw to qcow2 zlib", raw, FormatRaw, ConvertOptions{Compress: true}, true},
		{"raw to qcow2 zstd", raw, FormatRaw, ConvertOptions{Compress: true, CompressionType: qcow2.CompressionZstd}, true},
		{"partial cluster to qcow2", odd, FormatRaw, ConvertOptions{}, false},
		{"partial cluster to qcow2 zlib", odd, FormatRaw, ConvertOptions{Compress: true}, true},
		{"partial cluster to qcow2 zstd", odd, FormatRaw, ConvertOptions{Compress: true, CompressionType: qcow2.CompressionZstd}, true},
		{"chain to qcow2 zstd 16k clusters", top, FormatQcow2,
			ConvertOptions{Compress: true, CompressionType: qcow2.CompressionZstd, ClusterSize: 16384}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			var last, calls int64
			tt.opts.Progress = func(done, total int64) {
				if done < last || done > total {
					t.Errorf("progress went from %d to %d of %d", last, done, total)
				}
				last = done
				calls++
			}
			if err := Convert(context.Background(), tt.src, out, tt.opts); err != nil {
				t.Fatal(err)
			}
			outFormat := tt.opts.Format
			if outFormat == "" {
				outFormat = FormatQcow2
			}
			if ft, err := DetectFormat(out); err != nil || ft != outFormat {
				t.Fatalf("output format: got %q, %v; want %q", ft, err, outFormat)
			}
			if calls < 2 || last == 0 {
				t.Errorf("progress: %d calls ending at %d, want at least a first and a last", calls, last)
			}
			qemuimg.Compare(t, tt.src, string(tt.srcFormat), out, string(outFormat))
			if outFormat == FormatQcow2 {
				r := qemuimg.RequireClean(t, out, false)
				if tt.compressed && r.CompressedClusters == 0 {
					t.Errorf("no compressed clusters in the output")
				}
				if !tt.compressed && r.CompressedClusters != 0 {
					t.Errorf("%d compressed clusters in an uncompressed output", r.CompressedClusters)
				}
				info := qemuimg.ImageInfo(t, out)
				wantCT := "zlib"
				if tt.opts.CompressionType == qcow2.CompressionZstd {
					wantCT = "zstd"
				}
				if got := info.FormatSpecific.Data.CompressionType; got != wantCT {
					t.Errorf("compression type: got %s, want %s", got, wantCT)
				}
				if cs := tt.opts.ClusterSize; cs != 0 && info.ClusterSize != cs {
					t.Errorf("cluster size: got %d, want %d", info.ClusterSize, cs)
				}
			}
			checkSparse(t, tt.src, out, outFormat, tt.opts.ClusterSize)
			assertNoTemp(t, filepath.Dir(out), "out.img")
		})
	}
}

// checkSparse fails unless every block of out that reads as zeros is left
// unallocated: blocks are 4 KiB for raw output, clusters for qcow2.
func checkSparse(t *testing.T, src, out string, format Format, clusterSize int64) {
	t.Helper()
	block := int64(4096)
	if format == FormatQcow2 {
		block = 64 << 10
		if clusterSize != 0 {
			block = clusterSize
		}
	}
	content := qemuimg.ToRaw(t, src, filepath.Join(t.TempDir(), "content.raw"))
	data := dataBlocks(t, out, format, block)
	zeroBlocks := 0
	for b := int64(0); b*block < int64(len(content)); b++ {
		chunk := content[b*block : min((b+1)*block, int64(len(content)))]
		if !isZero(chunk) {
			continue
		}
		zeroBlocks++
		if b < int64(len(data)) && data[b] {
			t.Errorf("block at %d reads as zeros but is allocated in the output", b*block)
		}
	}
	if zeroBlocks == 0 && block <= 64<<10 {
		t.Fatal("the source has no zero blocks: the test proves nothing")
	}
}

// assertNoTemp fails if dir holds anything but the names given.
func assertNoTemp(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		found := false
		for _, k := range keep {
			found = found || e.Name() == k
		}
		if !found {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
	}
}

func TestConvertRefusesExisting(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	src := sparseRaw(t, dir)
	dst := filepath.Join(dir, "dst.qcow2")
	if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Convert(context.Background(), src, dst, ConvertOptions{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("got %v, want an error wrapping fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("destination changed to %q", b)
	}
	assertNoTemp(t, dir, "sparse.raw", "dst.qcow2")
}

func TestConvertCancel(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	qemuimg.Run(t, "create", "-f", "raw", src, "32M")
	writeRandom(t, src, 0, 32*oneMiB, 4)
	for _, opts := range []ConvertOptions{
		{Format: FormatQcow2},
		{Format: FormatRaw},
		{Format: FormatQcow2, Compress: true},
	} {
		t.Run(string(opts.Format)+map[bool]string{true: " compressed"}[opts.Compress], func(t *testing.T) {
			out := t.TempDir()
			dst := filepath.Join(out, "dst.img")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cancelled := int64(-1)
			opts.Workers = 2
			opts.Progress = func(done, total int64) {
				if done > 0 && cancelled < 0 {
					cancelled = done
					cancel()
				}
			}
			err := Convert(ctx, src, dst, opts)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want an error wrapping context.Canceled", err)
			}
			if cancelled <= 0 || cancelled >= 32*oneMiB {
				t.Fatalf("cancelled at %d, want part way", cancelled)
			}
			if !strings.Contains(err.Error(), "dst.img") {
				t.Errorf("error %q does not name the output", err)
			}
			assertNoTemp(t, out)
		})
	}
}

func TestConvertErrors(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	src := sparseRaw(t, dir)
	tests := []struct {
		name string
		src  string
		opts ConvertOptions
		want string
	}{
		{"compressed raw", src, ConvertOptions{Format: FormatRaw, Compress: true}, "compression needs qcow2 or qcow output"},
		{"unknown format", src, ConvertOptions{Format: "vmdk"}, `unsupported output format "vmdk"`},
		{"missing source", filepath.Join(dir, "none.raw"), ConvertOptions{}, "no such file"},
		{"bad cluster size", src, ConvertOptions{ClusterSize: 3000}, "cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			err := Convert(context.Background(), tt.src, filepath.Join(out, "dst"), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			assertNoTemp(t, out)
		})
	}
}

// BenchmarkConvert converts a 256 MiB raw image, half random data and half
// a hole (the comparison with qemu-img convert uses the same at 1 GiB), and
// the qcow2 made from it back to raw, with and without the final fsync.
func BenchmarkConvert(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src.raw")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 * oneMiB
	buf := make([]byte, oneMiB)
	r := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < size/2; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	qsrc := filepath.Join(dir, "src.qcow2")
	if err := Convert(context.Background(), src, qsrc, ConvertOptions{NoSync: true}); err != nil {
		b.Fatal(err)
	}
	tests := []struct {
		name string
		src  string
		opts ConvertOptions
	}{
		{"raw-qcow2", src, ConvertOptions{}},
		{"raw-qcow2-zlib", src, ConvertOptions{Compress: true}},
		{"raw-qcow2-zstd", src, ConvertOptions{Compress: true, CompressionType: qcow2.CompressionZstd}},
		{"qcow2-raw", qsrc, ConvertOptions{Format: FormatRaw}},
	}
	for _, tt := range tests {
		for _, sync := range []bool{false, true} {
			name := tt.name + map[bool]string{false: "-nosync", true: "-sync"}[sync]
			b.Run(name, func(b *testing.B) {
				b.SetBytes(size)
				opts := tt.opts
				opts.NoSync = !sync
				for i := 0; b.Loop(); i++ {
					dst := filepath.Join(dir, "dst"+strconv.Itoa(i))
					if err := Convert(context.Background(), tt.src, dst, opts); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.Remove(dst)
					b.StartTimer()
				}
			})
		}
	}
}
