package disk

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// qcowChain makes, with qemu-img and qemu-io, a chain of every shape a
// qcow image takes part in: qcow on raw, qcow on qcow, qcow2 on qcow. It
// returns the images top first.
func qcowChain(t *testing.T, dir string) []string {
	t.Helper()
	qemuimg.Require(t)
	in := func(n string) string { return filepath.Join(dir, n) }
	qemuimg.Run(t, "create", "-q", "-f", "raw", in("base.raw"), "3M")
	qemuimg.IO(t, in("base.raw"), "raw", "write -P 0x11 0 3M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", in("a.qcow"), "4M")
	qemuimg.IO(t, in("a.qcow"), "qcow", "write -P 0x22 1M 4k", "write -z 2M 512", "write -P 0x23 3587k 3584")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "-b", "a.qcow", "-F", "qcow", in("b.qcow"), "4M")
	qemuimg.IO(t, in("b.qcow"), "qcow", "write -P 0x33 1M 512", "write -P 0x34 3M 8k")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "b.qcow", "-F", "qcow", in("c.qcow2"), "5M")
	qemuimg.IO(t, in("c.qcow2"), "qcow2", "write -P 0x44 0 64k", "write -P 0x45 4M 1M")
	return []string{in("c.qcow2"), in("b.qcow"), in("a.qcow")}
}

