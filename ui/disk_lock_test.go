package ui

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// realDisks is the fake backend, but for disks, which it really makes.
type realDisks struct{ *fakeBackend }

func (b realDisks) CreateDisk(path string, opts disk.CreateOptions) error {
	return disk.Create(path, opts)
}

// TestDiskCreateNamesTheVM: an overlay on a base that a running VM writes
// is refused, and the TUI's error names the VM.
func TestDiskCreateNamesTheVM(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "web.qcow2")
	qemuimg.Run(t, "create", "-f", "qcow2", base, "1M")

	// qemu-io holds the image for writing, as web's QEMU would.
	cmd := exec.Command("qemu-io", "-f", "qcow2", base)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when qemu-io has exited; then waitErr and out are its
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { stdin.Close(); <-exited })
	// Held once QEMU's lock bytes are set: looked at with F_OFD_GETLK, which
	// takes no lock (a qemu-img info, which does, could make qemu-io fail).
	f, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// qcow2 read-write: permissions 100 (consistent read) and 101
	// (write), shared permissions 201 (write) and 203 (resize) refused.
	for _, off := range []int64{100, 101, 201, 203} {
		for deadline := time.Now().Add(60 * time.Second); ; {
			lk := unix.Flock_t{Type: unix.F_WRLCK, Start: off, Len: 1}
			if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
				t.Fatal(err)
			}
			if lk.Type != unix.F_UNLCK {
				break
			}
			select {
			case <-exited:
				t.Fatalf("qemu-io exited (%v) before locking the image: %q", waitErr, out.String())
			default:
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				t.Fatalf("qemu-io did not lock byte %d of the image within 60 s: %q", off, out.String())
			}
			time.Sleep(10 * time.Millisecond) // polling for qemu-io's lock
		}
	}

	fake := newFake()
	fake.defs["web"] = &config.VM{ID: 1, Name: "web", Disks: []config.Disk{{Path: base}}}
	overlay := filepath.Join(dir, "overlay.qcow2")
	msg := diskCreateCmd(realDisks{fake}, overlay, disk.CreateOptions{BackingFile: "web.qcow2"})()
	done, ok := msg.(diskDoneMsg)
	if !ok {
		t.Fatalf("got %T, want diskDoneMsg", msg)
	}
	want := `image is in use by vm web (Failed to get shared "write" lock)`
	if done.err == nil || !strings.Contains(done.err.Error(), want) {
		t.Errorf("got %v, want an error containing %q", done.err, want)
	}
	if _, err := os.Stat(overlay); err == nil {
		t.Error("the refused overlay was left behind")
	}
}
