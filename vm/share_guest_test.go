package vm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// Shared folders in the test guest: a file goes from the host to the guest
// and back through a virtio-fs share, a read-only share refuses the
// guest's writes, and no virtiofsd outlives its VM, however the VM ends.

// defineShared defines a test guest called name sharing shares, running
// script (if any) once up, its kernel command line extended by params.
func (e *guestEnv) defineShared(name string, shares []config.Share, script string, params ...string) *config.VM {
	e.t.Helper()
	def := &config.VM{
		Name: name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Shares: shares,
		Append: strings.Join(append([]string{testguest.Cmdline}, params...), " "),
	}
	if script != "" {
		def.Append += " " + testguest.ScriptParam + "vmtui-script"
		def.ExtraArgs, _ = scriptArgs(e.t, script) // the guest stays up after the script
	}
	if err := e.m.Store().Create(def); err != nil {
		e.t.Fatalf("define %s: %v", name, err)
	}
	return def
}

// daemons returns the live virtiofsd processes serving dir.
func daemons(dir string) []vm.VirtiofsdProc {
	var out []vm.VirtiofsdProc
	for _, p := range vm.VirtiofsdProcs() {
		if argValueOf(p.Argv, "-o") == "source="+dir {
			out = append(out, p)
		}
	}
	return out
}

// argValueOf returns the value after the first flag in argv, or "".
func argValueOf(argv []string, flag string) string {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			return argv[i+1]
		}
	}
	return ""
}

