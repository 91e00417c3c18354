package testguest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Disk is an image attached to the guest as a virtio disk (virtio-blk-pci).
type Disk struct {
	// Path is the image file.
	Path string
	// Format is "qcow2" or "raw", given to QEMU, which never probes it.
	Format string
	// Serial names the disk in the guest (/sys/block/vdX/serial): letters,
	// digits and "-", at most 20 bytes.
	Serial string
	// ReadOnly attaches the image read-only (readonly=on): QEMU then
	// takes no write lock on it, and several guests or drives may share it.
	ReadOnly bool
	// DetectZeroes makes QEMU turn the guest's writes of zeros into zero
	// writes (detect-zeroes=on): qcow2 zero clusters instead of data.
	DetectZeroes bool
}

// Script describes a run of [RunScript].
type Script struct {
	// Text is the shell script (busybox sh) the guest runs. It need not
	// power off: the guest does, after a sync, once the script exits.
	Text string
	// Disks are attached in this order, after the disk holding the script.
	Disks []Disk
	// Args are more QEMU arguments (a NIC, say).
	Args []string
	// Timeout bounds the whole run, boot included; 0 means
	// DefaultScriptTimeout.
	Timeout time.Duration
}

// DefaultScriptTimeout bounds a run of RunScript by default: a boot, a few
// seconds under TCG, and a script that reads or writes some MiB.
const DefaultScriptTimeout = BootTimeout + 2*time.Minute

// scriptSerial is the serial number of the disk that holds the script.
const scriptSerial = "vmtui-script"

// RunScript boots the test guest under TCG with s.Disks attached, runs
// s.Text in it and waits for the guest to power off. It returns what the
// script printed on the serial console (standard output and error), lines
// ending in "\n". The test fails, with the serial log, if the guest is not
// there to boot (skipped outside CI), the script exits with a non-zero
// status, or QEMU runs longer than s.Timeout (it is killed then) or exits
// with an error.
func RunScript(t testing.TB, s Script) string {
	t.Helper()
	kernel, initrd := Paths(t)
	qemu := QEMU(t)
	for _, d := range s.Disks {
		if d.Serial == "" || d.Serial == scriptSerial || len(d.Serial) > 20 ||
			strings.ContainsFunc(d.Serial, func(r rune) bool {
				return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-')
			}) {
			t.Fatalf("testguest: disk %q: bad serial %q", d.Path, d.Serial)
		}
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = DefaultScriptTimeout
	}

	dir := t.TempDir()
	// The script disk: the text padded with NULs to whole 4 KiB blocks
	// (a raw image's size is used in 512-byte sectors).
	text := []byte(s.Text)
	text = append(text, make([]byte, 4096-len(text)%4096)...)
	scriptDisk := filepath.Join(dir, "script.raw")
	if err := os.WriteFile(scriptDisk, text, 0o644); err != nil {
		t.Fatal(err)
	}
	serialLog := filepath.Join(dir, "serial.log")

	args := []string{
		"-accel", "tcg",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-machine", Machine, "-m", Memory, "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", Cmdline + " " + ScriptParam + scriptSerial + " " + ScriptPoweroffParam,
		"-chardev", "file,id=ser0,path=" + serialLog,
		"-serial", "chardev:ser0",
	}
	disks := append([]Disk{{Path: scriptDisk, Format: "raw", Serial: scriptSerial, ReadOnly: true}}, s.Disks...)
	for i, d := range disks {
		drive := "file=" + qemuEscape(d.Path) + ",format=" + d.Format + ",if=none,id=disk" + strconv.Itoa(i)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		if d.DetectZeroes {
			drive += ",detect-zeroes=on"
		}
		args = append(args, "-drive", drive,
			"-device", "virtio-blk-pci,drive=disk"+strconv.Itoa(i)+",serial="+d.Serial)
	}
	args = append(args, s.Args...)

	var qemuOut bytes.Buffer
	cmd := exec.Command(qemu, args...)
	cmd.Stdout = &qemuOut
	cmd.Stderr = &qemuOut
	// No orphan when the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case waitErr = <-exited:
	case <-timer.C:
		cmd.Process.Kill()
		<-exited
		waitErr = fmt.Errorf("still running after %v: killed", timeout)
	}
	elapsed := time.Since(start).Round(time.Millisecond)

	raw, err := os.ReadFile(serialLog)
	if err != nil {
		t.Fatalf("testguest: %v\nqemu:\n%s", err, qemuOut.String())
	}
	log := strings.ReplaceAll(string(raw), "\r\n", "\n")
	out, status, err := scriptOutput(log)
	switch {
	case waitErr != nil:
		t.Fatalf("testguest: qemu: %v\nserial log:\n%s\nqemu:\n%s", waitErr, log, qemuOut.String())
	case err != nil:
		t.Fatalf("testguest: %v\nserial log:\n%s\nqemu:\n%s", err, log, qemuOut.String())
	case status != 0:
		t.Fatalf("testguest: the script exited with status %d; it printed:\n%s", status, out)
	}
	t.Logf("testguest: the script ran and the guest powered off %v after QEMU started", elapsed)
	return out
}

// scriptOutput returns what the script printed in a serial log (its lines
// between ScriptStart and ScriptExit) and its exit status.
func scriptOutput(log string) (string, int, error) {
	i := strings.Index(log, ScriptStart+"\n")
	if i < 0 {
		return "", 0, errors.New("the guest did not start the script")
	}
	out := log[i+len(ScriptStart)+1:]
	j := strings.LastIndex(out, ScriptExit)
	if j < 0 || (j > 0 && out[j-1] != '\n') {
		return out, 0, errors.New("the script did not finish")
	}
	line, _, _ := strings.Cut(out[j+len(ScriptExit):], "\n")
	status, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return out, 0, fmt.Errorf("exit line %q: %v", ScriptExit+line, err)
	}
	return out[:j], status, nil
}

// qemuEscape doubles the commas in a value of a QEMU option list.
func qemuEscape(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}
