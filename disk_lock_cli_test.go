package main

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/testguest"
)

// Images in use: vmtui and QEMU keep out of each other's images, and
// files that are not images are refused at once.

// running is a vmtui command running in the background.
type running struct {
	cmd    *exec.Cmd
	stderr io.ReadCloser
	seen   bytes.Buffer
}

// progressRE matches a progress line; its group is the percentage.
var progressRE = regexp.MustCompile(`\((\d+\.\d\d)/100%\)`)

// startWithProgress starts vmtui in dir with args (a command with -p) and
// returns once it reports progress past 0: the work on its images has
// begun, and their locks are taken.
func startWithProgress(t *testing.T, dir string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(vmtuiBin, args...)}
	r.cmd.Dir = dir
	var err error
	if r.stderr, err = r.cmd.StderrPipe(); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.wait()
		}
	})
	buf := make([]byte, 256)
	for {
		n, err := r.stderr.Read(buf)
		r.seen.Write(buf[:n])
		for _, m := range progressRE.FindAllStringSubmatch(r.seen.String(), -1) {
			if p, _ := strconv.ParseFloat(m[1], 64); p > 0 && p < 100 {
				return r
			}
		}
		if err != nil {
			t.Fatalf("vmtui %q: no progress past 0 before %v; stderr %q", args, err, tail(r.seen.String()))
		}
	}
}

// wait reads the rest of stderr and waits for the command to exit.
func (r *running) wait() error {
	rest, _ := io.ReadAll(r.stderr)
	r.seen.Write(rest)
	return r.cmd.Wait()
}

// dirNames lists dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// writeText writes size bytes of text-like data to path: slow to compress,
// unlike zeros (skipped) or random data (given up on at once).
func writeText(t *testing.T, path string, size int) {
	t.Helper()
	words := strings.Fields("qcow2 cluster refcount table header backing chain overlay snapshot sector guest vmtui")
	rng := rand.New(rand.NewPCG(3, 4))
	var b bytes.Buffer
	for b.Len() < size {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(" \n"[rng.IntN(2)])
	}
	if err := os.WriteFile(path, b.Bytes()[:size], 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConvertKilled: a conversion killed with SIGKILL leaves nothing behind
// (its output is an unnamed temporary file until complete); while it runs,
// its input cannot be written by another vmtui.
func TestConvertKilled(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	writeText(t, filepath.Join(dir, "text.raw"), 96<<20)
	ok(t, dir, "disk", "convert", "-t", "unsafe", "text.raw", "text.qcow2")

	r := startWithProgress(t, dir, "disk", "convert", "-p", "-c", "text.qcow2", "out.qcow2")
	res := vmtui(t, dir, "disk", "resize", "text.qcow2", "+1M")
	if want := `vmtui: resize "text.qcow2": open "text.qcow2": image is in use by another process (Failed to get "write" lock)`; res.code != 1 || !strings.Contains(res.stderr, want) {
		t.Errorf("resize of the input of a running convert: exit %d, stderr %q; want exit 1 and %q", res.code, res.stderr, want)
	}
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := r.wait()
	if ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("convert: %v, want it killed (did it finish first? make the input larger)\nstderr: %q", err, tail(r.seen.String()))
	}
	if got, want := dirNames(t, dir), []string{"text.qcow2", "text.raw"}; !slices.Equal(got, want) {
		t.Errorf("after a killed convert the directory holds %q, want %q", got, want)
	}
	requireClean(t, dir, "text.qcow2")
	ok(t, dir, "disk", "resize", "text.qcow2", "+1M") // nobody holds it now
}

// TestDiskWritersExclude: while one vmtui writes an image (a long commit
// into it), another vmtui cannot write it, qemu-io cannot write it, and
// QEMU does not start on it.
func TestDiskWritersExclude(t *testing.T) {
	requireQEMU(t)
	testguest.QEMU(t)
	dir := t.TempDir()
	// 2 TiB of zero clusters over a sparse raw base: the commit punches a
	// hole per 2 MiB chunk, which takes seconds.
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
	if err := img.(interface{ WriteZeroes(off, n int64) error }).WriteZeroes(0, size); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	r := startWithProgress(t, dir, "disk", "commit", "-p", "top.qcow2")
	fails(t, dir, 1, `vmtui: resize "base.raw": open "base.raw": image is in use by another process (Failed to get "write" lock)`,
		"disk", "resize", "base.raw", "+1M")
	fails(t, dir, 1, `commit "top.qcow2": open backing file "base.raw" of "top.qcow2": image is in use by another process (Failed to get "write" lock)`,
		"disk", "commit", "top.qcow2")
	if out, errOut, code := tool(t, dir, "qemu-io", "-f", "raw", "-c", "write 0 512", "base.raw"); code == 0 || !strings.Contains(errOut, `Failed to get "write" lock`) {
		t.Errorf("qemu-io write while vmtui writes: exit %d, %s%s; want QEMU's lock error", code, out, errOut)
	}
	home := vmHome(t)
	res := vmcli(t, home, "start", "-d", base, "-m", "64M", "held")
	if res.code != 1 || !strings.Contains(res.stderr, `Failed to get "write" lock`) {
		t.Errorf("start on an image vmtui writes: exit %d, stderr %q; want QEMU's lock error", res.code, res.stderr)
	}

	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := r.wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted commit: %v, want exit 130 (did it finish first?)\nstderr: %q", err, tail(r.seen.String()))
	}
	qemuImg(t, dir, "info", "base.raw") // and now QEMU can have it
}

