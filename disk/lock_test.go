package disk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// These tests check vmtui's image locks against QEMU's own: QEMU's tools
// must refuse what vmtui holds, and vmtui what they hold.

// holdWithQEMU opens image in qemu-io, read-write unless readOnly, and keeps
// it open until the test ends. It returns once QEMU's locks are on it.
func holdWithQEMU(t *testing.T, image, format string, readOnly bool) {
	t.Helper()
	args := []string{"-f", format}
	if readOnly {
		args = append(args, "-r")
	}
	cmd := exec.Command("qemu-io", append(args, image)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close() // qemu-io quits at the end of its commands
		<-exited
	})
	// QEMU 7.2 sets its lock bytes one by one (as /proc/locks shows for
	// qemu-io): qcow2 100, 201, 203 (and 103 read-write); raw only 100.
	// Wait for all of them, so that no test looks in between.
	held := []int{lockPermBase}
	if format == "qcow2" {
		held = append(held, lockSharedBase+1, lockSharedBase+3)
	}
	for _, off := range held {
		waitLock(t, image, off, exited, &out)
	}
}

// waitLock waits until another program holds the lock byte off of image.
func waitLock(t *testing.T, image string, off int, exited <-chan error, out fmt.Stringer) {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		held, err := lockHeld(int(f.Fd()), off)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("the holder of %s exited (%v) before locking it: %s", image, err, out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: nobody locked byte %d within 30 s: %s", image, off, out)
		}
	}
}

// qemuFails runs a QEMU tool and expects it to fail with want in its output.
func qemuFails(t *testing.T, want string, tool string, args ...string) {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	// qemu-io exits 1 when it cannot open the image.
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("%s %q: %v, output %q; want a failure saying %q", tool, args, err, out, want)
	}
}

// qemuWorks runs a QEMU tool and expects it to succeed.
func qemuWorks(t *testing.T, tool string, args ...string) {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") {
		t.Errorf("%s %q: %v, output %q; want success", tool, args, err, out)
	}
}

