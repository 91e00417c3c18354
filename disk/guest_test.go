package disk_test

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
)

// This file tests vmtui's images through a real guest: the test guest reads
// images vmtui made (attached as virtio disks) and must see exactly the
// bytes they hold, and what the guest writes into them reads back the same
// through vmtui and through qemu-img.

const (
	guestMiB      = 1 << 20
	guestDiskSize = 16 * guestMiB
)

// The guest's writes: busybox yes prints its argument and a newline, over
// and over.
const (
	guestWriteText      = "vmtui guest wrote this"
	guestCompressedText = "into a compressed cluster"
	guestEndText        = "end of disk"
)

// guestScript reads every disk in 1 MiB pieces (printing "size SERIAL N"
// and "md5 LABEL I MD5" lines), then writes into the disks "write" and
// "compressed" (offsets as in guestWrites) and reads both again from the
// disk, not the guest's page cache.
const guestScript = `set -e
dev() {
	for d in /sys/block/vd*; do
		if [ "$(cat $d/serial)" = "$1" ]; then
			echo /dev/${d##*/}
			return 0
		fi
	done
	echo "no virtio disk with serial $1" >&2
	return 1
}
sums() {
	dv=$(dev $1)
	size=$(blockdev --getsize64 $dv)
	echo "size $2 $size"
	i=0
	while [ $i -lt $((size / 1048576)) ]; do
		echo "md5 $2 $i $(dd if=$dv bs=1048576 skip=$i count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
		i=$((i + 1))
	done
}
for s in base overlay compressed raw write; do sums $s $s; done

w=$(dev write)
c=$(dev compressed)
r=$(dev raw)
yes '` + guestWriteText + `' | head -c 300000 | dd of=$w bs=1000 seek=123 conv=notrunc 2>/dev/null
dd if=/dev/zero of=$w bs=65536 seek=8 count=4 conv=notrunc 2>/dev/null
dd if=$r of=$w bs=4096 skip=2048 seek=3072 count=100 conv=notrunc 2>/dev/null
printf '` + guestEndText + `' | dd of=$w bs=1 seek=$((16777216 - 11)) conv=notrunc 2>/dev/null
yes '` + guestCompressedText + `' | head -c 4096 | dd of=$c bs=4096 seek=1042 conv=notrunc 2>/dev/null
dd if=/dev/zero of=$c bs=2048 seek=2143 count=2 conv=notrunc 2>/dev/null
dd if=$r of=$c bs=65536 seek=80 count=1 conv=notrunc 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
sums write write-after
sums compressed compressed-after
`

// guestWrites applies to want what guestScript writes into the disk
// "write" (base.qcow2's bytes as base) and returns it.
func guestWrites(want, base []byte) []byte {
	copy(want[123000:423000], repeatLine(guestWriteText, 300000))
	clear(want[512<<10 : 768<<10])
	copy(want[12*guestMiB:12*guestMiB+100*4096], base[8*guestMiB:])
	copy(want[guestDiskSize-len(guestEndText):], guestEndText)
	return want
}

// guestCompressedWrites applies to want what guestScript writes into the
// disk "compressed" and returns it.
func guestCompressedWrites(want, base []byte) []byte {
	copy(want[1042*4096:], repeatLine(guestCompressedText, 4096))
	clear(want[2143*2048 : 2145*2048])
	copy(want[80*65536:81*65536], base)
	return want
}

// repeatLine returns the first n bytes of line and a newline, repeated.
func repeatLine(line string, n int) []byte {
	return bytes.Repeat([]byte(line+"\n"), n/(len(line)+1)+1)[:n]
}

