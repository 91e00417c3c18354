package vm_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
	"github.com/vmtui/vmtui/vm/stream"
)

// ramScript makes the guest pick a random value, keep it only in its RAM
// (a file in its initramfs, and a shell's memory) and print it every 0.2 s
// with a counter, for ever: a guest that goes on with its memory and
// processes after a send and receive, or a save and resume, prints the
// same value; a guest booted again picks another.
const ramScript = `v=$(cat /proc/sys/kernel/random/uuid)
echo "$v" >/tmp/ram-value
echo "secret $v"
( n=0; while :; do n=$((n + 1)); echo "alive $(cat /tmp/ram-value) $n"; sleep 0.2; done ) &
`

var secretRE = regexp.MustCompile(`secret ([0-9a-f-]{36})`)

// defineRAMGuest defines a guest running ramScript.
func (e *guestEnv) defineRAMGuest(name string) *config.VM {
	e.t.Helper()
	args, params := scriptArgs(e.t, ramScript)
	def := &config.VM{
		Name: name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, ExtraArgs: args,
		Append: testguest.Cmdline + " " + params[0], // no power-off: the guest goes on
	}
	if err := e.m.Store().Create(def); err != nil {
		e.t.Fatalf("define %s: %v", name, err)
	}
	return def
}

// startRAMGuest starts def and returns the value its guest keeps in RAM,
// once it prints it alive.
func (e *guestEnv) startRAMGuest(def *config.VM) string {
	e.t.Helper()
	after := len(readFile(e.paths.SerialLog(def.Name)))
	e.start(def, vm.StartOptions{})
	deadline := time.Now().Add(testguest.BootTimeout)
	for {
		log := readFile(e.paths.SerialLog(def.Name))
		if len(log) >= after {
			if m := secretRE.FindStringSubmatch(log[after:]); m != nil && strings.Contains(log[after:], "alive "+m[1]+" ") {
				return m[1]
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s: no secret alive in the serial log:\n%s", def.Name, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAlive waits until the serial log of VM name, past its first after
// bytes, shows the guest alive with value.
func (e *guestEnv) waitAlive(name, value string, after int) {
	e.t.Helper()
	want := "alive " + value + " "
	deadline := time.Now().Add(testguest.BootTimeout)
	for {
		log := readFile(e.paths.SerialLog(name))
		if len(log) > after && strings.Contains(log[after:], want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s: no %q in the serial log after byte %d:\n%s\nqemu log:\n%s",
				name, want, after, log, readFile(e.paths.QEMULog(name)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// requireNoQEMU fails the test if a QEMU runs under the state root.
func (e *guestEnv) requireNoQEMU() {
	e.t.Helper()
	if pids := qemuPIDs(e.home, true); len(pids) > 0 {
		e.t.Fatalf("qemu still running under %s: %v", e.home, pids)
	}
}

// TestSendReceive sends a running guest through a pipe from one state
// root to another: it goes on there with its memory and processes, under
// a new name and ID, and is stopped (still defined) at the source.
func TestSendReceive(t *testing.T) {
	src, dst := newGuestEnv(t), newGuestEnv(t)
	// An ID the received VM must not take: it gets the next one of dst.
	dst.define("other")
	def := src.defineRAMGuest("web")
	// A disk both QEMUs open, one after the other: the sender's holds its
	// lock until the migration completes, the receiver's takes it then.
	qemuimg.Require(t)
	img := filepath.Join(t.TempDir(), "web.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "64M")
	def.Disks = []config.Disk{{Path: img}}
	if err := src.m.Store().Save(def); err != nil {
		t.Fatal(err)
	}
	secret := src.startRAMGuest(def)

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	var progress []int64
	go func() {
		err := src.m.Send(ctxTimeout(t), def, pw, vm.SendOptions{Progress: func(n int64) { progress = append(progress, n) }})
		pw.Close()
		sent <- err
	}()
	st, err := dst.m.Receive(ctxTimeout(t), "copy", pr, vm.ReceiveOptions{})
	pr.Close()
	if serr := <-sent; serr != nil {
		t.Fatalf("send: %v", serr)
	}
	if err != nil {
		t.Fatalf("receive: %v\nqemu log:\n%s", err, readFile(dst.paths.QEMULog("copy")))
	}
	if st.State != vm.StateRunning || st.ID != 2 || st.Name != "copy" {
		t.Fatalf("received: %+v, want vm 2 copy running", st)
	}
	if len(progress) == 0 || progress[len(progress)-1] < 1<<20 {
		t.Errorf("progress reported %v", progress)
	}
	dst.waitAlive("copy", secret, 0)
	if got := src.status(src.m, "web"); got.State != vm.StateStopped {
		t.Errorf("source after send: %+v, want stopped", got)
	}
	src.requireNoQEMU()
	src.requireNoRuntimeFiles("web")
	rdef, err := dst.m.Store().Lookup("copy")
	if err != nil || rdef.Kernel != def.Kernel || rdef.Memory != def.Memory || len(rdef.Disks) != 1 || rdef.Disks[0].Path != img {
		t.Fatalf("received definition %+v: %v", rdef, err)
	}
	if err := dst.m.Stop(ctxTimeout(t), rdef, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	qemuimg.RequireClean(t, img, false)
}

// TestSaveResume saves a running guest to disk, shows it saved, and
// starts it again from there: the same guest, and the saved state gone.
// A paused guest resumes paused. --fresh discards a saved state; remove
// removes it.
func TestSaveResume(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)
	saved := e.paths.SavedStateFile("web")

	if err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if st := e.status(e.m, "web"); st.State != vm.StateSaved || st.Running() {
		t.Fatalf("after save: %+v, want saved", st)
	}
	e.requireNoQEMU()
	e.requireNoRuntimeFiles("web")
	after := len(readFile(e.paths.SerialLog("web")))
	st := e.start(def, vm.StartOptions{})
	if st.State != vm.StateRunning {
		t.Fatalf("resumed: %+v", st)
	}
	e.waitAlive("web", secret, after)
	if _, err := os.Stat(saved); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved state after resume: %v", err)
	}

	// Paused, saved, resumed: paused still.
	if err := e.m.Pause(ctxTimeout(t), def); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{}); err != nil {
		t.Fatalf("save paused: %v", err)
	}
	if st := e.start(def, vm.StartOptions{}); st.State != vm.StatePaused {
		t.Fatalf("resumed a paused guest: %+v, want paused", st)
	}
	after = len(readFile(e.paths.SerialLog("web")))
	if err := e.m.Unpause(ctxTimeout(t), def); err != nil {
		t.Fatal(err)
	}
	e.waitAlive("web", secret, after)

	// --fresh boots another guest.
	if err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	after = len(readFile(e.paths.SerialLog("web")))
	e.start(def, vm.StartOptions{Fresh: true})
	var log string
	for deadline := time.Now().Add(testguest.BootTimeout); !strings.Contains(log, "alive "); {
		if time.Now().After(deadline) {
			t.Fatalf("fresh start: no alive line in:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
		log = readFile(e.paths.SerialLog("web"))[after:]
	}
	if m := secretRE.FindAllStringSubmatch(log, -1); len(m) != 1 || m[0][1] == secret {
		t.Fatalf("fresh start: secrets %v after the old %s", m, secret)
	}
	if e.m.HasSavedState("web") {
		t.Fatal("saved state kept by a fresh start")
	}

	// Remove removes a saved state.
	if err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if _, err := e.m.Remove(ctxTimeout(t), def); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(saved); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved state after remove: %v", err)
	}
}

// TestResumeChangedDefinition: a saved state fits only the definition it
// was saved with.
func TestResumeChangedDefinition(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	e.startRAMGuest(def)
	if err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	def.Memory = 2 * testguest.MemoryBytes
	if err := e.m.Store().Save(def); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Start(ctxTimeout(t), def, vm.StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "definition changed since it was saved") || !strings.Contains(err.Error(), "--fresh") {
		t.Fatalf("start after the definition changed: %v", err)
	}
	e.requireNoQEMU()
	if !e.m.HasSavedState("web") {
		t.Fatal("saved state lost by a refused start")
	}
}

// sendToFile sends def to a file and returns the file's content.
func (e *guestEnv) sendToFile(def *config.VM) []byte {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), "web.vmstream")
	f, err := os.Create(path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if err := e.m.Send(ctxTimeout(e.t), def, f, vm.SendOptions{}); err != nil {
		e.t.Fatalf("send: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// TestReceiveDamaged: a truncated, altered or foreign stream, or one
// whose disk is missing, is refused, leaving nothing defined and no QEMU
// running; the whole stream is received after.
func TestReceiveDamaged(t *testing.T) {
	src, dst := newGuestEnv(t), newGuestEnv(t)
	def := src.defineRAMGuest("web")
	secret := src.startRAMGuest(def)
	good := src.sendToFile(def)

	altered := []byte(strings.Clone(string(good)))
	altered[len(altered)*2/3] ^= 0x40
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", good[:len(good)*3/4], "truncated"},
		{"truncated before the trailer", good[:len(good)-40], "truncated"},
		{"altered", altered, "checksum mismatch"},
		{"foreign", []byte("QEVM\x00\x00\x00\x03 not a vmtui stream"), "not a vmtui vm stream"},
		{"empty", nil, "truncated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dst.m.Receive(ctxTimeout(t), "copy", strings.NewReader(string(tc.b)), vm.ReceiveOptions{})
			if err == nil || !errors.Is(err, stream.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("receive: %v, want an error saying %q", err, tc.want)
			}
			if _, err := dst.m.Store().Lookup("copy"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after a refused receive: lookup copy: %v", err)
			}
			dst.requireNoQEMU()
		})
	}
	// A missing disk is named before anything starts.
	sr, err := stream.NewReader(strings.NewReader(string(good)))
	if err != nil {
		t.Fatal(err)
	}
	h := sr.Header()
	nodisk := &config.VM{Name: "web", File: "x"}
	if err := config.Decode(nodisk, h.Definition); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "gone.qcow2")
	nodisk.Disks = []config.Disk{{Path: missing}}
	data, err := config.Encode(nodisk)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	w, err := stream.NewWriter(&b, stream.Header{Flags: h.Flags, Definition: data})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(w, sr)
	w.Close()
	_, err = dst.m.Receive(ctxTimeout(t), "copy", strings.NewReader(b.String()), vm.ReceiveOptions{})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("receive without its disk: %v, want the disk named", err)
	}
	dst.requireNoQEMU()

	st, err := dst.m.Receive(ctxTimeout(t), "copy", strings.NewReader(string(good)), vm.ReceiveOptions{})
	if err != nil {
		t.Fatalf("receive: %v\nqemu log:\n%s", err, readFile(dst.paths.QEMULog("copy")))
	}
	if st.State != vm.StateRunning {
		t.Fatalf("received: %+v", st)
	}
	dst.waitAlive("copy", secret, 0)
}

// TestSendWriteFails: a send whose writes fail (a full disk, a closed
// pipe) leaves the VM running, its guest going on; a save to a full disk
// leaves no saved state.
func TestSendWriteFails(t *testing.T) {
	e := newGuestEnv(t)
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	err = e.m.Send(ctxTimeout(t), def, full, vm.SendOptions{})
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "the vm goes on running") {
		t.Fatalf("send to /dev/full: %v", err)
	}
	after := len(readFile(e.paths.SerialLog("web")))
	if st := e.status(e.m, "web"); st.State != vm.StateRunning {
		t.Fatalf("after a failed send: %+v", st)
	}
	e.waitAlive("web", secret, after)

	// A pipe whose reader goes away after 1 MiB.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		io.CopyN(io.Discard, pr, 1<<20)
		pr.Close()
	}()
	err = e.m.Send(ctxTimeout(t), def, pw, vm.SendOptions{})
	pw.Close()
	if err == nil || !errors.Is(err, syscall.EPIPE) || !strings.Contains(err.Error(), "the vm goes on running") {
		t.Fatalf("send to a closed pipe: %v", err)
	}
	after = len(readFile(e.paths.SerialLog("web")))
	e.waitAlive("web", secret, after)

	// A paused guest stays paused.
	if err := e.m.Pause(ctxTimeout(t), def); err != nil {
		t.Fatal(err)
	}
	err = e.m.Send(ctxTimeout(t), def, full, vm.SendOptions{})
	if err == nil || !strings.Contains(err.Error(), "the vm stays paused") {
		t.Fatalf("send of a paused vm to /dev/full: %v", err)
	}
	if st := e.status(e.m, "web"); st.State != vm.StatePaused {
		t.Fatalf("after a failed send of a paused vm: %+v", st)
	}
	if err := e.m.Unpause(ctxTimeout(t), def); err != nil {
		t.Fatal(err)
	}
}

// TestSaveFullDisk: a save to a state directory that fills up leaves the
// VM running and no saved state, not even a temporary file.
func TestSaveFullDisk(t *testing.T) {
	e := newGuestEnv(t)
	dir := filepath.Dir(e.paths.SavedStateFile("web"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// 4 MiB of tmpfs: the guest's state is some tens of MiB.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		if testguest.InCI() && os.Geteuid() == 0 {
			t.Fatalf("mount a small tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs (%v: %s): the full disk of send is tested with /dev/full", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	def := e.defineRAMGuest("web")
	secret := e.startRAMGuest(def)
	err := e.m.Save(ctxTimeout(t), def, vm.SendOptions{})
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "the vm goes on running") {
		t.Fatalf("save to a full disk: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) > 0 {
		t.Fatalf("left in %s: %v", dir, ents)
	}
	if st := e.status(e.m, "web"); st.State != vm.StateRunning {
		t.Fatalf("after a failed save: %+v", st)
	}
	e.waitAlive("web", secret, len(readFile(e.paths.SerialLog("web"))))
}
