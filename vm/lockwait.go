package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmtui/vmtui/config/store"
)

// stopLockWait bounds how long Stop waits for the VM's lock: a start ends
// within startTimeout (its QEMU is killed after that), so only a send, a
// save or a snapshot, or a hung command, holds it longer.
var stopLockWait = startTimeout + forceGrace

// lockBusyError is lockVM's error when the VM's lock stayed held.
type lockBusyError struct {
	holder string        // what holds it: "a save is in progress"
	waited time.Duration // for how long it was waited for
}

func (e *lockBusyError) Error() string {
	return fmt.Sprintf("%s, and did not end within %s: try again once it has ended, or stop it with -f", e.holder, e.waited)
}

// lockVM takes VM name's lock, waiting for it up to limit (and as long as
// ctx allows). It returns an error wrapping fs.ErrNotExist when the VM has
// no runtime directory, and a *lockBusyError naming what holds the lock
// when limit has passed.
func (m *Manager) lockVM(ctx context.Context, name string, limit time.Duration) (*store.FileLock, error) {
	lctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	l, err := store.Lock(lctx, m.paths.LockFile(name))
	if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
		return l, err
	}
	return nil, &lockBusyError{holder: m.lockHolder(name), waited: limit}
}

// lockHolder says what holds VM name's lock, from the marker files its
// holders leave in the runtime directory while they hold it.
func (m *Manager) lockHolder(name string) string {
	if _, err := os.Stat(m.paths.RuntimeFile(name, startingFileName)); err == nil {
		return "a start is in progress"
	}
	if b, err := os.ReadFile(m.paths.RuntimeFile(name, migratingFileName)); err == nil {
		// The marker holds what Send or Save was asked: "send vm NAME".
		switch {
		case strings.HasPrefix(string(b), "send "):
			return "a send is in progress"
		case strings.HasPrefix(string(b), "save "):
			return "a save is in progress"
		}
		return "a send or save is in progress"
	}
	if _, err := os.Stat(m.paths.RuntimeFile(name, snapshottingFileName)); err == nil {
		return "a snapshot operation is in progress"
	}
	return "another vmtui command holds the vm (a start, remove or snapshot)"
}

// snapshottingFileName marks a snapshot operation in progress (snapshot.go);
// it is only meaningful while the VM's lock is held.
const snapshottingFileName = "snapshotting"
