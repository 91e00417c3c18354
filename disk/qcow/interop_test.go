package qcow

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// openFile opens a qcow image at path; backing files are opened as qcow
// when they have the magic, else as raw files.
func openFile(t testing.TB, path string, readOnly bool) *Image {
	t.Helper()
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(f, Options{ReadOnly: readOnly, OpenBacking: func(name string) (Backing, error) {
		return openBackingFile(t, filepath.Join(filepath.Dir(path), name))
	}})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return img
}

type rawBacking struct {
	*os.File
	size int64
}

func (r rawBacking) Size() int64 { return r.size }

func openBackingFile(t testing.TB, path string) (Backing, error) {
	var magic [4]byte
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.ReadAt(magic[:], 0); err == nil && bytes.Equal(magic[:], []byte("QFI\xfb")) {
		f.Close()
		return openFile(t, path, true), nil
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return rawBacking{f, fi.Size()}, nil
}

func readAll(t testing.TB, img *Image) []byte {
	t.Helper()
	buf := make([]byte, img.Size())
	n, err := img.ReadAt(buf, 0)
	if err != nil && err != io.EOF || int64(n) != img.Size() {
		t.Fatalf("read: %d bytes, %v", n, err)
	}
	return buf
}

// sameAsQemu checks that the image reads as qemu-img flattens it.
func sameAsQemu(t *testing.T, path string) {
	t.Helper()
	want := qemuimg.ToRaw(t, path, filepath.Join(t.TempDir(), "flat.raw"))
	img := openFile(t, path, true)
	defer img.Close()
	got := readAll(t, img)
	if len(got) != len(want) {
		t.Fatalf("%s: size %d, qemu-img %d", path, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: differs from qemu-img at byte %d: %#x, want %#x", path, i, got[i], want[i])
			}
		}
	}
}

func TestReadQemuImages(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", plain, "5M")
	qemuimg.IO(t, plain, "qcow",
		"write -P 0x11 0 64k", "write -P 0x22 1000448 3584", "write -P 0x33 4096 512",
		"write -P 0x44 3M 1M", "write -z 3200k 8k", "write -P 0x55 5242368 512")
	sameAsQemu(t, plain)

	odd := filepath.Join(dir, "odd.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", odd, "1000001")
	qemuimg.IO(t, odd, "qcow", "write -P 0x66 512 1536", "write -P 0x77 999424 512")
	sameAsQemu(t, odd)

	// qcow on raw, qcow on qcow, qcow2 on qcow is tested in package disk.
	base := filepath.Join(dir, "base.raw")
	qemuimg.Run(t, "create", "-q", "-f", "raw", base, "3M")
	qemuimg.IO(t, base, "raw", "write -P 0x99 0 3M")
	top := filepath.Join(dir, "top.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", top, "4M")
	qemuimg.IO(t, top, "qcow", "write -P 0xaa 1M 4k", "write -z 2M 512")
	sameAsQemu(t, top)

	mid := filepath.Join(dir, "mid.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "-b", "top.qcow", "-F", "qcow", mid, "4M")
	qemuimg.IO(t, mid, "qcow", "write -P 0xbb 1M 512", "write -P 0xcc 3M 8k")
	sameAsQemu(t, mid)
	h := openFile(t, mid, true)
	if got := h.Header().BackingFile; got != "top.qcow" {
		t.Errorf("backing file %q", got)
	}
	h.Close()
}

// TestWriteReadByQemu writes with this package and has qemu-img compare the
// result with a raw image holding the same bytes.
func TestWriteReadByQemu(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		backing bool
	}{{"plain", false}, {"backed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(3<<20 + 512)
			want := make([]byte, size)
			opts := CreateOptions{Size: size}
			if tc.backing {
				b := filepath.Join(dir, "b.raw")
				base := bytes.Repeat([]byte{0x5a}, int(size))
				if err := os.WriteFile(b, base, 0o644); err != nil {
					t.Fatal(err)
				}
				copy(want, base)
				opts.BackingFile = "b.raw"
				opts.ClusterBits, opts.L2Bits = 12, 9 // partial-cluster writes copy on write
			}
			p := filepath.Join(dir, tc.name+".qcow")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := Create(f, opts); err != nil {
				t.Fatal(err)
			}
			f.Close()
			img := openFile(t, p, false)
			write := func(off int64, b []byte) {
				if _, err := img.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], b)
			}
			write(100, bytes.Repeat([]byte{1}, 5000))
			write(2<<20+7, bytes.Repeat([]byte{2}, 70000))
			write(size-512, bytes.Repeat([]byte{3}, 512))
			comp := bytes.Repeat([]byte("compressible "), 4096/13+1)[:4096]
			if err := img.WriteCompressed(1<<20, comp); err != nil {
				t.Fatal(err)
			}
			copy(want[1<<20:], comp)
			if err := img.WriteCompressed(1<<20+4096, bytes.Repeat([]byte{9}, 4096)); err != nil {
				t.Fatal(err)
			}
			copy(want[1<<20+4096:], bytes.Repeat([]byte{9}, 4096))
			write(1<<20+4000, []byte("over a compressed cluster"))
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatal("reads back different data")
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			r := filepath.Join(dir, tc.name+".raw")
			if err := os.WriteFile(r, want, 0o644); err != nil {
				t.Fatal(err)
			}
			qemuimg.Compare(t, p, "qcow", r, "raw")
			if info := qemuimg.ImageInfo(t, p); info.Format != "qcow" || info.VirtualSize != size {
				t.Fatalf("qemu-img info: %+v", info)
			}
			sameAsQemu(t, p)
		})
	}
}
