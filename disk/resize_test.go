package disk

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestResize(t *testing.T) {
	qemuimg.Require(t)
	tests := []struct {
		name   string
		format Format
		opts   []string
		from   string
		to     int64
	}{
		{"raw", FormatRaw, nil, "3M", 5*oneMiB + 512},
		{"qcow2", FormatQcow2, nil, "3M", 64 * oneMiB},
		{"qcow2 across L2 tables", FormatQcow2, []string{"-o", "cluster_size=512"}, "1M", 40 * oneMiB},
		{"qcow2 same size", FormatQcow2, nil, "3M", 3 * oneMiB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "disk.img")
			args := append([]string{"create", "-f", string(tt.format)}, tt.opts...)
			qemuimg.Run(t, append(args, p, tt.from)...)
			qemuimg.IO(t, p, string(tt.format), "write -P 0x5e 0 64k", "write -P 0x5f 1000k 24k")
			orig := filepath.Join(dir, "orig.raw")
			qemuimg.Run(t, "convert", "-f", string(tt.format), "-O", "raw", p, orig)

			if err := Resize(t.Context(), p, tt.to); err != nil {
				t.Fatal(err)
			}
			if got := qemuimg.ImageInfo(t, p).VirtualSize; got != tt.to {
				t.Errorf("size: got %d, want %d", got, tt.to)
			}
			if tt.format == FormatQcow2 {
				qemuimg.RequireClean(t, p, false)
			}
			// The old content is kept and the new tail reads as zeros.
			qemuimg.Compare(t, orig, "raw", p, string(tt.format))
			qemuimg.IO(t, p, string(tt.format), "read -P 0x5f 1000k 24k")
		})
	}
}

func TestResizeRefusesShrink(t *testing.T) {
	qemuimg.Require(t)
	for _, format := range []Format{FormatRaw, FormatQcow2} {
		t.Run(string(format), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.img")
			qemuimg.Run(t, "create", "-f", string(format), p, "4M")
			err := Resize(t.Context(), p, 2*oneMiB)
			if !errors.Is(err, ErrShrink) {
				t.Fatalf("got %v, want an error wrapping ErrShrink", err)
			}
			if got := qemuimg.ImageInfo(t, p).VirtualSize; got != 4*oneMiB {
				t.Errorf("size changed to %d", got)
			}
		})
	}
}
