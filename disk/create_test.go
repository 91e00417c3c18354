package disk

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestCreate(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img") // qcow2, whatever the name says
	qemuimg.Run(t, "create", "-f", "qcow2", base, "3M")
	rawBase := filepath.Join(dir, "base.raw")
	qemuimg.Run(t, "create", "-f", "raw", rawBase, "5M")
	tests := []struct {
		name string
		opts CreateOptions
		want qemuimg.Info
	}{
		{"raw", CreateOptions{Format: FormatRaw, Size: 10 * oneMiB},
			qemuimg.Info{Format: "raw", VirtualSize: 10 * oneMiB}},
		{"qcow2", CreateOptions{Size: 1 << 30},
			qemuimg.Info{Format: "qcow2", VirtualSize: 1 << 30, ClusterSize: 65536}},
		{"qcow2 rounds to 512", CreateOptions{Size: 1000, ClusterSize: 4096},
			qemuimg.Info{Format: "qcow2", VirtualSize: 1024, ClusterSize: 4096}},
		{"qcow2 preallocated", CreateOptions{Size: 4 * oneMiB, Preallocation: "metadata"},
			qemuimg.Info{Format: "qcow2", VirtualSize: 4 * oneMiB, ClusterSize: 65536}},
		{"backing qcow2 detected", CreateOptions{BackingFile: "base.img"},
			qemuimg.Info{Format: "qcow2", VirtualSize: 3 * oneMiB, ClusterSize: 65536,
				BackingFilename: "base.img", BackingFormat: "qcow2"}},
		{"backing raw same size", CreateOptions{BackingFile: rawBase, Size: 5 * oneMiB},
			qemuimg.Info{Format: "qcow2", VirtualSize: 5 * oneMiB, ClusterSize: 65536,
				BackingFilename: rawBase, BackingFormat: "raw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := Create(p, tt.opts); err != nil {
				t.Fatal(err)
			}
			got := qemuimg.ImageInfo(t, p)
			if got.Format != tt.want.Format || got.VirtualSize != tt.want.VirtualSize ||
				got.ClusterSize != tt.want.ClusterSize || got.BackingFilename != tt.want.BackingFilename ||
				got.BackingFormat != tt.want.BackingFormat {
				t.Errorf("qemu-img info:\ngot  %+v\nwant %+v", got, tt.want)
			}
			if got.Format == "qcow2" {
				qemuimg.RequireClean(t, p, false)
			} else if got.ActualSize != 0 {
				t.Errorf("raw image allocates %d bytes, want a sparse file", got.ActualSize)
			}
			if tt.opts.Preallocation == "metadata" {
				// Every cluster is allocated, reading as zeros.
				for _, e := range qemuMap(t, p, FormatQcow2) {
					if !e.Data || !e.Zero {
						t.Errorf("preallocated image: extent %+v, want allocated zeros", e)
					}
				}
			}
			// What is created refuses to be created again.
			err := Create(p, tt.opts)
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("create again: got %v, want an error wrapping fs.ErrExist", err)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", base, "3M")
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		opts CreateOptions
		want string
		is   error
	}{
		{"existing raw", existing, CreateOptions{Format: FormatRaw, Size: oneMiB}, "exists", fs.ErrExist},
		{"existing qcow2", existing, CreateOptions{Size: oneMiB}, "exists", fs.ErrExist},
		{"existing with backing", existing, CreateOptions{BackingFile: "base.qcow2"}, "exists", fs.ErrExist},
		{"size differs from backing", filepath.Join(dir, "a"), CreateOptions{BackingFile: "base.qcow2", Size: 4 * oneMiB},
			"differs from the size of the backing file", nil},
		{"missing backing", filepath.Join(dir, "b"), CreateOptions{BackingFile: "none.qcow2"}, "none.qcow2", fs.ErrNotExist},
		{"raw with backing", filepath.Join(dir, "c"), CreateOptions{Format: FormatRaw, BackingFile: "base.qcow2"},
			"cannot have a backing file", nil},
		{"bad cluster size", filepath.Join(dir, "d"), CreateOptions{Size: oneMiB, ClusterSize: 3000}, "cluster", nil},
		{"unknown format", filepath.Join(dir, "e"), CreateOptions{Format: "vdi", Size: oneMiB}, `"vdi"`, nil},
		{"negative size", filepath.Join(dir, "f"), CreateOptions{Size: -1}, "negative", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Create(tt.path, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("got %v, want an error naming %q and containing %q", err, tt.path, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got %v, want an error wrapping %v", err, tt.is)
			}
			if tt.path == existing {
				if b, _ := os.ReadFile(existing); string(b) != "keep me" {
					t.Errorf("existing file changed to %q", b)
				}
			} else if _, err := os.Lstat(tt.path); err == nil {
				t.Errorf("%s left behind", tt.path)
			}
		})
	}
}

// Images made by Create open and read back what was written.
func TestCreateThenWrite(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "new.qcow2")
	if err := Create(p, CreateOptions{Size: 2 * oneMiB, CompressionType: qcow2.CompressionZstd}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("hello"), 70000); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, p, false)
	qemuimg.IO(t, p, "qcow2", "read -P 0x68 70000 1", "read -P 0 0 65536")
	if got := qemuimg.ImageInfo(t, p).FormatSpecific.Data.CompressionType; got != "zstd" {
		t.Errorf("compression type: got %s, want zstd", got)
	}
}

func TestBackingName(t *testing.T) {
	for _, tt := range []struct{ cwd, overlay, base, want string }{
		{"/w", "new.qcow2", "base.qcow2", "base.qcow2"},
		{"/w", "sub/new.qcow2", "base.qcow2", "../base.qcow2"},
		{"/w", "sub/new.qcow2", "sub/base.qcow2", "base.qcow2"},
		{"/w", "a/b/new.qcow2", "c/base.qcow2", "../../c/base.qcow2"},
		{"/w", "new.qcow2", "images/base.qcow2", "images/base.qcow2"},
		{"/w", "new.qcow2", "/srv/base.qcow2", "/srv/base.qcow2"},
		{"/home/u", "/tmp/new.qcow2", "base.qcow2", "../home/u/base.qcow2"},
		{"/home/u", "/tmp/new.qcow2", "../v/base.qcow2", "../home/v/base.qcow2"},
	} {
		if got := BackingName(tt.cwd, tt.overlay, tt.base); got != tt.want {
			t.Errorf("BackingName(%q, %q, %q) = %q, want %q", tt.cwd, tt.overlay, tt.base, got, tt.want)
		}
	}
}