func readImage(t *testing.T, path string) []byte {
	t.Helper()
	img, err := Open(path, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if n, err := img.ReadAt(b, 0); n != len(b) || err != nil && err != io.EOF {
		t.Fatalf("read %s: %d bytes, %v", path, n, err)
	}
	return b
}

func TestQcowChains(t *testing.T) {
	dir := t.TempDir()
	imgs := qcowChain(t, dir)
	for _, p := range imgs {
		want := qemuimg.ToRaw(t, p, filepath.Join(t.TempDir(), "flat.raw"))
		if got := readImage(t, p); !bytes.Equal(got, want) {
			t.Errorf("%s reads differently from qemu-img's flattening", p)
		}
		if ft, err := DetectFormat(p); err != nil || ft != map[bool]Format{true: FormatQcow2, false: FormatQcow}[strings.HasSuffix(p, "2")] {
			t.Errorf("DetectFormat(%s) = %s, %v", p, ft, err)
		}
		// Convert from qcow (and through it), to both formats.
		for _, f := range []Format{FormatQcow2, FormatRaw} {
			out := filepath.Join(t.TempDir(), "out."+string(f))
			if err := Convert(context.Background(), p, out, ConvertOptions{Format: f}); err != nil {
				t.Fatal(err)
			}
			qemuimg.Compare(t, p, map[bool]string{true: "qcow2", false: "qcow"}[strings.HasSuffix(p, "2")], out, string(f))
		}
	}
}

func TestQcowInfo(t *testing.T) {
	dir := t.TempDir()
	imgs := qcowChain(t, dir)
	info, err := Info(context.Background(), imgs[1], InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := qemuimg.ImageInfo(t, imgs[1])
	if info.Format != "qcow" || string(info.Format) != q.Format || info.VirtualSize != q.VirtualSize ||
		info.ClusterSize != q.ClusterSize || info.BackingFilename != q.BackingFilename || info.BackingFilename != "a.qcow" {
		t.Fatalf("info %+v, qemu-img %+v", info, q)
	}
	if info.BackingImage == nil || info.BackingImage.Format != FormatQcow || info.BackingImage.BackingImage == nil ||
		info.BackingImage.BackingImage.Format != FormatRaw {
		t.Fatalf("backing chain: %s", info)
	}
	if s := info.String(); !strings.Contains(s, "file format: qcow\n") || !strings.Contains(s, "cluster_size: 512\n") {
		t.Fatalf("info:\n%s", s)
	}
	enc := filepath.Join(dir, "enc.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "--object", "secret,id=s,data=pw", "-o", "encryption=on,encrypt.key-secret=s", enc, "1M")
	info, err = Info(context.Background(), enc, InfoOptions{})
	if err != nil || !info.Encrypted || !strings.Contains(info.String(), "encrypted: yes\n") {
		t.Fatalf("info of an encrypted image: %v %v", info, err)
	}
	if _, err := Open(enc, OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "AES-encrypted") {
		t.Fatalf("open of an encrypted image: %v", err)
	}
}

func TestQcowCheck(t *testing.T) {
	dir := t.TempDir()
	imgs := qcowChain(t, dir)
	res, err := Check(context.Background(), imgs[1], qcow2.RepairNone, CheckOptions{})
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	if _, err := Check(context.Background(), imgs[1], qcow2.RepairAll, CheckOptions{}); err == nil || !strings.Contains(err.Error(), "cannot be repaired") {
		t.Fatalf("repair: %v", err)
	}
	fi, _ := os.Stat(imgs[1])
	if err := os.Truncate(imgs[1], fi.Size()+1024); err != nil {
		t.Fatal(err)
	}
	if res, err := Check(context.Background(), imgs[1], qcow2.RepairNone, CheckOptions{}); err != nil || res.Leaks != 2 {
		t.Fatalf("check of a leaking image: %+v, %v", res, err)
	}
}

// TestConvertToQcow: every source converts to qcow, plain and compressed
// (which qemu-img 7.2 cannot do), and qemu-img reads the result as the
// source; the output checks clean.
func TestConvertToQcow(t *testing.T) {
	dir := t.TempDir()
	imgs := qcowChain(t, dir)
	src := append(imgs, filepath.Join(dir, "base.raw"))
	for i, p := range src {
		srcFmt := map[bool]string{true: "qcow2", false: "qcow"}[strings.HasSuffix(p, "2")]
		if strings.HasSuffix(p, ".raw") {
			srcFmt = "raw"
		}
		for _, c := range []bool{false, true} {
			out := filepath.Join(dir, "conv"+string(rune('0'+i))+map[bool]string{true: "c", false: ""}[c]+".qcow")
			if err := Convert(context.Background(), p, out, ConvertOptions{Format: FormatQcow, Compress: c}); err != nil {
				t.Fatal(err)
			}
			qemuimg.Compare(t, p, srcFmt, out, "qcow")
			if info := qemuimg.ImageInfo(t, out); info.Format != "qcow" {
				t.Fatalf("qemu-img info %s: %+v", out, info)
			}
			res, err := Check(context.Background(), out, qcow2.RepairNone, CheckOptions{})
			if err != nil || res.Corruptions != 0 || res.Leaks != 0 || c && res.CompressedClusters == 0 {
				t.Fatalf("check %s: %+v, %v", out, res, err)
			}
		}
	}
	if err := Convert(context.Background(), src[0], filepath.Join(dir, "x.qcow"), ConvertOptions{Format: FormatQcow, ClusterSize: 1 << 17}); err == nil {
		t.Fatal("a 128 KiB qcow cluster was accepted")
	}
}

// TestCreateQcow: an overlay made by Create, written by Open with
// partial-cluster writes (copy-on-write from the base), reads in qemu-img
// as in vmtui; commit into and from qcow; resize refused.
func TestCreateQcow(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow")
	if err := Create(base, CreateOptions{Format: FormatQcow, Size: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	if info := qemuimg.ImageInfo(t, base); info.Format != "qcow" || info.VirtualSize != 2<<20 || info.ClusterSize != 4096 {
		t.Fatalf("qemu-img info: %+v", info)
	}
	qemuimg.IO(t, base, "qcow", "write -P 0x61 0 2M")
	ov := filepath.Join(dir, "ov.qcow")
	if err := Create(ov, CreateOptions{Format: FormatQcow, BackingFile: "base.qcow", ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(ov, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("hello"), 4097); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x61}, 2<<20)
	copy(want[4097:], "hello")
	if got := qemuimg.ToRaw(t, ov, filepath.Join(dir, "ov.raw")); !bytes.Equal(got, want) {
		t.Fatal("qemu-img reads the overlay differently")
	}
	if info := qemuimg.ImageInfo(t, ov); info.BackingFilename != "base.qcow" {
		t.Fatalf("qemu-img info: %+v", info)
	}
	if err := Commit(context.Background(), ov, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readImage(t, base); !bytes.Equal(got, want) {
		t.Fatal("the base after a commit differs")
	}
	qemuimg.Compare(t, base, "qcow", filepath.Join(dir, "ov.raw"), "raw")
	if err := Resize(context.Background(), base, 4<<20); err == nil || !strings.Contains(err.Error(), "qcow") {
		t.Fatalf("resize: %v", err)
	}
	if err := Create(filepath.Join(dir, "big.qcow"), CreateOptions{Format: FormatQcow, BackingFile: "base.qcow", Size: 1 << 30}); err == nil {
		t.Fatal("a size other than the base's was accepted")
	}
}
