package disk

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestInfoMatchesQemuImg(t *testing.T) {
	qemuimg.Require(t)
	tests := []struct {
		name string
		make func(t *testing.T, dir string) string
	}{
		{"raw", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "a.raw")
			qemuimg.Run(t, "create", "-f", "raw", p, "3M")
			qemuimg.IO(t, p, "raw", "write -P 1 1M 64k")
			return p
		}},
		{"qcow2 default", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "a.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", p, "1G")
			return p
		}},
		{"compat 0.10", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "old.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", "-o", "compat=0.10", p, "10M")
			return p
		}},
		{"options", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "opts.img")
			qemuimg.Run(t, "create", "-f", "qcow2", "-o",
				"cluster_size=4k,refcount_bits=1,lazy_refcounts=on,compression_type=zstd", p, "1000")
			return p
		}},
		{"extended l2 64-bit refcounts", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "ext.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k,refcount_bits=64", p, "5M")
			qemuimg.IO(t, p, "qcow2", "write -P 3 0 4k")
			return p
		}},
		{"chain", func(t *testing.T, dir string) string {
			top, _, _ := chainImages(t, dir)
			return top
		}},
		{"backing without format", func(t *testing.T, dir string) string {
			base := filepath.Join(dir, "base.qcow2")
			top := filepath.Join(dir, "top.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", base, "2M")
			qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
			hideBackingFormat(t, top)
			return top
		}},
		{"dirty", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "dirty.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", "-o", "lazy_refcounts=on", p, "1M")
			// qemu-io aborts with the dirty bit set.
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write 0 64k", "-c", "abort", p)
			_ = cmd.Run()
			return p
		}},
		{"corrupt", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "corrupt.qcow2")
			qemuimg.Run(t, "create", "-f", "qcow2", p, "1M")
			setHeaderByte(t, p, 79, 0x02) // incompatible bit 1
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.make(t, t.TempDir())
			info, err := Info(t.Context(), p, InfoOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var want []map[string]any
			out := qemuimg.Run(t, "info", "--backing-chain", "--output=json", p)
			if err := json.Unmarshal([]byte(out), &want); err != nil {
				t.Fatalf("qemu-img info: %v\n%s", err, out)
			}
			i := 0
			for cur := info; cur != nil; cur = cur.BackingImage {
				if i >= len(want) {
					t.Fatalf("got a chain of more than the %d images qemu-img shows", len(want))
				}
				got := jsonMap(t, cur)
				delete(got, "backing-image")
				if !reflect.DeepEqual(got, want[i]) {
					t.Errorf("image %d:\ngot  %v\nwant %v", i, got, want[i])
				}
				if cur.BackingError != "" {
					t.Errorf("image %d: backing error %s", i, cur.BackingError)
				}
				i++
			}
			if i != len(want) {
				t.Errorf("got a chain of %d images, want %d", i, len(want))
			}

			// The text is qemu-img info --backing-chain's.
			text := qemuimg.Run(t, "info", "--backing-chain", p)
			if got := info.String(); got != text {
				t.Errorf("text:\ngot\n%s\nwant\n%s", got, text)
			}
		})
	}
}

// jsonMap round-trips v through JSON into a generic map.
func jsonMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// setHeaderByte overwrites one byte of a file.
func setHeaderByte(t *testing.T, path string, off int64, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, off); err != nil {
		t.Fatal(err)
	}
}

func TestInfoBrokenChain(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", a, "1M")
	qemuimg.Run(t, "create", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
	qemuimg.Run(t, "rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a)
	info, err := Info(t.Context(), a, InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.BackingImage == nil || info.BackingImage.BackingImage != nil {
		t.Fatalf("got %+v, want a and b only", info)
	}
	if want := "backing chain loops: a.qcow2 -> b.qcow2 -> a.qcow2"; info.BackingImage.BackingError != want {
		t.Errorf("got %q, want %q", info.BackingImage.BackingError, want)
	}

	missing := filepath.Join(dir, "missing.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", "-u", "-b", "gone.raw", "-F", "raw", missing, "1M")
	info, err = Info(t.Context(), missing, InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.BackingError, "gone.raw") || !strings.Contains(info.String(), "backing file error:") {
		t.Errorf("got %q and\n%s\nwant the missing backing file named", info.BackingError, info)
	}

	if _, err := Info(t.Context(), filepath.Join(dir, "none"), InfoOptions{}); err == nil || !strings.Contains(err.Error(), `info "`) {
		t.Errorf("got %v, want an error naming the file", err)
	}
}

func TestQemuSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{999, "999 B"},
		{1000, "0.977 KiB"},
		{4096, "4 KiB"},
		{200704, "196 KiB"},
		{1536, "1.5 KiB"},
		{1 << 30, "1 GiB"},
		{1073741824 + 512<<20, "1.5 GiB"},
		{1 << 62, "4 EiB"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.n); got != tt.want {
			t.Errorf("FormatSize(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}
