package vm_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// Hostile processes and definitions: another user's fake QEMU, duplicated
// IDs, options vmtui owns, a stopped QEMU.

// fakeQEMU starts a process that looks like the QEMU of pidfile (its argv[0]
// and -pidfile say so), running as uid and gid, until the test ends.
func fakeQEMU(t *testing.T, pidfile string, uid, gid uint32) int {
	t.Helper()
	fake := exec.Command("bash", "-c", "sleep 600; :", "x", "-pidfile", pidfile)
	fake.Args[0] = "qemu-system-x86_64"
	fake.Dir = "/"
	fake.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	pid := startProcess(t, fake)
	waitArgv(t, pid, pidfile)
	return pid
}

// TestFakeQEMUOfAnotherUser: another local user runs a program called
// qemu-system-x86_64 naming a VM's pidfile. It is not the VM's QEMU: the VM
// is listed stopped, starts, and a forced stop never signals the fake.
func TestFakeQEMUOfAnotherUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if testguest.InCI() {
			t.Fatal("running a process as another user needs root")
		}
		t.Skip("running a process as another user needs root (skipped: CI is not set)")
	}
	e := newGuestEnv(t)
	def := e.define("target")
	pidfile := e.paths.PIDFile("target")
	const nobody = 65534
	fake := fakeQEMU(t, pidfile, nobody, nobody)

	// Found by its command line (the VM has no runtime files yet).
	if got := e.status(e.m, "target"); got.State != vm.StateStopped || got.PID != 0 {
		t.Errorf("with another user's fake QEMU: state %s, pid %d (err %q); want stopped", got.State, got.PID, got.Err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("forced stop with only a fake QEMU: %v, want %v", err, vm.ErrNotRunning)
	}
	if !alive(fake) {
		t.Fatalf("the fake QEMU %d was killed", fake)
	}

	// The VM starts, and its list, stop and status ignore the fake.
	st := e.start(def, vm.StartOptions{Paused: true})
	if st.PID == fake {
		t.Fatalf("start reports the fake QEMU %d", fake)
	}
	if got := e.status(e.newManager(), "target"); got.State != vm.StatePaused || got.PID != st.PID {
		t.Errorf("started beside a fake: state %s, pid %d (err %q); want paused, pid %d", got.State, got.PID, got.Err, st.PID)
	}
	// Its runtime files lost, the VM's QEMU is found again, not the fake.
	os.Remove(pidfile)
	if got := e.status(e.newManager(), "target"); got.PID != st.PID {
		t.Errorf("pidfile lost: pid %d (state %s, err %q), want %d", got.PID, got.State, got.Err, st.PID)
	}
	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced stop: %v", err)
	}
	if alive(st.PID) || !alive(fake) {
		t.Errorf("after a forced stop: QEMU %d alive %t, fake %d alive %t; want only the fake", st.PID, alive(st.PID), fake, alive(fake))
	}

	// A pidfile naming the fake (written by hand: other users cannot
	// write it) names no QEMU of the VM either.
	e.fakeRuntimeFiles("target", fake, currentBootID(t))
	if got := e.status(e.m, "target"); got.State != vm.StateStopped || got.PID != 0 {
		t.Errorf("pidfile naming another user's fake: state %s, pid %d (err %q); want stopped", got.State, got.PID, got.Err)
	}
	if !alive(fake) {
		t.Errorf("the fake QEMU %d was killed", fake)
	}
}

// TestDuplicateIDRefused: two definitions with the same ID (one copied from
// the other, or edited) are both flagged, and neither starts.
func TestDuplicateIDRefused(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	a := e.define("first")
	e.define("second")
	file := e.paths.DefinitionFile("second")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "id = 2\n", "id = 1\n", 1)
	if edited == string(data) {
		t.Fatalf("no id = 2 in %s:\n%s", file, data)
	}
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for _, name := range []string{"first", "second"} {
		def, _ := e.m.Store().Lookup(name)
		if def == nil {
			t.Fatalf("lookup %s: not found", name)
		}
		_, err := e.m.Start(ctx, def, vm.StartOptions{Paused: true})
		if err == nil || !strings.Contains(err.Error(), a.File) || !strings.Contains(err.Error(), file) {
			t.Errorf("start %s with a duplicated id: %v; want an error naming %s and %s", name, err, a.File, file)
		}
		if pids := qemuPIDs(e.paths.PIDFile(name), false); len(pids) != 0 {
			t.Errorf("QEMUs %v run for %s, whose id is duplicated", pids, name)
		}
	}
}

