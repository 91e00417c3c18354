package vm

import (
	"context"
	"errors"
	"time"

	"github.com/vmtui/vmtui/config"
)

// Snapshot is one snapshot of a VM: a tag present in all its qcow2 disks.
type Snapshot struct {
	ID          string // the first disk's snapshot ID
	Tag         string
	VMStateSize int64 // bytes of RAM and device state; 0 for a disk-only snapshot
	Date        time.Time
	VMClock     time.Duration
}

var errSnapshotNotYet = errors.New("vm snapshots: not yet implemented")

// Snapshots lists the snapshots of the VM def.
func (m *Manager) Snapshots(ctx context.Context, def *config.VM) ([]Snapshot, error) {
	return nil, errSnapshotNotYet
}

// CreateSnapshot takes a snapshot named tag of the VM def.
func (m *Manager) CreateSnapshot(ctx context.Context, def *config.VM, tag string) error {
	return errSnapshotNotYet
}

// RevertSnapshot puts the VM def back to its snapshot tag.
func (m *Manager) RevertSnapshot(ctx context.Context, def *config.VM, tag string) error {
	return errSnapshotNotYet
}

// DeleteSnapshot deletes the snapshot tag of the VM def.
func (m *Manager) DeleteSnapshot(ctx context.Context, def *config.VM, tag string) error {
	return errSnapshotNotYet
}
