package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
)

// TestShowDevices: show lists the device keys a definition sets under the
// status table, and --json reports them, with the vsock CID.
func TestShowDevices(t *testing.T) {
	dir := t.TempDir()
	paths := func() (*store.Paths, error) { return store.HomePaths(dir), nil }
	def := `id = 1
name = 'web'
memory = '1G'
cpus = 4
sockets = 2
cores = 2
max_memory = '2G'
prealloc = true
cid = 77
kernel = '/k'

[[disks]]
path = '/vm/a.qcow2'
bus = 'scsi'
discard = true

[[shares]]
path = '/srv/data'
tag = 'data'
readonly = true

[[hostdevs]]
address = '0000:01:00.0'
`
	if err := os.MkdirAll(filepath.Join(dir, "vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vms", "web.toml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runIn(t, dir, paths, "show", "web")
	want := "topology 2 sockets × 2 cores × 1 thread\nmax_memory 2G\nmemory prealloc\nvsock cid 77\n" +
		"share data \"/srv/data\" read-only\nhostdev 0000:01:00.0\ndisks[0] bus scsi, discard\n"
	if code != 0 || !strings.HasPrefix(out, listHeader) || !strings.HasSuffix(out, want) || errOut != "" {
		t.Errorf("show: exit %d\nstdout %q\nstderr %q\nwant the table, then\n%s", code, out, errOut, want)
	}

	code, out, errOut = runIn(t, dir, paths, "show", "--json", "web")
	var list []struct {
		CID     uint32 `json:"cid"`
		Devices struct {
			Sockets   int   `json:"sockets"`
			Cores     int   `json:"cores"`
			Threads   int   `json:"threads"`
			MaxMemory int64 `json:"max_memory"`
			Prealloc  bool  `json:"prealloc"`
			Vsock     bool  `json:"vsock"`
			Shares    []struct {
				Path, Tag string
				ReadOnly  bool `json:"readonly"`
			} `json:"shares"`
			HostDevs []string `json:"hostdevs"`
			Disks    []struct {
				Path, Bus, Cache  string
				Discard, IOThread bool
			} `json:"disks"`
		} `json:"devices"`
	}
	if code != 0 || errOut != "" {
		t.Fatalf("show --json: exit %d, stderr %q", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	d := list[0].Devices
	if list[0].CID != 77 || d.Sockets != 2 || d.Cores != 2 || d.Threads != 1 || d.MaxMemory != 2<<30 || !d.Prealloc || !d.Vsock ||
		len(d.Shares) != 1 || d.Shares[0].Tag != "data" || !d.Shares[0].ReadOnly || d.Shares[0].Path != "/srv/data" ||
		len(d.HostDevs) != 1 || d.HostDevs[0] != "0000:01:00.0" ||
		len(d.Disks) != 1 || d.Disks[0].Bus != "scsi" || d.Disks[0].Cache != "writeback" || !d.Disks[0].Discard || d.Disks[0].IOThread {
		t.Errorf("show --json:\n%s", out)
	}

	// A definition without device keys shows none, and has no devices in
	// its JSON.
	if code, _, errOut := runIn(t, dir, paths, "define", "-b", "/k", "-m", "128M", "plain"); code != 0 {
		t.Fatalf("define: %s", errOut)
	}
	if code, out, _ := runIn(t, dir, paths, "show", "plain"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("show plain: exit %d\n%s", code, out)
	}
	if code, out, _ := runIn(t, dir, paths, "show", "--json", "plain"); code != 0 || strings.Contains(out, "devices") || strings.Contains(out, "cid") {
		t.Errorf("show --json plain: exit %d\n%s", code, out)
	}
}
