package vm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
)

// TestStaleSnapshotMarkerRemoved: the marker a snapshot operation leaves
// while it holds the VM's lock (which a stop waiting for the lock names) is
// kept while its writer holds the lock, and removed by the next status
// query, Status or List, once the lock is free: then its writer was killed,
// as the migrating marker of a killed send or save is.
func TestStaleSnapshotMarkerRemoved(t *testing.T) {
	t.Parallel()
	paths := store.HomePaths(filepath.Join(t.TempDir(), "home"))
	s, err := store.Open(paths)
	if err != nil {
		t.Fatal(err)
	}
	m := vm.NewManager(s)
	ctx := context.Background()
	marker := func(name string) string {
		t.Helper()
		if err := s.Create(&config.VM{Name: name, Memory: 128 << 20, CPUs: 1, Kernel: "/boot/vmlinuz-test"}); err != nil {
			t.Fatal(err)
		}
		if _, err := paths.EnsureRuntimeDir(name); err != nil {
			t.Fatal(err)
		}
		return paths.RuntimeFile(name, "snapshotting")
	}
	exists := func(path string) bool {
		_, err := os.Stat(path)
		return err == nil
	}

	// In progress: the lock is held, the marker kept.
	path := marker("snap")
	lock, err := store.Lock(ctx, paths.LockFile("snap"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	m.Status(qctx, "snap")
	cancel()
	if !exists(path) {
		t.Errorf("a status query removed the marker of a snapshot operation in progress")
	}
	// Its writer killed: the lock is free, the marker left.
	lock.Unlock()
	if _, _, err := m.Status(ctx, "snap"); err != nil {
		t.Fatal(err)
	}
	if exists(path) {
		t.Errorf("Status left the marker %q of a snapshot operation that was killed", path)
	}

	path = marker("listed")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.List(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(path) {
		t.Errorf("List left the marker %q of a snapshot operation that was killed", path)
	}
}
