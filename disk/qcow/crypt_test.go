package qcow

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestReadEncrypted reads an AES-encrypted image qemu-io wrote, with the
// passphrase, as qemu-img flattens it; without one, or for writing, it is
// refused.
func TestReadEncrypted(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "enc.qcow")
	secret := []string{"--object", "secret,id=s,data=a passphrase longer than 16 bytes"}
	qemuimg.Run(t, append([]string{"create", "-q", "-f", "qcow"}, append(secret, "-o", "encryption=on,encrypt.key-secret=s", p, "3M")...)...)
	opts := "driver=qcow,file.filename=" + p + ",encrypt.key-secret=s"
	out, err := runTool("qemu-io", append(secret, "--image-opts", opts,
		"-c", "write -P 0x42 0 64k", "-c", "write -P 0x43 1000448 1536", "-c", "write -P 0x44 2M 100")...)
	if err != nil {
		t.Fatalf("qemu-io: %v %s", err, out)
	}
	flat := filepath.Join(dir, "flat.raw")
	qemuimg.Run(t, append([]string{"convert"}, append(secret, "--image-opts", opts, "-O", "raw", flat)...)...)
	want, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	open := func(pass []byte, ro bool) (*Image, error) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		return Open(f, Options{ReadOnly: ro, Passphrase: pass})
	}
	img, err := open([]byte("a passphrase longer than 16 bytes"), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, img); !bytes.Equal(got, want) {
		t.Fatal("reads differently from qemu-img's flattening")
	}
	// Odd ranges decrypt too.
	b := make([]byte, 777)
	if _, err := img.ReadAt(b, 1000448-300); err != nil || !bytes.Equal(b, want[1000448-300:1000448-300+777]) {
		t.Fatalf("odd read: %v", err)
	}
	img.Close()
	if _, err := open([]byte("a passphrase lo"), true); err != nil {
		t.Fatal(err) // a wrong passphrase cannot be told: it reads garbage
	}
	if _, err := open(nil, true); !errors.Is(err, ErrNeedPassphrase) {
		t.Fatalf("no passphrase: %v", err)
	}
	if _, err := open([]byte("x"), false); !errors.Is(err, ErrEncryptedWrite) {
		t.Fatalf("for writing: %v", err)
	}
}

// runTool runs a QEMU tool and returns its output.
func runTool(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