// waitNoDaemons fails the test unless every virtiofsd serving dirs is
// gone within a few seconds, and kills what is left.
func waitNoDaemons(t *testing.T, when string, dirs ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		for _, d := range dirs {
			for _, p := range daemons(d) {
				left = append(left, p.PID)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("%s: virtiofsd %v still running", when, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDaemons waits until n virtiofsds serve dirs, in the process group of
// QEMU pid, and returns them.
func waitDaemons(t *testing.T, pid, n int, dirs ...string) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// virtiofsd forks its sandbox once QEMU connects: count the
		// daemons QEMU started, its children.
		var found, own []int
		for _, d := range dirs {
			for _, p := range daemons(d) {
				found = append(found, p.PID)
				if g, _ := syscall.Getpgid(p.PID); g == pid && p.Parent == pid {
					own = append(own, p.PID)
				}
			}
		}
		if len(own) == n {
			return own
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu %d: %d virtiofsd children in its process group (%v of %v), want %d", pid, len(own), own, found, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scriptOut waits for the script's exit line in the VM's serial log and
// returns what the script printed, failing the test on a non-zero exit.
func (e *guestEnv) scriptOut(name string) string {
	e.t.Helper()
	log := e.waitSerial(name, testguest.ScriptExit, testguest.BootTimeout+time.Minute)
	log = strings.ReplaceAll(log, "\r\n", "\n")
	i := strings.Index(log, testguest.ScriptStart+"\n")
	j := strings.LastIndex(log, testguest.ScriptExit)
	if i < 0 || j < i {
		e.t.Fatalf("vm %s: no script output in the serial log:\n%s", name, log)
	}
	out := log[i+len(testguest.ScriptStart)+1 : j]
	status, _, _ := strings.Cut(log[j+len(testguest.ScriptExit):], "\n")
	if strings.TrimSpace(status) != "0" {
		e.t.Fatalf("vm %s: the script exited with status %s; it printed:\n%s", name, status, out)
	}
	return out
}

// A file written on the host is read in the guest through a share, one the
// guest writes is read on the host, a read-only share refuses the guest's
// writes, and when the guest powers off its virtiofsds go with QEMU.
func TestShareGuestReadsAndWrites(t *testing.T) {
	vm.RequireVirtiofsd(t)
	e := newGuestEnv(t)
	rw, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(rw, "from-host"), []byte("written on the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "keep"), []byte("read-only data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mkdir -p /mnt/rw /mnt/ro
mount -t virtiofs data /mnt/rw
mount -t virtiofs docs /mnt/ro
echo "host says: $(cat /mnt/rw/from-host)"
echo "written in the guest" >/mnt/rw/from-guest
echo "ro says: $(cat /mnt/ro/keep)"
if echo x >/mnt/ro/new 2>/tmp/err; then echo "read-only share written"; exit 1; fi
echo "ro write: $(cat /tmp/err)"
if rm /mnt/ro/keep 2>/dev/null; then echo "read-only share: file removed"; exit 1; fi
sync
umount /mnt/rw
umount /mnt/ro
`
	def := e.defineShared("share", []config.Share{{Path: rw, Tag: "data"}, {Path: ro, Tag: "docs", ReadOnly: true}},
		script, testguest.ScriptPoweroffParam)
	st := e.start(def, vm.StartOptions{})
	waitDaemons(t, st.PID, 2, rw, ro)
	out := e.scriptOut("share")
	for _, want := range []string{"host says: written on the host", "ro says: read-only data", "ro write: ", "Read-only file system"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testguest.PowerOffTimeout)
	defer cancel()
	if err := e.m.Wait(ctx, def); err != nil && err != vm.ErrNotRunning {
		t.Fatalf("wait for the guest to power off: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "from-guest")); err != nil || string(b) != "written in the guest\n" {
		t.Errorf("the guest's file on the host: %q, %v; want %q", b, err, "written in the guest\n")
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Errorf("the guest wrote into the read-only share")
	}
	waitNoDaemons(t, "after the guest powered off", rw, ro)
	e.requireNoRuntimeFiles("share")
	if ents, _ := filepath.Glob(filepath.Join(e.paths.RuntimeDir("share"), "fs*.sock")); len(ents) > 0 {
		t.Errorf("share sockets left behind: %q", ents)
	}
}

// No virtiofsd outlives its VM: stopped by vmtui, QEMU killed, vmtui
// killed in the middle of a start (the VM then runs on, and its daemons
// with it, until it is killed), or QEMU failing to start.
func TestShareDaemonsDieWithTheVM(t *testing.T) {
	vm.RequireVirtiofsd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("stop", func(t *testing.T) {
		e := newGuestEnv(t)
		dir := t.TempDir()
		def := e.defineShared("stop", []config.Share{{Path: dir, Tag: "s"}}, "")
		st := e.start(def, vm.StartOptions{})
		daemonPIDs := waitDaemons(t, st.PID, 1, dir)
		e.waitSerial("stop", testguest.Banner, testguest.BootTimeout)
		// A virtiofsd is never taken for the VM's QEMU: not by its
		// status, nor when the VM's runtime files are lost and its QEMU
		// is looked for by command line.
		if got := e.status(e.m, "stop"); got.PID != st.PID {
			t.Errorf("status: pid %d, want qemu's %d (virtiofsd %v)", got.PID, st.PID, daemonPIDs)
		}
		if err := os.Remove(e.paths.PIDFile("stop")); err != nil {
			t.Fatal(err)
		}
		if got, err := e.m.Adopt(ctx, def); err != nil || got.PID != st.PID {
			t.Errorf("adopt: pid %d, %v; want qemu's %d (virtiofsd %v)", got.PID, err, st.PID, daemonPIDs)
		}
		if err := e.m.Stop(ctx, def, vm.StopOptions{Wait: true}); err != nil {
			t.Fatalf("stop: %v", err)
		}
		waitNoDaemons(t, "after vmtui stop", dir)
	})

	t.Run("qemu killed", func(t *testing.T) {
		e := newGuestEnv(t)
		dir := t.TempDir()
		def := e.defineShared("killed", []config.Share{{Path: dir, Tag: "s", ReadOnly: true}}, "")
		st := e.start(def, vm.StartOptions{})
		waitDaemons(t, st.PID, 1, dir)
		syscall.Kill(st.PID, syscall.SIGKILL)
		waitNoDaemons(t, "after SIGKILL of qemu", dir)
	})

	t.Run("vmtui killed", func(t *testing.T) {
		e := newGuestEnv(t)
		dir := t.TempDir()
		e.defineShared("orphan", []config.Share{{Path: dir, Tag: "s"}}, "")
		cmd := e.vmtuiCmd("start", "orphan")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill vmtui as soon as the daemons run, before QEMU answers.
		deadline := time.Now().Add(30 * time.Second)
		for len(daemons(dir)) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if len(daemons(dir)) == 0 {
			t.Fatal("no virtiofsd ran during the start")
		}
		// The VM runs on without vmtui, as any VM does.
		e.waitSerial("orphan", testguest.Banner, testguest.BootTimeout)
		def, err := e.m.Store().Lookup("orphan")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true, Wait: true}); err != nil {
			t.Fatalf("kill: %v", err)
		}
		waitNoDaemons(t, "after the VM of a killed vmtui was killed", dir)
	})

	t.Run("vmtui killed then qemu", func(t *testing.T) {
		e := newGuestEnv(t)
		dir := t.TempDir()
		e.defineShared("orphan2", []config.Share{{Path: dir, Tag: "s", ReadOnly: true}}, "")
		cmd := e.vmtuiCmd("start", "orphan2")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var pid int
		deadline := time.Now().Add(30 * time.Second)
		for pid == 0 && time.Now().Before(deadline) {
			if pids := qemuPIDs(e.paths.PIDFile("orphan2"), false); len(pids) > 0 {
				pid = pids[0]
			}
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if pid == 0 {
			t.Fatalf("no qemu started; vmtui start said: %s\nqemu log:\n%s", stderr.String(), readFile(e.paths.QEMULog("orphan2")))
		}
		syscall.Kill(pid, syscall.SIGKILL)
		waitNoDaemons(t, "after vmtui and then qemu were killed", dir)
	})

	t.Run("qemu fails to start", func(t *testing.T) {
		e := newGuestEnv(t)
		dir := t.TempDir()
		def := &config.VM{
			Name: "broken", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
			Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
			Shares:    []config.Share{{Path: dir, Tag: "s"}},
			ExtraArgs: []string{"-device", "no-such-device"},
		}
		if err := e.m.Store().Create(def); err != nil {
			t.Fatal(err)
		}
		_, err := e.m.Start(ctx, def, vm.StartOptions{})
		if err == nil || !strings.Contains(err.Error(), "no-such-device") {
			t.Fatalf("start: %v, want qemu's error about no-such-device", err)
		}
		waitNoDaemons(t, "after qemu failed to start", dir)
	})
}

// A share whose virtiofsd cannot run fails the start with virtiofsd's
// words, and leaves nothing running.
func TestShareVirtiofsdFails(t *testing.T) {
	vm.RequireVirtiofsd(t)
	e := newGuestEnv(t)
	dir := t.TempDir()
	def := e.defineShared("nofsd", []config.Share{{Path: dir, Tag: "s"}}, "")
	// virtiofsd refuses an unknown option: a stand-in for any failure.
	fake := filepath.Join(t.TempDir(), "virtiofsd")
	if err := os.Symlink(mustLookPath(t, "false"), fake); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VMTUI_VIRTIOFSD", fake)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := e.m.Start(ctx, def, vm.StartOptions{})
	if err == nil {
		t.Fatal("start: no error with a virtiofsd that exits at once")
	}
	t.Logf("start: %v", err)
	if !strings.Contains(err.Error(), "fs0") && !strings.Contains(err.Error(), "virtiofsd") {
		t.Errorf("start: %v, want an error about the share's socket or virtiofsd", err)
	}
	if pids := qemuPIDs(e.paths.PIDFile("nofsd"), false); len(pids) > 0 {
		t.Errorf("qemu %v still running", pids)
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if testguest.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}