// TestReservedExtraArgs: extra_args may not hold the options vmtui sets
// itself: a definition file with them is broken, and does not start.
func TestReservedExtraArgs(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for _, args := range []string{`["-daemonize"]`, `["--daemonize"]`, `["-pidfile", "/tmp/x.pid"]`, `["-chardev", "null,id=ser0"]`} {
		e.define("hostile")
		file := e.paths.DefinitionFile("hostile")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, append(data, []byte("extra_args = "+args+"\n")...), 0o600); err != nil {
			t.Fatal(err)
		}
		def, _ := e.m.Store().Lookup("hostile")
		if def == nil {
			t.Fatal("lookup hostile: not found")
		}
		_, err = e.m.Start(ctx, def, vm.StartOptions{Paused: true})
		if err == nil || !strings.Contains(err.Error(), "extra_args[0]") || !strings.Contains(err.Error(), "vmtui") {
			t.Errorf("start with extra_args = %s: %v; want an error naming extra_args[0]", args, err)
		} else {
			t.Logf("extra_args = %s: %v", args, err)
		}
		if pids := qemuPIDs(e.paths.PIDFile("hostile"), false); len(pids) != 0 {
			t.Errorf("extra_args = %s: QEMUs %v run", args, pids)
		}
		killQEMUs(t, e.home) // a -daemonize'd QEMU is no child of ours
		if err := e.m.Store().Remove("hostile"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStoppedQEMU: a QEMU stopped by SIGSTOP is reported as such, at once,
// not as a busy monitor; once continued it is well again; and a forced
// stop ends it.
func TestStoppedQEMU(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("frozen")
	st := e.start(def, vm.StartOptions{Paused: true})
	if err := syscall.Kill(st.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(st.PID, syscall.SIGCONT)
	waitProcState(t, st.PID, 'T')
	got := e.status(e.m, "frozen")
	if got.State != vm.StateBroken || !strings.Contains(got.Err, "is stopped (SIGSTOP)") || !strings.Contains(got.Err, "SIGCONT") {
		t.Errorf("SIGSTOPped QEMU: state %s, err %q; want broken, saying it is stopped", got.State, got.Err)
	}
	// At once: the answer does not wait on the monitor (a stopped QEMU
	// never answers), so a query whose context has already ended gets it
	// too, and no query connected to it (a connection would wait in the
	// backlog of its listener until QEMU runs again).
	ended, endNow := context.WithCancel(context.Background())
	endNow()
	if got, _, err := e.m.Status(ended, "frozen"); err != nil || got.State != vm.StateBroken || !strings.Contains(got.Err, "is stopped (SIGSTOP)") {
		t.Errorf("SIGSTOPped QEMU, queried with an ended context: state %s, err %q (%v); want broken, saying it is stopped", got.State, got.Err, err)
	}
	qmpPath, err := e.paths.QMPSocket("frozen")
	if err != nil {
		t.Fatal(err)
	}
	if n := queuedConns(qmpPath); n != 0 {
		t.Errorf("the queries of a SIGSTOPped QEMU connected to its monitor (%d connections wait)", n)
	}
	if err := syscall.Kill(st.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitProcState(t, st.PID, 'S', 'R')
	if got := e.status(e.m, "frozen"); got.State != vm.StatePaused {
		t.Errorf("after SIGCONT: state %s (err %q), want paused", got.State, got.Err)
	}

	// Stopped again, a forced stop still ends it.
	if err := syscall.Kill(st.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitProcState(t, st.PID, 'T')
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced stop of a stopped QEMU: %v", err)
	}
	if alive(st.PID) {
		t.Errorf("QEMU %d alive after a forced stop", st.PID)
	}
	e.requireNoRuntimeFiles("frozen")
}

// waitProcState waits until process pid is in one of the states (field 3
// of /proc/PID/stat).
func waitProcState(t *testing.T, pid int, states ...byte) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b := []byte(readFile("/proc/" + strconv.Itoa(pid) + "/stat"))
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
			for _, s := range states {
				if b[i+2] == s {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: %q, want state %q", pid, b, states)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