// TestGuestReadsAndWritesImages attaches vmtui-made images to the test
// guest as virtio disks: a qcow2 base imported from a raw file, a qcow2
// overlay on it made by "vmtui create -b" with clusters rewritten through
// vmtui's engine, a compressed qcow2 made by "vmtui disk convert -c", a
// raw image made by "vmtui disk convert -O raw", and a fresh overlay. The
// guest must read exactly the bytes the host expects from each. It then
// writes into the fresh overlay (with detect-zeroes, so QEMU makes zero
// clusters over the base's data) and into compressed clusters; what it
// wrote reads back the same through disk.Open, "vmtui disk convert -O raw"
// and qemu-img, and both "vmtui disk check" and "qemu-img check" find the
// images clean. One guest boot does it all.
func TestGuestReadsAndWritesImages(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	qemuimg.Require(t)
	testguest.Paths(t)
	testguest.QEMU(t)
	dir := t.TempDir()
	vmtui := buildVMTUI(t)

	// The base: data, holes, explicit zeros, compressible text, data that
	// starts and ends inside clusters, and the last cluster.
	base := make([]byte, guestDiskSize)
	src, err := os.OpenFile(filepath.Join(dir, "src.raw"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Truncate(guestDiskSize); err != nil {
		t.Fatal(err)
	}
	for i, seg := range []struct {
		off  int64
		data []byte
	}{
		{0, guestRandom(1, guestMiB)},
		{2 * guestMiB, guestRandom(2, 64<<10+5000)},
		{3 * guestMiB, make([]byte, guestMiB)}, // zeros on disk
		{4 * guestMiB, repeatLine("compressible line of the base image", 2*guestMiB)},
		{8*guestMiB + 12345, guestRandom(3, 300000)},
		{guestDiskSize - 64<<10, guestRandom(4, 64<<10)},
	} {
		copy(base[seg.off:], seg.data)
		if _, err := src.WriteAt(seg.data, seg.off); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	runVMTUI(t, vmtui, dir, "create", "-i", "src.raw", "base.qcow2")

	// The overlay, some clusters rewritten in part or whole by the engine.
	overlay := bytes.Clone(base)
	runVMTUI(t, vmtui, dir, "create", "-b", "base.qcow2", "overlay.qcow2")
	img, err := disk.Open(filepath.Join(dir, "overlay.qcow2"), disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []struct {
		off  int64
		data []byte
	}{
		{100, guestRandom(5, 512)},
		{guestMiB - 7000, guestRandom(6, 200<<10)},
		{4*guestMiB + 128<<10, guestRandom(7, 64<<10)},
		{2*guestMiB + 100, make([]byte, 10000)},
		{guestDiskSize - 4096, guestRandom(8, 4096)},
		{12 * guestMiB, []byte("x")},
	} {
		copy(overlay[w.off:], w.data)
		if _, err := img.WriteAt(w.data, w.off); err != nil {
			t.Fatalf("overlay write %d: %v", i, err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	runVMTUI(t, vmtui, dir, "disk", "convert", "-c", "overlay.qcow2", "compressed.qcow2")
	if r := qemuimg.RequireClean(t, filepath.Join(dir, "compressed.qcow2"), false); r.CompressedClusters == 0 {
		t.Fatalf("vmtui disk convert -c made no compressed clusters: %+v", r)
	}
	runVMTUI(t, vmtui, dir, "disk", "convert", "-O", "raw", "base.qcow2", "base.raw")
	runVMTUI(t, vmtui, dir, "create", "-b", "base.qcow2", "write.qcow2")

	out := testguest.RunScript(t, testguest.Script{
		Text: guestScript,
		Disks: []testguest.Disk{
			{Path: filepath.Join(dir, "base.qcow2"), Format: "qcow2", Serial: "base", ReadOnly: true},
			{Path: filepath.Join(dir, "overlay.qcow2"), Format: "qcow2", Serial: "overlay", ReadOnly: true},
			{Path: filepath.Join(dir, "compressed.qcow2"), Format: "qcow2", Serial: "compressed"},
			{Path: filepath.Join(dir, "base.raw"), Format: "raw", Serial: "raw", ReadOnly: true},
			{Path: filepath.Join(dir, "write.qcow2"), Format: "qcow2", Serial: "write", DetectZeroes: true},
		},
	})
	seen, err := parseGuestSums(out)
	if err != nil {
		t.Fatalf("%v; the script printed:\n%s", err, out)
	}

	written := guestWrites(bytes.Clone(base), base)
	compressed := guestCompressedWrites(bytes.Clone(overlay), base)
	for _, c := range []struct {
		label string
		want  []byte
	}{
		{"base", base},
		{"overlay", overlay},
		{"compressed", overlay},
		{"raw", base},
		{"write", base},
		{"write-after", written},
		{"compressed-after", compressed},
	} {
		t.Run("guest read "+c.label, func(t *testing.T) {
			checkGuestSums(t, seen[c.label], c.want)
		})
	}

	for _, c := range []struct {
		name string
		want []byte
	}{
		{"write.qcow2", written},
		{"compressed.qcow2", compressed},
	} {
		t.Run("read back "+c.name, func(t *testing.T) {
			checkReadBack(t, vmtui, dir, c.name, c.want)
		})
	}

	// The guest's zeros over the base's data are zero clusters (QEMU's
	// detect-zeroes): the read-back above read them as zeros, not as the
	// base's data below them.
	if !qemuMapsZero(t, filepath.Join(dir, "write.qcow2"), 512<<10, 256<<10) {
		t.Errorf("qemu-img map of write.qcow2: [512 KiB, 768 KiB) is not a zero range of the overlay itself")
	}
}

// checkReadBack checks the image name in dir, written by the guest, against
// want: through disk.Open, "vmtui disk convert -O raw" (also compared with
// qemu-img compare), qemu-img convert, "vmtui disk check" and qemu-img check.
func checkReadBack(t *testing.T, vmtui, dir, name string, want []byte) {
	path := filepath.Join(dir, name)
	img, err := disk.Open(path, disk.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, img.Size())
	_, err = img.ReadAt(got, 0)
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("disk.Open(%q) read: %v", name, err)
	}
	compareBytes(t, "disk.Open and ReadAt", got, want)

	raw := strings.TrimSuffix(name, ".qcow2") + "-vmtui.raw"
	runVMTUI(t, vmtui, dir, "disk", "convert", "-O", "raw", name, raw)
	got, err = os.ReadFile(filepath.Join(dir, raw))
	if err != nil {
		t.Fatal(err)
	}
	compareBytes(t, "vmtui disk convert -O raw", got, want)
	qemuimg.Compare(t, path, "qcow2", filepath.Join(dir, raw), "raw")

	got = qemuimg.ToRaw(t, path, filepath.Join(dir, strings.TrimSuffix(name, ".qcow2")+"-qemu.raw"))
	compareBytes(t, "qemu-img convert -O raw", got, want)

	qemuimg.RequireClean(t, path, false)
	if stdout := runVMTUI(t, vmtui, dir, "disk", "check", name); !strings.Contains(stdout, "No errors were found on the image.") {
		t.Errorf("vmtui disk check %s: %q", name, stdout)
	}
}

// compareBytes fails the test unless got equals want, naming the first
// byte that differs.
func compareBytes(t *testing.T, how string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d bytes, want %d", how, len(got), len(want))
		return
	}
	for i := range got {
		if got[i] != want[i] {
			end := min(i+16, len(got))
			t.Errorf("%s: first difference at byte %d: got %x, want %x", how, i, got[i:end], want[i:end])
			return
		}
	}
}

// guestSums is what the guest printed of one disk: its size and the md5 of
// each MiB.
type guestSums struct {
	size int64
	md5  []string
}

// parseGuestSums reads the "size LABEL N" and "md5 LABEL I MD5" lines of
// guestScript; other lines (kernel messages) are skipped.
func parseGuestSums(out string) (map[string]*guestSums, error) {
	sums := map[string]*guestSums{}
	get := func(label string) *guestSums {
		if sums[label] == nil {
			sums[label] = &guestSums{}
		}
		return sums[label]
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "size":
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %q: %v", sc.Text(), err)
			}
			get(f[1]).size = n
		case len(f) == 4 && f[0] == "md5":
			s := get(f[1])
			if i, err := strconv.Atoi(f[2]); err != nil || i != len(s.md5) {
				return nil, fmt.Errorf("line %q: want MiB %d", sc.Text(), len(s.md5))
			}
			s.md5 = append(s.md5, f[3])
		}
	}
	return sums, sc.Err()
}

// checkGuestSums compares what the guest read of a disk with want.
func checkGuestSums(t *testing.T, got *guestSums, want []byte) {
	t.Helper()
	if got == nil {
		t.Fatal("the guest printed nothing of this disk")
	}
	if got.size != int64(len(want)) {
		t.Fatalf("the guest sees %d bytes, want %d", got.size, len(want))
	}
	if len(got.md5) != len(want)/guestMiB {
		t.Fatalf("the guest printed the md5 of %d MiB, want %d", len(got.md5), len(want)/guestMiB)
	}
	for i, sum := range got.md5 {
		h := md5.Sum(want[i*guestMiB : (i+1)*guestMiB])
		if w := hex.EncodeToString(h[:]); sum != w {
			t.Errorf("MiB %d: the guest read md5 %s, want %s", i, sum, w)
		}
	}
}

// qemuMapsZero reports whether qemu-img map says [off, off+n) of the qcow2
// image reads as zeros held by the image itself (depth 0, no data).
func qemuMapsZero(t *testing.T, path string, off, n int64) bool {
	t.Helper()
	out := qemuimg.Run(t, "map", "--output=json", "-f", "qcow2", path)
	var m []struct {
		Start, Length int64
		Depth         int
		Zero, Data    bool
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map %s: %v\n%s", path, err, out)
	}
	for _, e := range m {
		if e.Start+e.Length <= off || e.Start >= off+n {
			continue
		}
		if e.Depth != 0 || !e.Zero || e.Data {
			t.Logf("qemu-img map %s: %+v", path, e)
			return false
		}
	}
	return true
}

// guestRandom returns n pseudo-random bytes from seed.
func guestRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x766d747569))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// buildVMTUI builds the vmtui command into a temporary directory.
func buildVMTUI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vmtui")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/vmtui/vmtui").CombinedOutput(); err != nil {
		t.Fatalf("go build vmtui: %v\n%s", err, out)
	}
	return bin
}

// runVMTUI runs vmtui in dir and returns its standard output; the test
// fails unless it exits 0.
func runVMTUI(t *testing.T, vmtui, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(vmtui, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("vmtui %q: %v", args, err)
		}
		t.Fatalf("vmtui %q: exit %d\nstdout: %s\nstderr: %s", args, ee.ExitCode(), stdout.String(), stderr.String())
	}
	return stdout.String()
}
