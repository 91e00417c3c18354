package disk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
)

// TestGuestReadsAndWritesQcow: qcow (version 1) images that vmtui makes
// (plain, compressed, an overlay on a qcow base) are a guest's disks under
// QEMU (format=qcow): the guest reads them as vmtui wrote them, and what it
// writes into one reads back the same through vmtui and qemu-img.
func TestGuestReadsAndWritesQcow(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	qemuimg.Require(t)
	testguest.Paths(t)
	testguest.QEMU(t)
	dir := t.TempDir()
	vmtui := buildVMTUI(t)

	base := make([]byte, guestDiskSize)
	copy(base, guestRandom(11, guestMiB))
	copy(base[4*guestMiB:], repeatLine("compressible line of a qcow image", 2*guestMiB))
	copy(base[9*guestMiB+777:], guestRandom(12, 100000))
	if err := os.WriteFile(filepath.Join(dir, "src.raw"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	runVMTUI(t, vmtui, dir, "disk", "convert", "-O", "qcow", "src.raw", "base.qcow")
	runVMTUI(t, vmtui, dir, "disk", "convert", "-c", "-O", "qcow", "src.raw", "comp.qcow")
	runVMTUI(t, vmtui, dir, "create", "-b", "base.qcow", "write.qcow")

	// The guest's functions, without what the qcow2 test does with them.
	funcs, _, _ := strings.Cut(guestScript, "for s in ")
	script := funcs + `for s in qbase qcomp qwrite; do sums $s $s; done
w=$(dev qwrite)
yes '` + guestWriteText + `' | head -c 300000 | dd of=$w bs=1000 seek=123 conv=notrunc 2>/dev/null
printf '` + guestEndText + `' | dd of=$w bs=1 seek=$((16777216 - 11)) conv=notrunc 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
sums qwrite qwrite-after
`
	out := testguest.RunScript(t, testguest.Script{
		Text: script,
		Disks: []testguest.Disk{
			{Path: filepath.Join(dir, "base.qcow"), Format: "qcow", Serial: "qbase", ReadOnly: true},
			{Path: filepath.Join(dir, "comp.qcow"), Format: "qcow", Serial: "qcomp", ReadOnly: true},
			{Path: filepath.Join(dir, "write.qcow"), Format: "qcow", Serial: "qwrite"},
		},
	})
	seen, err := parseGuestSums(out)
	if err != nil {
		t.Fatalf("%v; the script printed:\n%s", err, out)
	}
	written := bytes.Clone(base)
	copy(written[123000:423000], repeatLine(guestWriteText, 300000))
	copy(written[guestDiskSize-11:], guestEndText)
	for _, c := range []struct {
		label string
		want  []byte
	}{{"qbase", base}, {"qcomp", base}, {"qwrite", base}, {"qwrite-after", written}} {
		t.Run("guest read "+c.label, func(t *testing.T) { checkGuestSums(t, seen[c.label], c.want) })
	}
	got := qemuimg.ToRaw(t, filepath.Join(dir, "write.qcow"), filepath.Join(dir, "write-qemu.raw"))
	compareBytes(t, "qemu-img convert -O raw", got, written)
	runVMTUI(t, vmtui, dir, "disk", "convert", "-O", "raw", "write.qcow", "write-vmtui.raw")
	got, err = os.ReadFile(filepath.Join(dir, "write-vmtui.raw"))
	if err != nil {
		t.Fatal(err)
	}
	compareBytes(t, "vmtui disk convert -O raw", got, written)
	if stdout := runVMTUI(t, vmtui, dir, "disk", "check", "write.qcow"); !strings.Contains(stdout, "No errors were found on the image.") {
		t.Errorf("vmtui disk check write.qcow: %q", stdout)
	}
}
