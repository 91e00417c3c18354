package disk

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/atomicfile"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// TestConvertTemporaryHasNoName: while converting, dst's directory holds no
// temporary file (it is an O_TMPFILE, which a killed process cannot leave
// behind), and dst appears complete at the end, locked until then.
func TestConvertTemporaryHasNoName(t *testing.T) {
	qemuimg.Require(t)
	src := sparseRaw(t, t.TempDir())
	for _, format := range []Format{FormatQcow2, FormatRaw} {
		t.Run(string(format), func(t *testing.T) {
			out := t.TempDir()
			dst := filepath.Join(out, "dst.img")
			var during []string
			err := Convert(context.Background(), src, dst, ConvertOptions{
				Format: format,
				Progress: func(done, total int64) {
					if done > 0 && done < total && during == nil {
						during = names(t, out)
						if during == nil {
							during = []string{}
						}
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if during == nil {
				t.Fatal("no progress part way: the test proves nothing")
			}
			if len(during) != 0 {
				t.Errorf("while converting, %s holds %q; want nothing (an unnamed temporary file)", out, during)
			}
			qemuimg.Compare(t, src, "raw", dst, string(format))
			assertNoTemp(t, out, "dst.img")
		})
	}
}

// TestConvertNamedTemporary: where O_TMPFILE is missing, the temporary file
// is named, locked for writing (as QEMU locks) while converting, and the
// next conversion to the same name removes those that conversions killed
// left, not those of running ones (package atomicfile tests this further).
func TestConvertNamedTemporary(t *testing.T) {
	qemuimg.Require(t)
	prev := atomicfile.UseTmpfile(false)
	t.Cleanup(func() { atomicfile.UseTmpfile(prev) })
	src := sparseRaw(t, t.TempDir())
	out := t.TempDir()
	dst := filepath.Join(out, "dst.qcow2")
	stale := filepath.Join(out, ".dst.qcow2.tmpstale")
	other := filepath.Join(out, ".other.qcow2.tmpstale")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("half an image"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A conversion still running holds its temporary file.
	f, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	running := f.Name()

	var temp string
	locked := false
	err = Convert(context.Background(), src, dst, ConvertOptions{
		Progress: func(done, total int64) {
			if done == 0 || done == total || temp != "" {
				return
			}
			for _, n := range names(t, out) {
				if strings.HasPrefix(n, ".dst.qcow2.tmp") && n != filepath.Base(running) {
					temp = filepath.Join(out, n)
				}
			}
			if temp == "" {
				return
			}
			g, err := os.Open(temp)
			if err != nil {
				t.Error(err)
				return
			}
			defer g.Close()
			locked, err = writerHolds(g)
			if err != nil {
				t.Error(err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if temp == "" || !locked {
		t.Errorf("while converting: temporary file %q, locked %v; want a named temporary file locked for writing", temp, locked)
	}
	qemuimg.Compare(t, src, "raw", dst, "qcow2")
	assertNoTemp(t, out, "dst.qcow2", filepath.Base(running), filepath.Base(other))
}

// TestConvertOutputCreatedMeanwhile: an output that appears while
// converting is kept, and the conversion fails leaving nothing else.
func TestConvertOutputCreatedMeanwhile(t *testing.T) {
	qemuimg.Require(t)
	src := sparseRaw(t, t.TempDir())
	for _, tmpfile := range []bool{true, false} {
		t.Run(map[bool]string{true: "O_TMPFILE", false: "named"}[tmpfile], func(t *testing.T) {
			prev := atomicfile.UseTmpfile(tmpfile)
			t.Cleanup(func() { atomicfile.UseTmpfile(prev) })
			out := t.TempDir()
			dst := filepath.Join(out, "dst.qcow2")
			err := Convert(context.Background(), src, dst, ConvertOptions{
				Progress: func(done, total int64) {
					if done == total {
						os.WriteFile(dst, []byte("keep me"), 0o644)
					}
				},
			})
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("got %v, want an error wrapping fs.ErrExist", err)
			}
			if b, _ := os.ReadFile(dst); string(b) != "keep me" {
				t.Errorf("the output made meanwhile changed to %q", b)
			}
			assertNoTemp(t, out, "dst.qcow2")
		})
	}
}