// TestDiskInUseByVM: the disk of a running VM, and the base under it,
// cannot be written, nor read but with -U, and the errors name the VM.
func TestDiskInUseByVM(t *testing.T) {
	requireQEMU(t)
	kernel, initrd := requireGuest(t)
	home := vmHome(t)
	qemuImg(t, home, "create", "-q", "-f", "qcow2", "base.qcow2", "4M")
	qemuImg(t, home, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "disk.qcow2")
	qemuImg(t, home, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "other.qcow2")
	vmOK(t, home, `vmtui: started vm 1 successfully, tty /dev/pts/[0-9]+\n`, "start", "-b", kernel, "--initrd", initrd,
		"--append", guestCmdline, "-m", "128M", "-d", filepath.Join(home, "disk.qcow2"), "web")

	const (
		byWeb  = "image is in use by vm web ("
		write  = `Failed to get "write" lock)`
		shared = `Failed to get shared "write" lock)`
		hint   = "; -U reads it anyway, as it is at this moment\n"
	)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"disk", "resize", "disk.qcow2", "+1M"}, `vmtui: resize "disk.qcow2": open "disk.qcow2": ` + byWeb + write + "\n"},
		{[]string{"disk", "check", "-r", "all", "disk.qcow2"}, `vmtui: check "disk.qcow2": ` + byWeb + write + "\n"},
		{[]string{"disk", "check", "disk.qcow2"}, `vmtui: check "disk.qcow2": ` + byWeb + shared + hint},
		{[]string{"disk", "info", "disk.qcow2"}, `vmtui: info "disk.qcow2": ` + byWeb + shared + hint},
		{[]string{"disk", "convert", "disk.qcow2", "copy.qcow2"}, `vmtui: convert "disk.qcow2" to "copy.qcow2": open "disk.qcow2": ` + byWeb + shared + hint},
		{[]string{"disk", "resize", "base.qcow2", "+1M"}, `vmtui: resize "base.qcow2": open "base.qcow2": ` + byWeb + write + "\n"},
		{[]string{"disk", "commit", "other.qcow2"}, `vmtui: commit "other.qcow2": open backing file "base.qcow2" of "other.qcow2": ` + byWeb + write + "\n"},
		{[]string{"create", "-b", "disk.qcow2", "new.qcow2"}, `vmtui: create "new.qcow2": open backing file "disk.qcow2": ` + byWeb + shared + "\n"},
	} {
		r := vmcli(t, home, tt.args...)
		if r.code != 1 || r.stderr != tt.want || r.stdout != "" {
			t.Errorf("vmtui %q: exit %d, stdout %q, stderr %q\nwant exit 1 and stderr %q", tt.args, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	for _, args := range [][]string{
		{"disk", "info", "-U", "disk.qcow2"},
		{"disk", "check", "--force-share", "disk.qcow2"},
		{"disk", "convert", "-U", "disk.qcow2", "copy.qcow2"},
	} {
		if r := vmcli(t, home, args...); r.code != 0 {
			t.Errorf("vmtui %q: exit %d, stderr %q; want success", args, r.code, r.stderr)
		}
	}

	if r := vmcli(t, home, "stop", "-f", "web"); r.code != 0 {
		t.Fatalf("stop -f web: exit %d, stderr %q", r.code, r.stderr)
	}
	// QEMU is gone, and its locks with it.
	if r := vmcli(t, home, "disk", "resize", "disk.qcow2", "+1M"); r.code != 0 {
		t.Errorf("resize after the VM stopped: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestFIFONotADisk: a FIFO as a disk, a base or an input is refused at
// once by every command, vmtui start -d included (which used to hang in
// open, deaf to SIGTERM).
func TestFIFONotADisk(t *testing.T) {
	requireQEMU(t)
	home := vmHome(t)
	fifo := filepath.Join(home, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, home, "create", "-q", "-f", "qcow2", "-u", "-b", "pipe", "-F", "raw", "overlay.qcow2", "1M")
	const isFIFO = `a named pipe (FIFO), not a regular file or block device`
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"start", "-d", fifo, "-m", "64M", "piped"}, `vmtui: could not open disk image(s): "` + fifo + `": ` + isFIFO},
		{[]string{"disk", "info", "pipe"}, `vmtui: info "pipe": ` + isFIFO},
		{[]string{"disk", "check", "pipe"}, `vmtui: check "pipe": ` + isFIFO},
		{[]string{"disk", "resize", "pipe", "+1M"}, `vmtui: info "pipe": ` + isFIFO},
		{[]string{"disk", "resize", "pipe", "1M"}, `vmtui: resize "pipe": open "pipe": ` + isFIFO},
		{[]string{"disk", "convert", "pipe", "out.qcow2"}, `vmtui: convert "pipe" to "out.qcow2": open "pipe": ` + isFIFO},
		{[]string{"disk", "commit", "overlay.qcow2"}, `open backing file "pipe" of "overlay.qcow2": ` + isFIFO},
		{[]string{"disk", "convert", "overlay.qcow2", "out.qcow2"}, `open backing file "pipe" of "overlay.qcow2": ` + isFIFO},
		{[]string{"create", "-b", "pipe", "new.qcow2"}, `vmtui: create "new.qcow2": open backing file "pipe": ` + isFIFO},
		{[]string{"create", "-i", "pipe", "new.qcow2"}, isFIFO},
	} {
		start := time.Now()
		r := vmcli(t, home, tt.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("vmtui %q: exit %d, stderr %q; want exit 1 and %q", tt.args, r.code, r.stderr, tt.want)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("vmtui %q took %v", tt.args, d)
		}
	}
}
