package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQcowCommands: the original qcow format through the command line:
// create (-f qcow, the qcow: prefix, the .qcow extension, -b), convert to
// and from it (compressed too), info and check.
func TestQcowCommands(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "src.qcow2", "16M")

	ok(t, dir, "create", "-f", "qcow", "-s", "8M", "a.img")
	ok(t, dir, "create", "-s", "8M", "qcow:b.qcow2")
	ok(t, dir, "create", "-s", "8M", "c.qcow")
	for _, n := range []string{"a.img", "b.qcow2", "c.qcow"} {
		if info := qemuInfo(t, dir, n); info.Format != "qcow" || info.VirtualSize != 8<<20 {
			t.Errorf("qemu-img info %s: %+v", n, info)
		}
	}
	ok(t, dir, "disk", "convert", "-O", "qcow", "src.qcow2", "d.qcow")
	ok(t, dir, "disk", "convert", "-c", "src.qcow2", "e.qcow")
	for _, n := range []string{"d.qcow", "e.qcow"} {
		requireSame(t, dir, "src.qcow2", n)
		if r := ok(t, dir, "disk", "check", n); !strings.Contains(r.stdout, "No errors were found") {
			t.Errorf("disk check %s: %q", n, r.stdout)
		}
	}
	ok(t, dir, "create", "-b", "d.qcow", "f.qcow")
	requireSame(t, dir, "src.qcow2", "f.qcow")
	ok(t, dir, "create", "-b", "f.qcow", "g.qcow2")
	requireSame(t, dir, "src.qcow2", "g.qcow2")
	ok(t, dir, "disk", "convert", "g.qcow2", "h.qcow2")
	requireSame(t, dir, "src.qcow2", "h.qcow2")

	var info struct {
		Format          string `json:"format"`
		VirtualSize     int64  `json:"virtual-size"`
		ClusterSize     int64  `json:"cluster-size"`
		BackingFilename string `json:"backing-filename"`
	}
	r := ok(t, dir, "disk", "info", "--json", "f.qcow")
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatal(err)
	}
	if q := qemuInfo(t, dir, "f.qcow"); info.Format != "qcow" || info.VirtualSize != q.VirtualSize ||
		info.ClusterSize != q.ClusterSize || info.BackingFilename != "d.qcow" {
		t.Errorf("disk info --json: %+v, qemu-img %+v", info, q)
	}

	// Leaks exit 3, corruptions 2.
	fi, err := os.Stat(filepath.Join(dir, "c.qcow"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "c.qcow"), fi.Size()+8192); err != nil {
		t.Fatal(err)
	}
	if r := vmtui(t, dir, "disk", "check", "c.qcow"); r.code != 3 || !strings.Contains(r.stderr, "Leaked cluster") {
		t.Errorf("disk check of a leak: %+v", r)
	}
	// The first L1 entry of d.qcow pointed past the end of the file.
	b, err := os.ReadFile(filepath.Join(dir, "d.qcow"))
	if err != nil {
		t.Fatal(err)
	}
	copy(b[48:], []byte{0x7f, 0, 0, 0, 0, 0, 0, 0})
	if err := os.WriteFile(filepath.Join(dir, "bad.qcow"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := vmtui(t, dir, "disk", "check", "bad.qcow"); r.code != 2 || !strings.Contains(r.stderr, "past the end of the file") {
		t.Errorf("disk check of a corruption: %+v", r)
	}
	fails(t, dir, 1, "cannot resize a qcow image", "disk", "resize", "d.qcow", "32M")
	fails(t, dir, 1, "-c needs qcow2 or qcow output, not raw", "disk", "convert", "-c", "d.qcow", "x.raw")
}

// TestQcowEncrypted: an AES-encrypted qcow image is described without a
// passphrase and converted (or imported) with one, as qemu-img reads it.
func TestQcowEncrypted(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	secret := []string{"--object", "secret,id=s,data=hunter2"}
	qemuImg(t, dir, append(append([]string{"create", "-q", "-f", "qcow"}, secret...), "-o", "encryption=on,encrypt.key-secret=s", "enc.qcow", "2M")...)
	opts := "driver=qcow,file.filename=enc.qcow,encrypt.key-secret=s"
	if _, errOut, code := tool(t, dir, "qemu-io", append(secret, "--image-opts", opts, "-c", "write -P 0x42 4096 70000")...); code != 0 {
		t.Fatalf("qemu-io: %s", errOut)
	}
	qemuImg(t, dir, append(append([]string{"convert"}, secret...), "--image-opts", opts, "-O", "raw", "flat.raw")...)
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ok(t, dir, "disk", "info", "enc.qcow"); !strings.Contains(r.stdout, "encrypted: yes\n") {
		t.Errorf("disk info: %q", r.stdout)
	}
	fails(t, dir, 1, "a passphrase is needed", "disk", "convert", "enc.qcow", "x.qcow2")
	ok(t, dir, "disk", "convert", "--passphrase-file", "pw", "enc.qcow", "plain.qcow2")
	requireSame(t, dir, "flat.raw", "plain.qcow2")
	ok(t, dir, "create", "-i", "enc.qcow", "--passphrase-file", "pw", "imported.qcow")
	requireSame(t, dir, "flat.raw", "imported.qcow")
	fails(t, dir, 1, "AES-encrypted", "create", "-b", "enc.qcow", "ov.qcow")
}
