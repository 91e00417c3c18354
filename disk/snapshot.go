package disk

// Internal snapshots of qcow2 images, as qemu-img snapshot makes, lists,
// applies and deletes them (the engine's qcow2.Image.CreateSnapshot and
// friends), with the image locked as QEMU locks it.

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
)

// Snapshot is one internal snapshot of a qcow2 image.
type Snapshot = qcow2.Snapshot

// ErrSnapshotNotFound is wrapped by the errors of ApplySnapshot and
// DeleteSnapshot when no snapshot has the ID or name given.
var ErrSnapshotNotFound = qcow2.ErrSnapshotNotFound

// Snapshots lists the internal snapshots of the qcow2 image at path. With
// ForceShare it reads an image that a running QEMU writes (qemu-img
// snapshot -l -U); opts.ReadOnly is implied.
func Snapshots(ctx context.Context, path string, opts OpenOptions) ([]Snapshot, error) {
	var sns []Snapshot
	err := withQcow2(ctx, path, OpenOptions{ReadOnly: true, ForceShare: opts.ForceShare}, func(img *qcow2.Image) error {
		var err error
		sns, err = img.Snapshots()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %q: %w", path, err)
	}
	return sns, nil
}

// CreateSnapshot takes a disk-only snapshot named name of the qcow2 image
// at path (qemu-img snapshot -c), dated now, and returns it. A name that a
// snapshot has already, as its name or ID, is refused. The image must not
// be in use: a running VM's disk is refused with an error wrapping ErrInUse.
func CreateSnapshot(ctx context.Context, path, name string) (Snapshot, error) {
	var sn Snapshot
	err := withQcow2(ctx, path, OpenOptions{}, func(img *qcow2.Image) error {
		var err error
		// qemu-img records an instruction count of 0, not "none".
		sn, err = img.CreateSnapshot(qcow2.Snapshot{Name: name, Date: time.Now(), ICount: 0})
		return err
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q of %q: %w", name, path, err)
	}
	return sn, nil
}

// ApplySnapshot reverts the qcow2 image at path to the snapshot whose ID,
// else name, is idOrName (qemu-img snapshot -a).
func ApplySnapshot(ctx context.Context, path, idOrName string) error {
	err := withQcow2(ctx, path, OpenOptions{}, func(img *qcow2.Image) error { return img.ApplySnapshot(idOrName) })
	if err != nil {
		return fmt.Errorf("apply snapshot %q to %q: %w", idOrName, path, err)
	}
	return nil
}

// DeleteSnapshot deletes the snapshot whose ID, else name, is idOrName from
// the qcow2 image at path (qemu-img snapshot -d).
func DeleteSnapshot(ctx context.Context, path, idOrName string) error {
	err := withQcow2(ctx, path, OpenOptions{}, func(img *qcow2.Image) error { return img.DeleteSnapshot(idOrName) })
	if err != nil {
		return fmt.Errorf("delete snapshot %q of %q: %w", idOrName, path, err)
	}
	return nil
}

// withQcow2 opens the image at path (locked as Open locks it), runs fn on
// its qcow2 engine and closes it. Other formats are refused.
func withQcow2(ctx context.Context, path string, opts OpenOptions, fn func(*qcow2.Image) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	img, err := Open(path, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := img.Close(); err == nil {
			err = cerr
		}
	}()
	q, ok := img.(*qcow2Image)
	if !ok {
		return fmt.Errorf("a %s image has no internal snapshots (convert it to qcow2: vmtui disk convert -O qcow2)", img.Format())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(q.img)
}

// WriteSnapshotList writes sns as qemu-img snapshot -l and qemu-img info
// list them (QEMU 7.2's bdrv_snapshot_dump), under the heading
// "Snapshot list:"; dates in loc.
func WriteSnapshotList(w io.Writer, sns []Snapshot, loc *time.Location) error {
	_, err := io.WriteString(w, "Snapshot list:\n"+
		fmt.Sprintf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"))
	if err != nil {
		return err
	}
	for _, sn := range sns {
		clock := FormatVMClock(sn.VMClock)
		icount := ""
		if sn.ICount != -1 {
			icount = strconv.FormatInt(sn.ICount, 10)
		}
		vmSize := FormatSize(int64(min(sn.VMStateSize, 1<<62)))
		date := sn.Date.In(loc).Format("2006-01-02 15:04:05")
		if _, err := fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s%11s\n", sn.ID, sn.Name, vmSize, date, clock, icount); err != nil {
			return err
		}
	}
	return nil
}

// FormatVMClock formats the guest's clock at a snapshot as qemu-img snapshot
// -l does: hours, minutes, seconds and milliseconds ("00:01:02.345").
func FormatVMClock(d time.Duration) string {
	d = max(d, 0)
	secs := int64(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, secs/60%60, secs%60, int64(d/time.Millisecond)%1000)
}

// SnapshotInfo is a snapshot as qemu-img info --output=json shows it.
type SnapshotInfo struct {
	ICount      *int64 `json:"icount,omitempty"`
	VMClockNsec int64  `json:"vm-clock-nsec"`
	Name        string `json:"name"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMClockSec  int64  `json:"vm-clock-sec"`
	ID          string `json:"id"`
	VMStateSize uint64 `json:"vm-state-size"`
}

// snapshotInfos converts snapshots to their qemu-img info form.
func snapshotInfos(sns []Snapshot) []SnapshotInfo {
	var out []SnapshotInfo
	for _, sn := range sns {
		si := SnapshotInfo{
			VMClockNsec: int64(sn.VMClock % time.Second),
			VMClockSec:  int64(sn.VMClock / time.Second),
			Name:        sn.Name,
			DateSec:     sn.Date.Unix(),
			DateNsec:    int64(sn.Date.Nanosecond()),
			ID:          sn.ID,
			VMStateSize: sn.VMStateSize,
		}
		if sn.ICount != -1 {
			ic := sn.ICount
			si.ICount = &ic
		}
		out = append(out, si)
	}
	return out
}