// wantInUse checks that err is an *InUseError for lock, with its message
// naming the file.
func wantInUse(t *testing.T, what string, err error, lock, file string) {
	t.Helper()
	var iu *InUseError
	if !errors.As(err, &iu) || !errors.Is(err, ErrInUse) {
		// Fatal: what follows takes the refusal for granted.
		t.Fatalf("%s: got %v, want an *InUseError", what, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "image is in use by another process ("+lock+")") || !strings.Contains(msg, file) {
		t.Errorf("%s: got %q, want it to name %s and say %q", what, msg, file, lock)
	}
}

const (
	lockWriteMsg  = `Failed to get "write" lock`
	lockSharedMsg = `Failed to get shared "write" lock`
)

// TestQEMURefusesWhatVMTUIWrites: while vmtui holds an image for writing,
// qemu-io cannot open it and qemu-img cannot read a qcow2 one (but with
// -U; qemu-img reads raw images whoever writes them); while vmtui reads
// one, they can read it and not write it.
func TestQEMURefusesWhatVMTUIWrites(t *testing.T) {
	qemuimg.Require(t)
	for _, format := range []Format{FormatQcow2, FormatRaw} {
		t.Run(string(format), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.img")
			qemuimg.Run(t, "create", "-f", string(format), p, "1M")
			f := string(format)

			img, err := Open(p, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if format == FormatQcow2 {
				qemuFails(t, lockSharedMsg, "qemu-img", "info", p)
				qemuFails(t, lockSharedMsg, "qemu-img", "check", p)
				qemuFails(t, lockSharedMsg, "qemu-img", "convert", "-O", "raw", p, p+".copy")
			}
			qemuFails(t, lockWriteMsg, "qemu-io", "-f", f, "-c", "write 0 512", p)
			qemuFails(t, lockWriteMsg, "qemu-img", "resize", "-f", f, p, "2M")
			qemuWorks(t, "qemu-img", "info", "-U", p)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuWorks(t, "qemu-img", "info", p)
			qemuWorks(t, "qemu-io", "-f", f, "-c", "write 0 512", p)

			ro, err := Open(p, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			qemuWorks(t, "qemu-img", "info", p)
			qemuWorks(t, "qemu-io", "-r", "-f", f, "-c", "read 0 512", p)
			if format == FormatQcow2 {
				qemuFails(t, lockWriteMsg, "qemu-io", "-f", f, "-c", "write 0 512", p)
				qemuFails(t, lockWriteMsg, "qemu-img", "resize", "-f", f, p, "2M")
			} else {
				// qemu-img reads a raw image sharing everything: so
				// does vmtui.
				qemuWorks(t, "qemu-io", "-f", f, "-c", "write 0 512", p)
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			qemuWorks(t, "qemu-io", "-f", f, "-c", "write 0 512", p)
		})
	}
}

// TestVMTUIRefusesWhatQEMUWrites: while QEMU writes an image, every vmtui
// operation that writes it is refused, and every one that reads it too,
// unless it forces sharing; the image is left as it was.
func TestVMTUIRefusesWhatQEMUWrites(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "held.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", p, "4M")
	qemuimg.IO(t, p, "qcow2", "write -P 7 0 64k")
	holdWithQEMU(t, p, "qcow2", false)
	ctx := context.Background()

	_, err := Open(p, OpenOptions{})
	wantInUse(t, "open for writing", err, lockWriteMsg, p)
	_, err = Open(p, OpenOptions{ReadOnly: true})
	wantInUse(t, "open for reading", err, lockSharedMsg, p)
	wantInUse(t, "resize", Resize(t.Context(), p, 8*oneMiB), lockWriteMsg, p)
	_, err = Check(t.Context(), p, qcow2.RepairAll, CheckOptions{})
	wantInUse(t, "check -r all", err, lockWriteMsg, p)
	_, err = Check(t.Context(), p, qcow2.RepairNone, CheckOptions{})
	wantInUse(t, "check", err, lockSharedMsg, p)
	_, err = Info(t.Context(), p, InfoOptions{})
	wantInUse(t, "info", err, lockSharedMsg, p)
	out := filepath.Join(dir, "out.qcow2")
	wantInUse(t, "convert", Convert(ctx, p, out, ConvertOptions{}), lockSharedMsg, p)
	wantInUse(t, "create -b", Create(filepath.Join(dir, "ov.qcow2"), CreateOptions{BackingFile: "held.qcow2"}), lockSharedMsg, "held.qcow2")
	assertNoTemp(t, dir, "held.qcow2")

	// -U reads it as it is.
	img, err := Open(p, OpenOptions{ReadOnly: true, ForceShare: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := img.ReadAt(buf, 0); err != nil || buf[0] != 7 {
		t.Errorf("forced read: %v, byte %d; want 7", err, buf[0])
	}
	img.Close()
	if _, err := Check(t.Context(), p, qcow2.RepairNone, CheckOptions{ForceShare: true}); err != nil {
		t.Errorf("check -U: %v", err)
	}
	if _, err := Check(t.Context(), p, qcow2.RepairAll, CheckOptions{ForceShare: true}); err == nil {
		t.Error("check -U -r all: no error")
	}
	if info, err := Info(t.Context(), p, InfoOptions{ForceShare: true}); err != nil || info.VirtualSize != 4*oneMiB {
		t.Errorf("info -U: %+v, %v; want 4 MiB, unchanged", info, err)
	}
	if err := Convert(ctx, p, out, ConvertOptions{ForceShare: true}); err != nil {
		t.Errorf("convert -U: %v", err)
	}
	if _, err := Open(p, OpenOptions{ForceShare: true}); err == nil {
		t.Error("force-share of a read-write open: no error")
	}
}

// TestVMTUIRefusesWritingARawImageQEMUWrites: a raw image that QEMU writes
// is refused a write; reading it is not refused, as qemu-img does not
// refuse it (QEMU's raw driver shares what its user shares).
func TestVMTUIRefusesWritingARawImageQEMUWrites(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "held.raw")
	qemuimg.Run(t, "create", "-f", "raw", p, "1M")
	holdWithQEMU(t, p, "raw", false)
	// qemu-io shares what its raw image's writer does not: a guest's
	// disk would not share writing, and the message would be lockWriteMsg.
	wantInUse(t, "resize", Resize(t.Context(), p, 2*oneMiB), lockSharedMsg, p)
	if _, err := Open(p, OpenOptions{}); !errors.Is(err, ErrInUse) {
		t.Errorf("open for writing: got %v, want ErrInUse", err)
	}
	if err := Convert(context.Background(), p, filepath.Join(dir, "copy.qcow2"), ConvertOptions{}); err != nil {
		t.Errorf("convert: %v", err)
	}
	if _, err := Info(t.Context(), p, InfoOptions{}); err != nil {
		t.Errorf("info: %v", err)
	}
	// As a backing file, it is locked as QEMU locks backing files.
	ov := filepath.Join(dir, "ov.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", "-u", "-b", "held.raw", "-F", "raw", ov, "1M")
	_, err := Open(ov, OpenOptions{ReadOnly: true})
	wantInUse(t, "open an overlay", err, lockSharedMsg, "held.raw")
}

// TestCommitRefusesABaseAGuestUses: a base image under a running guest's
// overlay cannot be committed into through another overlay, and the error
// names the base; NameHolder names the VM whose disk has it in its chain.
func TestCommitRefusesABaseAGuestUses(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", base, "4M")
	for _, ov := range []string{"running.qcow2", "other.qcow2"} {
		qemuimg.Run(t, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, ov))
	}
	qemuimg.IO(t, filepath.Join(dir, "other.qcow2"), "qcow2", "write -P 9 0 64k")
	holdWithQEMU(t, filepath.Join(dir, "running.qcow2"), "qcow2", false)
	// QEMU locks the overlay and its backing file one after the other:
	// wait until the base is held too (its write unshared, bit 1).
	waitLock(t, base, lockSharedBase+1, nil, &strings.Builder{})

	err := Commit(t.Context(), filepath.Join(dir, "other.qcow2"), CommitOptions{})
	wantInUse(t, "commit", err, lockWriteMsg, `open backing file "`+base+`"`)
	qemuWorks(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0 0 64k", base) // untouched

	vms := func() (map[string][]string, error) {
		return map[string][]string{
			"web":   {filepath.Join(dir, "running.qcow2")},
			"db":    {filepath.Join(dir, "none.qcow2")},
			"other": nil,
		}, nil
	}
	named := NameHolder(err, vms)
	if want := "image is in use by vm web (" + lockWriteMsg + ")"; !strings.Contains(named.Error(), want) || !errors.Is(named, ErrInUse) {
		t.Errorf("named: got %q, want it to contain %q and wrap ErrInUse", named, want)
	}
	if got := NameHolder(err, func() (map[string][]string, error) { return nil, nil }); got.Error() != err.Error() {
		t.Errorf("no VM uses it: got %q, want %q", got, err)
	}
	plain := errors.New("not in use")
	if got := NameHolder(plain, vms); got != plain {
		t.Errorf("other error: got %v", got)
	}
}

// TestTwoWriters: two processes writing one image: the second is refused
// until the first closes it; within one process, a second open is refused
// too (the locks belong to open files, not to processes).
func TestTwoWriters(t *testing.T) {
	qemuimg.Require(t)
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", p, "1M")

	first, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(p, OpenOptions{})
	wantInUse(t, "second open in one process", err, lockWriteMsg, p)
	first.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldImage$", "-test.v")
	cmd.Env = append(os.Environ(), "VMTUI_TEST_HOLD="+p)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "holding" {
	}
	if sc.Err() != nil {
		t.Fatal(sc.Err())
	}
	wantInUse(t, "write while another process writes", Resize(t.Context(), p, 2*oneMiB), lockWriteMsg, p)
	_, err = Open(p, OpenOptions{ReadOnly: true})
	wantInUse(t, "read while another process writes", err, lockSharedMsg, p)
	qemuFails(t, lockWriteMsg, "qemu-io", "-f", "qcow2", "-c", "write 0 512", p)

	stdin.Close()
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	if err := Resize(t.Context(), p, 2*oneMiB); err != nil {
		t.Errorf("resize once the other writer is gone: %v", err)
	}
}

// TestHelperHoldImage is the other process of TestTwoWriters: it holds
// $VMTUI_TEST_HOLD open for writing until its standard input ends.
func TestHelperHoldImage(t *testing.T) {
	p := os.Getenv("VMTUI_TEST_HOLD")
	if p == "" {
		t.Skip("run by TestTwoWriters")
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
}
