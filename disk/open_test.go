package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestOpenDetectsFormatByContent(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	tests := []struct {
		name   string
		file   string // the name says the other format, or nothing
		format Format
		size   int64
		make   func(p string)
	}{
		{"qcow2 named raw", "disk.raw", FormatQcow2, 4 * oneMiB, func(p string) {
			qemuimg.Run(t, "create", "-f", "qcow2", p, "4M")
			qemuimg.IO(t, p, "qcow2", "write -P 0x61 1M 64k")
		}},
		{"raw named qcow2", "disk.qcow2", FormatRaw, 4 * oneMiB, func(p string) {
			qemuimg.Run(t, "create", "-f", "raw", p, "4M")
			qemuimg.IO(t, p, "raw", "write -P 0x62 1M 64k")
		}},
		{"qcow2 without extension", "disk", FormatQcow2, 1 * oneMiB, func(p string) {
			qemuimg.Run(t, "create", "-f", "qcow2", "-o", "compat=0.10", p, "1M")
		}},
		{"empty raw", "empty.qcow2", FormatRaw, 0, func(p string) {
			qemuimg.Run(t, "create", "-f", "raw", p, "0")
		}},
		{"tiny raw", "tiny.img", FormatRaw, 512, func(p string) {
			if err := os.WriteFile(p, []byte("QFI"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.file)
			tt.make(p)
			img, err := Open(p, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Format() != tt.format || img.Size() != tt.size {
				t.Errorf("got %s of %d bytes, want %s of %d", img.Format(), img.Size(), tt.format, tt.size)
			}
			if ft, err := DetectFormat(p); err != nil || ft != tt.format {
				t.Errorf("DetectFormat: got %q, %v; want %q", ft, err, tt.format)
			}
			got := make([]byte, img.Size())
			if _, err := img.ReadAt(got, 0); err != nil && img.Size() > 0 {
				t.Fatal(err)
			}
			want := qemuimg.ToRaw(t, p, filepath.Join(t.TempDir(), "want.raw"))
			if !bytes.Equal(got, want) {
				t.Errorf("content differs from qemu-img's reading")
			}
		})
	}
}

func TestOpenChain(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	top, _, _ := chainImages(t, dir)
	img, err := Open(top, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()

	got := make([]byte, img.Size())
	if n, err := img.ReadAt(got, 0); err != nil || n != len(got) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	want := qemuimg.ToRaw(t, top, filepath.Join(dir, "want.raw"))
	if !bytes.Equal(got, want) {
		t.Errorf("content differs from qemu-img's reading")
	}

	// Chain status: data where qemu-img map sees data at any depth.
	const block = 4096
	wantData := dataBlocks(t, top, FormatQcow2, block)
	gotData := make([]bool, len(wantData))
	for off := int64(0); off < img.Size(); {
		e, err := img.Status(off, img.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if e.Offset != off || e.Length <= 0 {
			t.Fatalf("Status(%d): got extent %+v", off, e)
		}
		if e.Kind == ExtentBacking {
			t.Fatalf("Status(%d): got %+v, want no backing extents from a chain", off, e)
		}
		for b := off / block; b*block < off+e.Length; b++ {
			gotData[b] = e.Kind == ExtentData
		}
		off += e.Length
	}
	for b := range wantData {
		if gotData[b] != wantData[b] {
			t.Errorf("block at %d: got data=%t, want data=%t (qemu-img map)", int64(b)*block, gotData[b], wantData[b])
		}
	}
}

// A backing format of raw wins over content that looks like qcow2.
func TestOpenBackingFormatRawHonoured(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	qemuimg.Run(t, "create", "-f", "qcow2", base, "1M") // qcow2 bytes, used as raw
	top := filepath.Join(dir, "top.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.img", "-F", "raw", top)
	img, err := Open(top, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	fi, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	if want := (fi.Size() + 511) &^ 511; img.Size() != want {
		t.Errorf("got size %d, want the raw file's %d rounded up to 512, %d", img.Size(), fi.Size(), want)
	}
	magic := make([]byte, 4)
	if _, err := img.ReadAt(magic, 0); err != nil {
		t.Fatal(err)
	}
	if string(magic) != "QFI\xfb" {
		t.Errorf("got %q at 0, want the qcow2 magic read as raw data", magic)
	}
}

func TestOpenChainErrors(t *testing.T) {
	qemuimg.Require(t)
	tests := []struct {
		name string
		// make builds the images in dir and returns the one to open.
		make func(t *testing.T, dir string) string
		want []string // substrings of the error
		is   error
	}{
		{
			name: "loop",
			make: func(t *testing.T, dir string) string {
				a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
				qemuimg.Run(t, "create", "-f", "qcow2", a, "1M")
				qemuimg.Run(t, "create", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
				qemuimg.Run(t, "rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a)
				return a
			},
			want: []string{"backing chain loops: a.qcow2 -> b.qcow2 -> a.qcow2"},
		},
		{
			name: "loop through another name",
			make: func(t *testing.T, dir string) string {
				a := filepath.Join(dir, "a.qcow2")
				qemuimg.Run(t, "create", "-f", "qcow2", a, "1M")
				if err := os.Symlink("a.qcow2", filepath.Join(dir, "link.qcow2")); err != nil {
					t.Fatal(err)
				}
				qemuimg.Run(t, "rebase", "-u", "-f", "qcow2", "-b", "link.qcow2", "-F", "qcow2", a)
				return a
			},
			want: []string{"backing chain loops: a.qcow2 -> link.qcow2 (the same file as a.qcow2)"},
		},
		{
			name: "too deep",
			make: func(t *testing.T, dir string) string {
				return deepChain(t, dir, MaxChainDepth+1)
			},
			want: []string{fmt.Sprintf("backing chain is longer than %d images", MaxChainDepth)},
		},
		{
			name: "missing backing file",
			make: func(t *testing.T, dir string) string {
				base := filepath.Join(dir, "base.raw")
				mid := filepath.Join(dir, "mid.qcow2")
				top := filepath.Join(dir, "top.qcow2")
				qemuimg.Run(t, "create", "-f", "raw", base, "1M")
				qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid)
				qemuimg.Run(t, "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
				if err := os.Remove(base); err != nil {
					t.Fatal(err)
				}
				return top
			},
			want: []string{`open backing file "DIR/base.raw" of "DIR/mid.qcow2"`, "no such file"},
			is:   fs.ErrNotExist,
		},
		{
			name: "missing image",
			make: func(t *testing.T, dir string) string { return filepath.Join(dir, "nothing.qcow2") },
			want: []string{"no such file"},
			is:   fs.ErrNotExist,
		},
		{
			name: "backing format unknown",
			make: func(t *testing.T, dir string) string {
				base := filepath.Join(dir, "base.raw")
				top := filepath.Join(dir, "top.qcow2")
				qemuimg.Run(t, "create", "-f", "raw", base, "1M")
				qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
				// Turn the format extension's "raw" into "vdi".
				b, err := os.ReadFile(top)
				if err != nil {
					t.Fatal(err)
				}
				i := bytes.Index(b[:4096], []byte("raw"))
				if i < 0 {
					t.Fatal("no backing format extension")
				}
				copy(b[i:], "vdi")
				if err := os.WriteFile(top, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return top
			},
			want: []string{`unsupported image format "vdi"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := tt.make(t, dir)
			img, err := Open(p, OpenOptions{ReadOnly: true})
			if err == nil {
				img.Close()
				t.Fatal("got no error")
			}
			msg := err.Error()
			if prefix := fmt.Sprintf("open %q: ", p); !strings.HasPrefix(msg, prefix) {
				t.Errorf("got %q, want it to start with %q", msg, prefix)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "DIR", dir)
				if !strings.Contains(msg, w) {
					t.Errorf("got %q, want it to contain %q", msg, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got %v, want an error wrapping %v", err, tt.is)
			}
		})
	}
}

// deepChain makes a chain of n images (a raw base and n-1 qcow2 overlays)
// and returns the top.
func deepChain(t *testing.T, dir string, n int) string {
	t.Helper()
	prev := "l0.raw"
	qemuimg.Run(t, "create", "-f", "raw", filepath.Join(dir, prev), "1M")
	format := "raw"
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("l%d.qcow2", i)
		qemuimg.Run(t, "create", "-f", "qcow2", "-b", prev, "-F", format, filepath.Join(dir, name))
		prev, format = name, "qcow2"
	}
	return filepath.Join(dir, prev)
}

func TestOpenChainAtTheLimit(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	top := deepChain(t, dir, MaxChainDepth)
	qemuimg.IO(t, filepath.Join(dir, "l0.raw"), "raw", "write -P 0x99 0 4k")
	img, err := Open(top, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("a chain of %d images: %v", MaxChainDepth, err)
	}
	defer img.Close()
	b := make([]byte, 4096)
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x99 || b[4095] != 0x99 {
		t.Errorf("got %#x...%#x, want the base's 0x99", b[0], b[4095])
	}
	e, err := img.Status(0, img.Size())
	if err != nil || e.Kind != ExtentData || e.Length != 4096 {
		t.Errorf("Status(0): got %+v, %v; want 4096 bytes of data from the base", e, err)
	}
}

// Without a backing format extension, the backing file is probed.
func TestOpenBackingFormatProbed(t *testing.T) {
	qemuimg.Require(t)
	for _, format := range []Format{FormatQcow2, FormatRaw} {
		t.Run(string(format), func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.img")
			top := filepath.Join(dir, "top.qcow2")
			qemuimg.Run(t, "create", "-f", string(format), base, "2M")
			qemuimg.IO(t, base, string(format), "write -P 0x7c 1M 4k")
			qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.img", "-F", string(format), top)
			hideBackingFormat(t, top)
			img, err := Open(top, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			b := make([]byte, 4096)
			if _, err := img.ReadAt(b, 1<<20); err != nil {
				t.Fatal(err)
			}
			if b[0] != 0x7c || b[4095] != 0x7c {
				t.Errorf("got %#x...%#x at 1M, want the %s base's 0x7c", b[0], b[4095], format)
			}
		})
	}
}

// hideBackingFormat turns the backing format extension of a qcow2 image
// into one of an unknown type, which readers skip: as old images, the
// image then does not say its backing file's format.
func hideBackingFormat(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b[:min(len(b), 4096)], []byte{0xe2, 0x79, 0x2a, 0xca})
	if i < 0 {
		t.Fatal("no backing format extension")
	}
	setHeaderByte(t, path, int64(i), 0x12)
	if got := qemuimg.ImageInfo(t, path).BackingFormat; got != "" {
		t.Fatalf("backing format still %q", got)
	}
}
