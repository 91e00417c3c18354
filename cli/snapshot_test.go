package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/qemuimg"
	"github.com/vmtui/vmtui/internal/testguest"
)

// snapshotCLI runs vmtui in process on the state root home, in dir, and
// fails the test unless it exits with wantCode.
func snapshotCLI(t *testing.T, home, dir string, wantCode int, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := runIn(t, dir, func() (*store.Paths, error) { return store.HomePaths(home), nil }, args...)
	if code != wantCode {
		t.Fatalf("vmtui %q: exit %d, want %d\nstdout %q\nstderr %q", args, code, wantCode, out, errOut)
	}
	return out, errOut
}

// TestSnapshotCommands: vmtui snapshot on a stopped VM: create, list (the
// columns of qemu-img snapshot -l, and --json), revert, delete; a tag that
// exists or does not, a raw disk, an unknown VM and usage errors.
func TestSnapshotCommands(t *testing.T) {
	qemuimg.Require(t)
	home, dir := t.TempDir(), t.TempDir()
	run := func(code int, args ...string) (string, string) {
		t.Helper()
		return snapshotCLI(t, home, dir, code, args...)
	}
	img := filepath.Join(dir, "web.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "8M")
	run(0, "define", "-d", img, "web")
	qemuimg.IO(t, img, "qcow2", "write -P 1 0 64k")

	if out, _ := run(0, "snapshot", "list", "web"); out != "" {
		t.Errorf("list of a vm without snapshots: %q", out)
	}
	if out, _ := run(0, "snapshot", "list", "--json", "web"); out != "[]\n" {
		t.Errorf("list --json of a vm without snapshots: %q", out)
	}
	created := time.Now().Truncate(time.Second) // the table keeps whole seconds
	if _, errOut := run(0, "snapshot", "create", "web", "before upgrade"); errOut != "vmtui: created snapshot \"before upgrade\" of vm web (id 1)\n" {
		t.Errorf("create: stderr %q", errOut)
	}
	qemuimg.IO(t, img, "qcow2", "write -P 2 0 64k")
	run(0, "snapshot", "create", "1", "second")

	// The list is qemu-img's, less its ICOUNT column.
	out, _ := run(0, "snap", "l", "web")
	qlines := strings.Split(strings.TrimSuffix(qemuimg.Run(t, "snapshot", "-l", img), "\n"), "\n")
	var want strings.Builder
	for _, l := range qlines[1:] { // after "Snapshot list:"
		want.WriteString(strings.TrimRight(l[:len(l)-11], " ") + "\n")
	}
	if got := trimLines(out); got != want.String() {
		t.Errorf("list:\n%s\nwant (qemu-img's):\n%s", out, want.String())
	}
	out, _ = run(0, "snapshot", "list", "--json", "web")
	var js []struct {
		ID          string `json:"id"`
		Tag         string `json:"tag"`
		VMStateSize int64  `json:"vm_state_size"`
		Date        string `json:"date"`
		VMClockNsec int64  `json:"vm_clock_nsec"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 2 || js[0].ID != "1" || js[0].Tag != "before upgrade" ||
		js[1].Tag != "second" || js[0].VMStateSize != 0 || js[0].VMClockNsec != 0 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if d, err := time.Parse(time.RFC3339Nano, js[0].Date); err != nil || d.Before(created) || d.After(time.Now()) {
		t.Errorf("date %q: %v", js[0].Date, err)
	}

	if _, errOut := run(0, "snapshot", "revert", "web", "before upgrade"); errOut != "vmtui: reverted vm web (id 1) to snapshot \"before upgrade\"\n" {
		t.Errorf("revert: stderr %q", errOut)
	}
	qemuimg.IO(t, img, "qcow2", "read -P 1 0 64k")
	qemuimg.RequireClean(t, img, false)

	// Tags that exist or do not.
	if _, errOut := run(1, "snapshot", "create", "web", "second"); !strings.Contains(errOut, `vmtui: create snapshot "second" of vm web: snapshot exists already`) {
		t.Errorf("duplicate tag: %q", errOut)
	}
	for _, verb := range []string{"revert", "delete"} {
		if _, errOut := run(1, "snapshot", verb, "web", "nope"); !strings.Contains(errOut, `vm web`) || !strings.Contains(errOut, `"nope"`) ||
			!strings.Contains(errOut, "no such snapshot") {
			t.Errorf("%s of a missing tag: %q", verb, errOut)
		}
	}
	if _, errOut := run(1, "snapshot", "create", "web", "a\x1bb"); !strings.Contains(errOut, "control character") {
		t.Errorf("tag with an escape: %q", errOut)
	}
	run(0, "snapshot", "delete", "web", "second")
	if _, errOut := run(0, "snapshot", "delete", "web", "before upgrade"); errOut != "vmtui: deleted snapshot \"before upgrade\" of vm web (id 1)\n" {
		t.Errorf("delete: stderr %q", errOut)
	}
	qemuimg.RequireClean(t, img, false)
	if out := qemuimg.Run(t, "snapshot", "-l", img); out != "" {
		t.Errorf("qemu-img lists %q after deleting all", out)
	}

	// A raw disk.
	raw := filepath.Join(dir, "old.img")
	qemuimg.Run(t, "create", "-q", "-f", "raw", raw, "1M")
	run(0, "define", "-d", img, "-d", raw, "old")
	if _, errOut := run(1, "snapshot", "create", "old", "x"); !strings.Contains(errOut, fmt.Sprintf("disk %q is a raw image", raw)) ||
		!strings.Contains(errOut, "vmtui disk convert -O qcow2 "+raw) {
		t.Errorf("raw disk: %q", errOut)
	}
	if _, errOut := run(1, "snapshot", "list", "nosuch"); !strings.Contains(errOut, "nosuch") {
		t.Errorf("unknown vm: %q", errOut)
	}
	for _, args := range [][]string{{"snapshot"}, {"snapshot", "create", "web"}, {"snapshot", "list"}, {"snapshot", "revert", "web", "a", "b"}, {"snapshot", "delete", "", "x"}} {
		if _, errOut := run(1, args...); !strings.Contains(errOut, "usage:\tvmtui snapshot") {
			t.Errorf("%q: stderr %q, want the usage", args, errOut)
		}
	}
	if out, _ := run(0, "help", "snapshot"); !strings.Contains(out, "vmtui snapshot list [--json] id|name") {
		t.Errorf("help: %q", out)
	}
}

// trimLines removes the spaces that end each line.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// TestSnapshotCommandsGuest: a running guest's snapshot holds its RAM
// (VM SIZE in the list); reverting the stopped VM to it starts the VM from
// it, saying so with its tty.
func TestSnapshotCommandsGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	qemuimg.Require(t)
	testguest.QEMU(t)
	kernel, initrd := testguest.Paths(t)
	home, dir := t.TempDir(), t.TempDir()
	run := func(code int, args ...string) (string, string) {
		t.Helper()
		return snapshotCLI(t, home, dir, code, args...)
	}
	img := filepath.Join(dir, "g.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", img, "8M")
	run(0, "start", "-b", kernel, "--initrd", initrd, "--append", testguest.Cmdline, "-m", testguest.Memory,
		"--accel", "tcg", "-d", img, "g")
	t.Cleanup(func() { snapshotCLI(t, home, dir, 0, "stop", "-f", "-w", "-a") })
	run(0, "snapshot", "create", "g", "live")
	out, _ := run(0, "snapshot", "list", "g")
	if !regexp.MustCompile(`(?m)^1 +live +[0-9.]+ [KMG]iB +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d\d:\d\d:\d\d\.\d{3}$`).MatchString(trimLines(out)) {
		t.Errorf("list of a running vm's snapshot:\n%s", out)
	}
	run(0, "stop", "-f", "-w", "g")
	_, errOut := run(0, "snapshot", "revert", "g", "live")
	if !regexp.MustCompile(`^vmtui: started vm 1 from snapshot "live" successfully, tty /dev/pts/\d+\n$`).MatchString(errOut) {
		t.Errorf("revert of the stopped vm: stderr %q", errOut)
	}
	if out, _ := run(0, "status", "g"); !strings.Contains(out, "running") {
		t.Errorf("after the revert:\n%s", out)
	}
	run(0, "stop", "-f", "-w", "g")
	qemuimg.RequireClean(t, img, false)
}
