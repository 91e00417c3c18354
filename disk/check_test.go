package disk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

func TestCheck(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.img")
	qemuimg.Run(t, "create", "-f", "qcow2", p, "8M")
	qemuimg.IO(t, p, "qcow2", "write -P 1 0 1M", "write -c -P 2 2M 64k")
	res, err := Check(t.Context(), p, qcow2.RepairNone, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := qemuimg.Check(t, p)
	if res.Corruptions != 0 || res.Leaks != 0 || res.CheckErrors != 0 ||
		res.TotalClusters != want.TotalClusters || res.AllocatedClusters != want.AllocatedClusters ||
		res.CompressedClusters != want.CompressedClusters || res.ImageEndOffset != want.ImageEndOffset {
		t.Errorf("got %+v\nwant %+v", res, want)
	}

	raw := filepath.Join(dir, "a.qcow2") // raw, whatever the name says
	qemuimg.Run(t, "create", "-f", "raw", raw, "1M")
	if _, err := Check(t.Context(), raw, qcow2.RepairNone, CheckOptions{}); !errors.Is(err, ErrCheckNotSupported) || !strings.Contains(err.Error(), raw) {
		t.Errorf("raw: got %v, want an error naming it and wrapping ErrCheckNotSupported", err)
	}
	if _, err := Check(t.Context(), filepath.Join(dir, "none"), qcow2.RepairNone, CheckOptions{}); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("missing: got %v, want an error naming the file", err)
	}
}

// TestCheckTruncated: the first 100,000 bytes of an image with data are a
// damaged image, which check reports as qemu-img check does (exit status 2,
// the same messages), not a failed check. A repair it cannot make is refused
// with the check's result.
func TestCheckTruncated(t *testing.T) {
	qemuimg.Require(t)
	p := filepath.Join(t.TempDir(), "cut.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", p, "64M")
	qemuimg.IO(t, p, "qcow2", "write -P 0x55 0 3M")
	if err := os.Truncate(p, 100000); err != nil {
		t.Fatal(err)
	}
	res, err := Check(t.Context(), p, qcow2.RepairNone, CheckOptions{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := qemuimg.Check(t, p)
	if want.ExitCode != 2 || res.Corruptions != want.Corruptions || res.Leaks != want.Leaks || res.CheckErrors != want.CheckErrors {
		t.Errorf("got %d corruptions, %d leaks, %d check errors; qemu-img check: %d, %d, %d (exit %d)",
			res.Corruptions, res.Leaks, res.CheckErrors, want.Corruptions, want.Leaks, want.CheckErrors, want.ExitCode)
	}
	if got := strings.Join(res.Messages, "\n") + "\n"; got != want.Stderr {
		t.Errorf("messages:\n%s\nqemu-img check:\n%s", got, want.Stderr)
	}
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err = Check(t.Context(), p, qcow2.RepairAll, CheckOptions{})
	if err == nil || res == nil || res.Corruptions == 0 {
		t.Errorf("Check -r all: %+v, %v; want the corruptions and an error refusing the repair", res, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Errorf("a refused repair changed the image")
	}
}
