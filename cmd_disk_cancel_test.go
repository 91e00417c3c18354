package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk"
)

// TestCommitInterrupted interrupts a long commit as Ctrl-C does, once it has
// started: vmtui stops, says so and exits 130, well before the commit could
// have finished.
func TestCommitInterrupted(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	// 2 TiB of zero clusters over a sparse raw base: each 2 MiB chunk
	// punches a hole in the base, which takes seconds in all, while the
	// files stay a few megabytes.
	const size = 2 << 40
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, size); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", "top.qcow2")
	img, err := disk.Open(filepath.Join(dir, "top.qcow2"), disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	zeroer, ok := img.(interface{ WriteZeroes(off, n int64) error })
	if !ok {
		t.Fatalf("%T cannot write zeroes", img)
	}
	if err := zeroer.WriteZeroes(0, size); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(vmtuiBin, "disk", "commit", "-p", "top.qcow2")
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first progress line comes once the commit has started, and with
	// it the signal handler.
	var seen bytes.Buffer
	buf := make([]byte, 256)
	for !strings.Contains(seen.String(), "(0.00/100%)") {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("reading vmtui's stderr before any progress: %v (got %q)", err, seen.String())
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		rest, _ := io.ReadAll(stderr)
		seen.Write(rest)
		done <- cmd.Wait()
	}()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("vmtui disk commit still runs 10 s after the interrupt\nstderr: %q", tail(seen.String()))
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted commit: %v, want exit status 130 (did it finish before the interrupt?)\nstderr: %q", err, tail(seen.String()))
	}
	if !strings.Contains(seen.String(), "\nvmtui: commit \"top.qcow2\": ") || !strings.HasSuffix(seen.String(), "(interrupted)\n") {
		t.Errorf("stderr %q, want the progress ended by a newline, then the error and (interrupted)", tail(seen.String()))
	}
	if strings.Contains(seen.String(), "(100.00/100%)") {
		t.Errorf("the commit finished before the interrupt took effect: make it longer")
	}
}

// tail returns the end of a long stderr.
func tail(s string) string {
	if len(s) > 500 {
		return "..." + s[len(s)-500:]
	}
	return s
}

// TestDiskCheckTruncated: vmtui disk check of the first 100,000 bytes of an
// image with data says what qemu-img check says, and exits as it does (2:
// corruptions), rather than 1 ("the check itself failed").
func TestDiskCheckTruncated(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "full.qcow2", "64M")
	qemuIO(t, dir, "full.qcow2", "qcow2", "write -P 0x55 0 3M")
	b, err := os.ReadFile(filepath.Join(dir, "full.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cut.qcow2"), b[:100000], 0o644); err != nil {
		t.Fatal(err)
	}
	r := vmtui(t, dir, "disk", "check", "cut.qcow2")
	qout, qerr, qcode := tool(t, dir, "qemu-img", "check", "cut.qcow2")
	if r.code != qcode || r.stdout != qout || r.stderr != qerr {
		t.Errorf("disk check of a truncated image: exit %d\nstdout: %s\nstderr: %s\nqemu-img check: exit %d\nstdout: %s\nstderr: %s",
			r.code, r.stdout, r.stderr, qcode, qout, qerr)
	}
	if qcode != 2 {
		t.Errorf("qemu-img check exits %d, want 2: the image is not cut where it should be", qcode)
	}
}
