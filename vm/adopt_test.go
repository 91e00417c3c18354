package vm_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/vm"
)

// loseRuntimeFiles removes a VM's runtime directory and its QMP sockets,
// wherever they are, as a cleaner of /run or /tmp would.
func (e *guestEnv) loseRuntimeFiles(name string) {
	e.t.Helper()
	for _, sock := range []func(string) (string, error){e.paths.QMPSocket, e.paths.EventsSocket} {
		p, err := sock(name)
		if err != nil {
			e.t.Fatal(err)
		}
		os.Remove(p)
	}
	if err := os.RemoveAll(e.paths.RuntimeDir(name)); err != nil {
		e.t.Fatal(err)
	}
}

// runtimeSnapshot describes a VM's runtime files: each file under the run
// directory with its type, size, modification time and (for regular files)
// content, and whether each QMP socket exists.
func (e *guestEnv) runtimeSnapshot(name string) string {
	e.t.Helper()
	var b strings.Builder
	filepath.WalkDir(e.paths.RunDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", path, err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", path, err)
			return nil
		}
		fmt.Fprintf(&b, "%s %v %d %d", path, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			fmt.Fprintf(&b, " %q", readFile(path))
		}
		b.WriteByte('\n')
		return nil
	})
	for _, sock := range []func(string) (string, error){e.paths.QMPSocket, e.paths.EventsSocket} {
		p, err := sock(name)
		if err != nil {
			e.t.Fatal(err)
		}
		_, err = os.Lstat(p)
		fmt.Fprintf(&b, "%s exists: %t\n", p, err == nil)
	}
	return b.String()
}

// requireAdopted fails the test unless the VM's pidfile names pid and its
// boot ID is this boot's.
func (e *guestEnv) requireAdopted(name string, pid int, how string) {
	e.t.Helper()
	if pf := strings.TrimSpace(readFile(e.paths.PIDFile(name))); pf != strconv.Itoa(pid) {
		e.t.Errorf("%s: pidfile %q, want %d", how, pf, pid)
	}
	if id := strings.TrimSpace(readFile(e.paths.BootIDFile(name))); id != currentBootID(e.t) {
		e.t.Errorf("%s: boot id %q, want %q", how, id, currentBootID(e.t))
	}
}

// TestInspectionWritesNothing: List and Status of a VM whose QEMU lost its
// pidfile and the record of its pty, then its whole runtime directory,
// show that QEMU and write nothing. Adopt writes the files again.
func TestInspectionWritesNothing(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("quiet")
	st := e.start(def, vm.StartOptions{Paused: true})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	inspect := func(what string, want vm.State) {
		t.Helper()
		before := e.runtimeSnapshot("quiet")
		m2 := e.newManager() // another vmtui, which never knew the process
		for range 3 {
			if got := e.status(m2, "quiet"); got.PID != st.PID || got.State != want {
				t.Errorf("%s: list: state %s, pid %d (err %q); want %s, pid %d", what, got.State, got.PID, got.Err, want, st.PID)
			}
			got, _, err := m2.Status(ctx, "quiet")
			if err != nil || got.PID != st.PID || got.State != want {
				t.Errorf("%s: status: state %s, pid %d (err %q), %v; want %s, pid %d", what, got.State, got.PID, got.Err, err, want, st.PID)
			}
			if want == vm.StatePaused && got.TTY != st.TTY {
				t.Errorf("%s: status: tty %q, want %q (from the monitor)", what, got.TTY, st.TTY)
			}
		}
		if after := e.runtimeSnapshot("quiet"); after != before {
			t.Errorf("%s: inspecting changed the runtime files:\nbefore\n%s\nafter\n%s", what, before, after)
		}
	}

	// The pidfile and the pty's record lost; the monitor still answers.
	for _, f := range []string{e.paths.PIDFile("quiet"), e.paths.PTYFile("quiet"), e.paths.BootIDFile("quiet")} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	inspect("pidfile lost", vm.StatePaused)
	got, err := e.m.Adopt(ctx, def)
	if err != nil || got.PID != st.PID || got.State != vm.StatePaused {
		t.Fatalf("adopt: state %s, pid %d (err %q), %v; want paused, pid %d", got.State, got.PID, got.Err, err, st.PID)
	}
	e.requireAdopted("quiet", st.PID, "adopt")
	if pty := strings.TrimSpace(readFile(e.paths.PTYFile("quiet"))); pty != st.TTY {
		t.Errorf("adopt: pty record %q, want %q", pty, st.TTY)
	}

	// The whole runtime directory lost, the monitor's sockets with it.
	e.loseRuntimeFiles("quiet")
	inspect("runtime directory lost", vm.StateBroken)

	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced stop: %v", err)
	}
	if alive(st.PID) {
		t.Errorf("QEMU %d runs after a forced stop", st.PID)
	}
	e.requireNoRuntimeFiles("quiet")
}

// TestLostRuntimeFiles deletes a running QEMU's runtime files: List finds
// it again by its command line and shows it broken (its monitor is gone);
// Start refuses to start a second QEMU and adopts it, as Adopt does; a
// forced stop kills it.
func TestLostRuntimeFiles(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("orphan")
	st := e.start(def, vm.StartOptions{Paused: true})
	e.loseRuntimeFiles("orphan")

	m2 := e.newManager() // another vmtui, which never knew the process
	got := e.status(m2, "orphan")
	if got.PID != st.PID || got.State != vm.StateBroken || got.Err == "" {
		t.Fatalf("after losing the runtime files: state %s, pid %d, err %q; want broken, pid %d, an error", got.State, got.PID, got.Err, st.PID)
	}
	t.Logf("found: %s: %s", got.State, got.Err)
	// Starting it again must not start a second QEMU.
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := m2.Start(ctx, def, vm.StartOptions{}); !errors.Is(err, vm.ErrAlreadyRunning) {
		t.Errorf("start of a vm that lost its runtime files: %v, want ErrAlreadyRunning", err)
	}
	if pids := qemuPIDs(e.paths.PIDFile("orphan"), false); len(pids) != 1 {
		t.Errorf("QEMUs of the vm: %v, want only %d", pids, st.PID)
	}
	e.requireAdopted("orphan", st.PID, "start")

	// Lost again, and adopted by Adopt.
	e.loseRuntimeFiles("orphan")
	if got, err := m2.Adopt(ctx, def); err != nil || got.PID != st.PID {
		t.Errorf("adopt: pid %d (state %s, err %q), %v; want pid %d", got.PID, got.State, got.Err, err, st.PID)
	}
	e.requireAdopted("orphan", st.PID, "adopt")

	if err := m2.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced stop: %v", err)
	}
	if alive(st.PID) {
		t.Errorf("QEMU %d runs after a forced stop", st.PID)
	}
	if got := e.status(m2, "orphan"); got.State != vm.StateStopped {
		t.Errorf("after forced stop: state %s, want stopped", got.State)
	}
	e.requireNoRuntimeFiles("orphan")
	// Adopting a VM that does not run writes nothing.
	if got, err := m2.Adopt(ctx, def); err != nil || got.Running() {
		t.Errorf("adopt of a stopped vm: state %s, pid %d, %v; want stopped", got.State, got.PID, err)
	}
	e.requireNoRuntimeFiles("orphan")
}
