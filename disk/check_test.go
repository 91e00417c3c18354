package disk

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"vmtui/disk/qcow2"
	"vmtui/internal/qemuimg"
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
