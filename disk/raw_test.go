package disk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRawImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := Create(p, CreateOptions{Format: FormatRaw, Size: 1000}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Format() != FormatRaw || img.Size() != 1024 {
		t.Fatalf("got %s of %d bytes, want raw of 1024 (whole sectors, as QEMU)", img.Format(), img.Size())
	}
	e, err := img.Status(0, img.Size())
	if err != nil || e.Kind != ExtentZero || e.Length != 1024 {
		t.Errorf("Status of a new image: got %+v, %v; want 1024 bytes of zeros", e, err)
	}
	data := bytes.Repeat([]byte{0xab}, 24)
	if _, err := img.WriteAt(data, 1000); err != nil {
		t.Fatalf("write the sector past the file's end: %v", err)
	}
	got := make([]byte, 1024)
	if n, err := img.ReadAt(got, 0); n != 1024 || err != nil {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(got[1000:], data) || !isZero(got[:1000]) {
		t.Errorf("read back the wrong bytes")
	}
	if e, err := img.Status(1000, 24); err != nil || e.Kind != ExtentData {
		t.Errorf("Status after a write: got %+v, %v; want data", e, err)
	}

	for _, tt := range []struct {
		name string
		do   func() error
		want string
	}{
		{"write past the end", func() error { _, err := img.WriteAt(data, 1020); return err }, "beyond the end"},
		{"write at a negative offset", func() error { _, err := img.WriteAt(data, -1); return err }, "negative offset"},
		{"read at a negative offset", func() error { _, err := img.ReadAt(data, -1); return err }, "negative offset"},
		{"status past the end", func() error { _, err := img.Status(1024, 1); return err }, "out of range"},
		{"status of nothing", func() error { _, err := img.Status(0, 0); return err }, "out of range"},
	} {
		if err := tt.do(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}

	// A writer excludes other readers (QEMU's locks): close it first.
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(p, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.WriteAt(data, 0); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("write to a read-only image: got %v", err)
	}
	if b, _ := os.ReadFile(p); len(b) != 1024 {
		t.Errorf("file is %d bytes, want 1024", len(b))
	}
}

// WriteZeroes punches a hole: the range reads as zeros and is no longer data.
func TestRawWriteZeroes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	z := img.(interface{ WriteZeroes(off, n int64) error })
	if err := z.WriteZeroes(256<<10, 512<<10); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !isZero(got[256<<10:768<<10]) || got[256<<10-1] != 1 || got[768<<10] != 1 {
		t.Errorf("zeroed the wrong range")
	}
	if e, err := img.Status(256<<10, 512<<10); err != nil || e.Kind != ExtentZero || e.Length != 512<<10 {
		t.Errorf("Status of the zeroed range: got %+v, %v; want a hole", e, err)
	}
}
