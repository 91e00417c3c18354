package disk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestCommit(t *testing.T) {
	qemuimg.Require(t)
	tests := []struct {
		name       string
		baseFormat Format
		size       string // of the overlay; the base is 4M
	}{
		{"into raw", FormatRaw, "4M"},
		{"into qcow2", FormatQcow2, "4M"},
		{"into a smaller raw", FormatRaw, "6M"},
		{"into a smaller qcow2", FormatQcow2, "6M"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.img")
			overlay := filepath.Join(dir, "overlay.qcow2")
			qemuimg.Run(t, "create", "-f", string(tt.baseFormat), base, "4M")
			qemuimg.IO(t, base, string(tt.baseFormat), "write -P 0x11 0 4M")
			qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.img", "-F", string(tt.baseFormat), overlay, tt.size)
			qemuimg.IO(t, overlay, "qcow2",
				"write -P 0x22 64k 64k",  // a whole cluster
				"write -P 0x23 300k 10k", // part of a cluster (copied on write)
				"write -z 1M 128k",       // zero clusters over data
				"write -P 0x24 3M 1M")
			if tt.size == "6M" {
				qemuimg.IO(t, overlay, "qcow2", "write -P 0x25 5M 4k")
			}
			before, err := os.ReadFile(overlay)
			if err != nil {
				t.Fatal(err)
			}
			if err := Commit(t.Context(), overlay, CommitOptions{}); err != nil {
				t.Fatal(err)
			}
			qemuimg.Compare(t, base, string(tt.baseFormat), overlay, "qcow2")
			if got, want := qemuimg.ImageInfo(t, base).VirtualSize, qemuimg.ImageInfo(t, overlay).VirtualSize; got != want {
				t.Errorf("base size: got %d, want the overlay's %d", got, want)
			}
			if tt.baseFormat == FormatQcow2 {
				qemuimg.RequireClean(t, base, false)
			}
			qemuimg.IO(t, base, string(tt.baseFormat), "read -P 0 1M 128k", "read -P 0x11 0 64k", "read -P 0x23 300k 10k")
			after, err := os.ReadFile(overlay)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("the overlay changed")
			}
		})
	}
}

func TestCommitErrors(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "a.raw")
	alone := filepath.Join(dir, "alone.qcow2")
	qemuimg.Run(t, "create", "-f", "raw", raw, "1M")
	qemuimg.Run(t, "create", "-f", "qcow2", alone, "1M")
	for _, tt := range []struct{ path, want string }{
		{raw, "a raw image has no backing file"},
		{alone, "no backing file"},
		{filepath.Join(dir, "none"), "no such file"},
	} {
		err := Commit(t.Context(), tt.path, CommitOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path) {
			t.Errorf("commit %s: got %v, want an error naming it and containing %q", tt.path, err, tt.want)
		}
	}
}
