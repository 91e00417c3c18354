package vm_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/vmtui/vmtui/vm"
)

// TestKilledMidSend SIGKILLs `vmtui send` while it writes the stream: the
// VM is left paused (or running), listed, and goes on once unpaused. The
// same for `vmtui save`, which may also have finished: then the VM is
// saved, and resumes.
func TestKilledMidSend(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)

	// The stream goes to a pipe read 1 MiB, then no more: send blocks
	// writing, and is killed there.
	cmd, pr, stderr := e.sendToPipe("web")
	if _, err := io.CopyN(io.Discard, pr, 1<<20); err != nil {
		cmd.Wait()
		t.Fatalf("read 1 MiB of the stream: %v (vmtui: %s)", err, stderr.String())
	}
	// Meanwhile a query does not wait for the send's lock: it asks QEMU.
	if st := e.status(e.m, "web"); st.State != vm.StatePaused || st.Err != "" {
		t.Errorf("during the send: %+v, want paused", st)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	pr.Close()
	st := e.status(e.m, "web")
	if st.State != vm.StatePaused && st.State != vm.StateRunning {
		t.Fatalf("after vmtui send was killed: %+v, want paused or running", st)
	}
	after := len(readFile(e.paths.SerialLog("web")))
	if st.State == vm.StatePaused {
		if err := e.m.Unpause(ctxTimeout(t), def); err != nil {
			t.Fatalf("unpause: %v", err)
		}
	}
	e.waitAlive("web", secret, after)
	// And it can be sent again: QEMU's failed migration is over.
	if b := e.sendToFile(def); len(b) < 1<<20 {
		t.Fatalf("sent again: %d bytes", len(b))
	}
	if st := e.status(e.m, "web"); st.State != vm.StateStopped {
		t.Fatalf("after the second send: %+v", st)
	}

	// Save, killed once it holds the VM: killed mid-way or done.
	secret = e.startRAMGuest(def)
	run := e.startCLI("save", "web")
	marker := e.paths.RuntimeFile("web", "migrating")
	for deadline := time.Now().Add(opTimeout); ; {
		if _, err := os.Stat(marker); err == nil || run.cmd.ProcessState != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("vmtui save never marked the vm")
		}
		time.Sleep(time.Millisecond)
	}
	run.cmd.Process.Signal(syscall.SIGKILL)
	run.wait(t)
	st = e.status(e.m, "web")
	after = len(readFile(e.paths.SerialLog("web")))
	switch st.State {
	case vm.StatePaused:
		if err := e.m.Unpause(ctxTimeout(t), def); err != nil {
			t.Fatalf("unpause: %v", err)
		}
	case vm.StateRunning:
	case vm.StateSaved:
		e.start(def, vm.StartOptions{})
	default:
		t.Fatalf("after vmtui save was killed: %+v", st)
	}
	t.Logf("vmtui save killed: the vm was %s", st.State)
	e.waitAlive("web", secret, after)
}

// sendToPipe starts vmtui send of VM name into a pipe; it returns the
// command, the pipe's end to read the stream from, and what vmtui writes
// to standard error.
func (e *guestEnv) sendToPipe(name string) (*exec.Cmd, *os.File, *strings.Builder) {
	e.t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := e.vmtuiCmd("send", name)
	cmd.Stdout = pw
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	pw.Close()
	return cmd, pr, stderr
}

// TestSaveStartConcurrent runs a save and a start of one VM at once, from
// two Managers (two vmtui processes): they do not interleave. Either the
// save comes first and the start resumes the saved guest, or the start
// comes first, finds the VM running, and the save saves it.
func TestSaveStartConcurrent(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)
	other := e.newManager()
	var saveErr, startErr error
	atOnce(
		func() { saveErr = e.m.Save(ctxTimeout(t), def, vm.SendOptions{}) },
		func() { _, startErr = other.Start(ctxTimeout(t), def, vm.StartOptions{}) },
	)
	if saveErr != nil {
		t.Fatalf("save: %v", saveErr)
	}
	after := len(readFile(e.paths.SerialLog("web")))
	st := e.status(e.m, "web")
	switch {
	case startErr == nil && st.State == vm.StateRunning:
		t.Log("the save came first; the start resumed it")
	case errors.Is(startErr, vm.ErrAlreadyRunning) && st.State == vm.StateSaved:
		t.Log("the start came first; the save followed")
		e.start(def, vm.StartOptions{})
	default:
		t.Fatalf("start: %v, then the vm is %+v", startErr, st)
	}
	e.waitAlive("web", secret, after)
	if pids := qemuPIDs(e.paths.PIDFile("web"), false); len(pids) != 1 {
		t.Fatalf("QEMUs of the vm: %v, want one", pids)
	}
}

// TestSaveProgress: on a terminal, vmtui save shows its progress on
// standard error, then its result.
func TestSaveProgress(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	e.startRAMGuest(def)
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	cmd := e.vmtuiCmd("save", "web")
	cmd.Stderr = tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	out, _ := io.ReadAll(ptm) // EIO once vmtui, the pty's only user, exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vmtui save: %v: %q", err, out)
	}
	if !strings.Contains(string(out), "\r\x1b[Ksaving vm web: ") || !strings.Contains(string(out), "vmtui: saved vm 1 successfully") {
		t.Fatalf("standard error: %q", out)
	}
	if st := e.status(e.m, "web"); st.State != vm.StateSaved {
		t.Fatalf("after save: %+v", st)
	}
}

// TestSendClosedPipe: vmtui send to a pipe whose reader goes away (as in
// vmtui send web | head -c 1M) fails saying so, and the VM goes on
// running: vmtui is not killed by SIGPIPE with the guest paused.
func TestSendClosedPipe(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)
	cmd, pr, stderr := e.sendToPipe("web")
	io.CopyN(io.Discard, pr, 1<<20)
	pr.Close()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "broken pipe; the vm goes on running") {
		t.Fatalf("vmtui send to a closed pipe: %v, stderr %q; want exit 1 saying the vm goes on running", err, stderr.String())
	}
	if st := e.status(e.m, "web"); st.State != vm.StateRunning {
		t.Fatalf("after the send: %+v, want running", st)
	}
	e.waitAlive("web", secret, len(readFile(e.paths.SerialLog("web"))))
}
