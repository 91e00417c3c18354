package vm

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestSpecQcowDisks: a qcow (version 1) disk is detected as such; an
// AES-encrypted one is refused with a message that points at convert.
func TestSpecQcowDisks(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	plain, enc := filepath.Join(dir, "old.qcow"), filepath.Join(dir, "enc.qcow")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", plain, "1M")
	qemuimg.Run(t, "create", "-q", "-f", "qcow", "--object", "secret,id=s,data=pw", "-o", "encryption=on,encrypt.key-secret=s", enc, "1M")
	m := &Manager{}
	def := &config.VM{ID: 1, Name: "old", Memory: 64 << 20, CPUs: 1, Disks: []config.Disk{{Path: plain}}}
	s, err := m.spec(def)
	if err != nil || len(s.Disks) != 1 || s.Disks[0].Format != "qcow" {
		t.Fatalf("spec: %+v, %v", s.Disks, err)
	}
	def.Disks = []config.Disk{{Path: enc}}
	if _, err := m.spec(def); err == nil || !strings.Contains(err.Error(), "vmtui disk convert --passphrase-file") {
		t.Fatalf("an encrypted disk: %v", err)
	}
}
