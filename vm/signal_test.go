package vm

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config/store"
)

// TestSignalChecksTheProcess: a signal goes to a VM's QEMU only while the
// PID still names that very process (its start time), a QEMU of this VM
// (its pidfile) and of ours: a forced stop checks before every signal, its
// SIGTERM as much as its SIGKILL.
func TestSignalChecksTheProcess(t *testing.T) {
	paths := store.HomePaths(t.TempDir())
	store, err := store.Open(paths)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(store)
	pidfile := paths.PIDFile("v")
	fake := exec.Command("bash", "-c", "sleep 600; :", "x", "-pidfile", pidfile)
	fake.Args[0] = "qemu-system-x86_64"
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fake.Process.Kill()
		fake.Wait()
	})
	pid := fake.Process.Pid
	var p *procInfo
	deadline := time.Now().Add(time.Minute)
	for {
		if p, err = readProc(pid); err == nil && argValue(p.Cmdline, "-pidfile") == pidfile {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never ran with -pidfile %s", pid, pidfile)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := Status{PID: pid, startTime: p.StartTime}
	reused := st
	reused.startTime++ // another process given the same PID
	for _, tt := range []struct {
		what string
		name string
		st   Status
	}{
		{"a later process with the same pid", "v", reused},
		{"another vm's QEMU", "w", st},
	} {
		if m.signal(tt.name, tt.st, syscall.SIGTERM) {
			t.Errorf("signal to %s: sent", tt.what)
		}
		if state := procState(pid); state == "" || strings.ContainsAny(state, "ZX") {
			t.Fatalf("signal to %s: the process %d was killed", tt.what, pid)
		}
	}
	if !m.signal("v", st, syscall.SIGTERM) {
		t.Errorf("signal to the vm's QEMU: not sent")
	}
	fake.Wait()
}

// procState is field 3 of /proc/PID/stat, or "" when there is no such process.
func procState(pid int) string {
	p, err := readProc(pid)
	if err != nil {
		return ""
	}
	return string(p.State)
}
