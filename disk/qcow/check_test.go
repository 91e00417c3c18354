package qcow

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// qemuImage makes a 2 MiB qcow image with qemu-img and qemu-io: 4 KiB
// clusters, 512-entry L2 tables, clusters 0, 1 and 300 written.
func qemuImage(t *testing.T) string {
	t.Helper()
	qemuimg.Require(t)
	p := filepath.Join(t.TempDir(), "c.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", p, "4M")
	qemuimg.IO(t, p, "qcow", "write -P 1 0 8k", "write -P 2 1200k 4k", "write -P 3 3M 4k")
	return p
}

func checkFile(t *testing.T, p string) *CheckResult {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Check(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// l2Entry returns the file offset of the L2 entry of virtual cluster ci.
func l2Entry(t *testing.T, p string, ci int64) int64 {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	h, err := ParseHeader(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(h.L1TableOffset)+(ci>>h.L2Bits)*8); err != nil {
		t.Fatal(err)
	}
	return int64(binary.BigEndian.Uint64(b[:])) + (ci&(h.L2Entries()-1))*8
}

func patch(t *testing.T, p string, off int64, v uint64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestCheckClean(t *testing.T) {
	p := qemuImage(t)
	res := checkFile(t, p)
	if res.Corruptions != 0 || res.Leaks != 0 || res.AllocatedClusters != 4 {
		t.Fatalf("check of a qemu-made image: %+v", res)
	}
}

func TestCheckFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, p string)
		corrupt bool
		want    string
	}{
		{"past EOF", func(t *testing.T, p string) { patch(t, p, l2Entry(t, p, 1), 1<<40) }, true, "past the end"},
		{"misaligned", func(t *testing.T, p string) {
			e := l2Entry(t, p, 1)
			patch(t, p, e, uint64(readU64(t, p, e)+512))
		}, true, "not aligned"},
		{"used twice", func(t *testing.T, p string) {
			patch(t, p, l2Entry(t, p, 1), readU64(t, p, l2Entry(t, p, 0)))
		}, true, "used twice"},
		{"over the L2 table", func(t *testing.T, p string) {
			patch(t, p, l2Entry(t, p, 1), uint64(l2Entry(t, p, 0)))
		}, true, "overlaps"},
		{"leak", func(t *testing.T, p string) {
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()+8192); err != nil {
				t.Fatal(err)
			}
		}, false, "Leaked cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := qemuImage(t)
			tc.damage(t, p)
			res := checkFile(t, p)
			if tc.corrupt && res.Corruptions == 0 || !tc.corrupt && (res.Leaks != 2 || res.Corruptions != 0) {
				t.Fatalf("%+v", res)
			}
			if !strings.Contains(strings.Join(res.Messages, "\n"), tc.want) {
				t.Fatalf("messages %q lack %q", res.Messages, tc.want)
			}
		})
	}
}

func readU64(t *testing.T, p string, off int64) uint64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint64(b[off:])
}

// TestCheckAfterWrites checks images this package writes, compressed
// clusters included: clean, no leaks.
func TestCheckAfterWrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.qcow")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := Create(f, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := openFile(t, p, false)
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i % 7)
	}
	for c := int64(0); c < 20; c++ {
		if err := img.WriteCompressed(c*4096, buf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := img.WriteAt(buf[:100], 500<<10); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	res := checkFile(t, p)
	if res.Corruptions != 0 || res.Leaks != 0 || res.CompressedClusters != 20 || res.AllocatedClusters != 21 {
		t.Fatalf("%+v", res)
	}
}
