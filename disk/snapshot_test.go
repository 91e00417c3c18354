package disk

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestSnapshotAPI: snapshots made by the API and by qemu-img, listed as
// qemu-img snapshot -l lists them, in Info as in qemu-img info (text and
// JSON), applied and deleted, qemu-img check clean throughout.
func TestSnapshotAPI(t *testing.T) {
	qemuimg.Require(t)
	ctx := t.Context()
	p := filepath.Join(t.TempDir(), "s.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", p, "8M")
	qemuimg.IO(t, p, "qcow2", "write -P 0x61 0 1M")
	qemuimg.Run(t, "snapshot", "-c", "by-qemu", p)
	qemuimg.IO(t, p, "qcow2", "write -P 0x62 0 512k")
	sn, err := CreateSnapshot(ctx, p, "by-vmtui")
	if err != nil {
		t.Fatal(err)
	}
	if sn.ID != "2" || sn.Name != "by-vmtui" || time.Since(sn.Date) > time.Minute {
		t.Fatalf("created %+v", sn)
	}
	qemuimg.RequireClean(t, p, false)
	if _, err := CreateSnapshot(ctx, p, "by-qemu"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("a second by-qemu: %v", err)
	}
	qemuimg.IO(t, p, "qcow2", "write -P 0x63 0 256k")

	// The list, as qemu-img snapshot -l prints it.
	sns, err := Snapshots(ctx, p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := WriteSnapshotList(&b, sns, time.Local); err != nil {
		t.Fatal(err)
	}
	if want := qemuimg.Run(t, "snapshot", "-l", p); b.String() != want {
		t.Errorf("list:\ngot\n%s\nwant\n%s", b.String(), want)
	}
	// Info, text and JSON.
	info, err := Info(ctx, p, InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := qemuimg.Run(t, "info", p); info.String() != want {
		t.Errorf("info text:\ngot\n%s\nwant\n%s", info.String(), want)
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(qemuimg.Run(t, "info", "--output=json", p)), &want); err != nil {
		t.Fatal(err)
	}
	if got := jsonMap(t, info); !reflect.DeepEqual(got["snapshots"], want["snapshots"]) {
		t.Errorf("info JSON snapshots:\ngot  %v\nwant %v", got["snapshots"], want["snapshots"])
	}

	// Apply and delete.
	read := func() byte {
		t.Helper()
		img, err := Open(p, OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		buf := make([]byte, 1)
		if _, err := img.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		return buf[0]
	}
	for _, c := range []struct {
		tag  string
		want byte
	}{{"by-qemu", 0x61}, {"by-vmtui", 0x62}, {"1", 0x61}} {
		if err := ApplySnapshot(ctx, p, c.tag); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != c.want {
			t.Errorf("after applying %s: %#x, want %#x", c.tag, got, c.want)
		}
		qemuimg.RequireClean(t, p, false)
	}
	if err := ApplySnapshot(ctx, p, "nope"); !errors.Is(err, ErrSnapshotNotFound) || !strings.Contains(err.Error(), p) {
		t.Errorf("apply of a missing snapshot: %v", err)
	}
	for _, tag := range []string{"by-qemu", "by-vmtui"} {
		if err := DeleteSnapshot(ctx, p, tag); err != nil {
			t.Fatal(err)
		}
		qemuimg.RequireClean(t, p, false)
	}
	if out := qemuimg.Run(t, "snapshot", "-l", p); out != "" {
		t.Errorf("qemu-img still lists %q", out)
	}
	if info, err := Info(ctx, p, InfoOptions{}); err != nil || info.Snapshots != nil {
		t.Errorf("info after deleting all: %v, %v", info.Snapshots, err)
	}
}

// TestSnapshotRefusesAnImageInUse: a running VM's disk (held by qemu-io) is
// refused by every snapshot change, and listed only with force-share; a
// raw image has no snapshots.
func TestSnapshotRefusesAnImageInUse(t *testing.T) {
	qemuimg.Require(t)
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "busy.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", p, "1M")
	qemuimg.Run(t, "snapshot", "-c", "s", p)
	holdWithQEMU(t, p, "qcow2", false)
	if _, err := CreateSnapshot(ctx, p, "x"); !errors.Is(err, ErrInUse) {
		t.Errorf("create: %v", err)
	}
	if err := ApplySnapshot(ctx, p, "s"); !errors.Is(err, ErrInUse) {
		t.Errorf("apply: %v", err)
	}
	if err := DeleteSnapshot(ctx, p, "s"); !errors.Is(err, ErrInUse) {
		t.Errorf("delete: %v", err)
	}
	if _, err := Snapshots(ctx, p, OpenOptions{}); !errors.Is(err, ErrInUse) {
		t.Errorf("list: %v", err)
	}
	if sns, err := Snapshots(ctx, p, OpenOptions{ForceShare: true}); err != nil || len(sns) != 1 {
		t.Errorf("list -U: %v, %v", sns, err)
	}
	raw := filepath.Join(dir, "r.raw")
	qemuimg.Run(t, "create", "-q", "-f", "raw", raw, "1M")
	if _, err := CreateSnapshot(ctx, raw, "x"); err == nil || !strings.Contains(err.Error(), "raw image has no internal snapshots") {
		t.Errorf("raw: %v", err)
	}
}
