package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/testguest"
)

// Tests of the VM commands boot the test guest (internal/testguest) under
// TCG, with all state in a temporary $VMTUI_HOME.

const (
	guestCmdline = testguest.Cmdline
	guestBanner  = testguest.Banner
)

// requireGuest returns the test guest's kernel and initramfs, building them
// once. Without QEMU or the guest the test skips, or fails in CI.
func requireGuest(t *testing.T) (kernel, initrd string) {
	t.Helper()
	testguest.QEMU(t)
	return testguest.Paths(t)
}

// vmHome is a $VMTUI_HOME for one test; every QEMU whose pidfile lies
// under it is killed when the test ends.
func vmHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Cleanup(func() {
		for _, pid := range qemusUnder(home) {
			t.Logf("cleanup: killing QEMU %d left running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		// Once they are gone (qemusUnder skips zombies).
		for deadline := time.Now().Add(time.Minute); len(qemusUnder(home)) > 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		// Let vmtui remove the stale runtime files (sockets may live
		// outside home).
		vmcli(t, home, "--list")
	})
	return home
}

// qemusUnder returns the qemu-system processes whose -pidfile is under dir.
func qemusUnder(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil || len(b) == 0 { // gone, or a zombie
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
			continue
		}
		for i := 0; i+1 < len(argv); i++ {
			if argv[i] == "-pidfile" && strings.HasPrefix(argv[i+1], dir+"/") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// vmcli runs vmtui with state root home, under TCG, for at most a minute.
func vmcli(t *testing.T, home string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmtuiBin, args...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "VMTUI_HOME="+home, "VMTUI_ACCEL=tcg")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("vmtui %q: timed out\nstderr: %s", args, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("vmtui %q: %v", args, err)
	}
	return r
}

// vmOK runs vmtui and expects exit 0, nothing on stdout and exactly
// stderrRE (a regular expression, anchored) on stderr.
func vmOK(t *testing.T, home, stderrRE string, args ...string) result {
	t.Helper()
	r := vmcli(t, home, args...)
	if r.code != 0 || r.stdout != "" || !regexp.MustCompile(`^`+stderrRE+`$`).MatchString(r.stderr) {
		t.Fatalf("vmtui %q: exit %d, stdout %q, stderr %q; want exit 0, no stdout, stderr matching %q", args, r.code, r.stdout, r.stderr, stderrRE)
	}
	return r
}

// vmFails runs vmtui and expects exit 1, nothing on stdout and stderr
// containing want.
func vmFails(t *testing.T, home, want string, args ...string) result {
	t.Helper()
	r := vmcli(t, home, args...)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, want) {
		t.Fatalf("vmtui %q: exit %d, stdout %q, stderr %q; want exit 1, no stdout, stderr containing %q", args, r.code, r.stdout, r.stderr, want)
	}
	return r
}

const listHeader = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"

// statusRow is one parsed row of the status table.
type statusRow struct {
	id, pid, vcpus, maxmem, curmem, tty, owner, state, name string
}

// parseTable parses vmtui --list output, checking the header and that each
// row is laid out with vmctl's format.
func parseTable(t *testing.T, out string) []statusRow {
	t.Helper()
	if !strings.HasPrefix(out, listHeader) {
		t.Fatalf("table %q: want the header %q", out, listHeader)
	}
	var rows []statusRow
	for _, line := range strings.SplitAfter(strings.TrimPrefix(out, listHeader), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 9 {
			t.Fatalf("row %q: %d columns, want 9", line, len(f))
		}
		if want := fmt.Sprintf("%5s %5s %5s %7s %7s %7s %12s %8s %s\n", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]); line != want {
			t.Errorf("row %q is not laid out as vmctl's\nwant %q", line, want)
		}
		rows = append(rows, statusRow{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]})
	}
	return rows
}

// ownerColumn is OWNER for a process of ours.
func ownerColumn(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username + ":" + g.Name
}

// waitBanner waits until the guest is up for the nth time (the serial log
// is appended to from boot to boot), so that it handles the power button.
func waitBanner(t *testing.T, home, name string, nth int) {
	t.Helper()
	path := filepath.Join(home, "log", name, "serial.log")
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Count(b, []byte(guestBanner)) >= nth {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q number %d in %s after 60 s:\n%s", guestBanner, nth, path, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	startedRE = `vmtui: started vm 1 successfully, tty (/dev/pts/[0-9]+)\n`
	curmemRE  = regexp.MustCompile(`^[0-9]+(\.[0-9])?[KMG]$`)
)

func TestVMCommands(t *testing.T) {
	kernel, initrd := requireGuest(t)
	home := vmHome(t)
	owner := ownerColumn(t)

	// start with flags defines the VM and starts it.
	r := vmOK(t, home, startedRE, "start", "-b", kernel, "--initrd", initrd, "--append", guestCmdline,
		"-m", "128M", "--cpus", "1", "web")
	tty := regexp.MustCompile(startedRE).FindStringSubmatch(r.stderr)[1]
	if _, err := os.Stat(filepath.Join(home, "vms", "web.toml")); err != nil {
		t.Errorf("start with flags did not save the definition: %v", err)
	}

	// --list: one running row.
	r = vmcli(t, home, "--list")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("--list: exit %d, stderr %q", r.code, r.stderr)
	}
	rows := parseTable(t, r.stdout)
	if len(rows) != 1 {
		t.Fatalf("--list: %q, want one row", r.stdout)
	}
	row := rows[0]
	pid, _ := strconv.Atoi(row.pid)
	if b, err := os.ReadFile("/proc/" + row.pid + "/cmdline"); err != nil || !strings.Contains(string(b), "qemu-system-x86_64") {
		t.Errorf("PID column %q is not a running QEMU: %q, %v", row.pid, b, err)
	}
	want := statusRow{"1", row.pid, "1", "128M", row.curmem, strings.TrimPrefix(tty, "/dev/"), owner, "running", "web"}
	if row != want || pid <= 0 || !curmemRE.MatchString(row.curmem) {
		t.Errorf("--list row:\n got %+v\nwant %+v (CURMEM a size)", row, want)
	}

	// --list --json for scripts.
	r = vmcli(t, home, "--list", "--json")
	var list []struct {
		ID     int    `json:"id"`
		Name   string `json:"name"`
		PID    int    `json:"pid"`
		VCPUs  int    `json:"vcpus"`
		MaxMem int64  `json:"maxmem"`
		CurMem int64  `json:"curmem"`
		TTY    string `json:"tty"`
		Owner  string `json:"owner"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != 0 {
		t.Fatalf("--list --json: exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if len(list) != 1 || list[0].ID != 1 || list[0].Name != "web" || list[0].PID != pid || list[0].VCPUs != 1 ||
		list[0].MaxMem != 128<<20 || list[0].CurMem <= 0 || list[0].TTY != tty || list[0].Owner != owner || list[0].State != "running" {
		t.Errorf("--list --json: %+v", list)
	}

	// status by unambiguous prefix, by name and by ID; show is its alias.
	for _, args := range [][]string{{"stat", "web"}, {"status", "1"}, {"sh", "web"}} {
		r := vmcli(t, home, args...)
		if rows := parseTable(t, r.stdout); r.code != 0 || len(rows) != 1 || rows[0].state != "running" || rows[0].pid != row.pid {
			t.Errorf("vmtui %q: exit %d, %q", args, r.code, r.stdout)
		}
	}

	// pause and unpause.
	vmOK(t, home, `vmtui: paused vm 1 successfully\n`, "pause", "web")
	if rows := parseTable(t, vmcli(t, home, "status", "web").stdout); rows[0].state != "paused" {
		t.Errorf("after pause: state %s, want paused", rows[0].state)
	}
	vmOK(t, home, `vmtui: unpaused vm 1 successfully\n`, "unpause", "1")
	if rows := parseTable(t, vmcli(t, home, "status", "web").stdout); rows[0].state != "running" {
		t.Errorf("after unpause: state %s, want running", rows[0].state)
	}

	// stop without -w returns at once; wait waits for the power-off.
	waitBanner(t, home, "web", 1)
	vmOK(t, home, `stopping vm web: requested to shutdown vm 1\n`, "stop", "web")
	// The guest may have powered off before wait looks: either way wait succeeds.
	vmOK(t, home, `waiting for vm web: (terminated vm 1|vm 1 is not running)\n`, "wait", "web")
	if pids := qemusUnder(home); len(pids) != 0 {
		t.Errorf("QEMUs %v run after wait returned (the vm's was %d)", pids, pid)
	}

	// A defined VM starts by name, without flags; flags are refused.
	vmFails(t, home, "vm is already defined", "start", "-m", "256M", "web")
	vmOK(t, home, startedRE, "start", "web")
	vmFails(t, home, "already running", "start", "web")
	if r := vmFails(t, home, "vm is running", "remove", "web"); !regexp.MustCompile(`^vmtui: remove web: vm is running \(pid [1-9][0-9]*\); stop it first\n$`).MatchString(r.stderr) {
		t.Errorf("remove of a running vm: stderr %q, want vmtui: remove web: vm is running (pid N); stop it first", r.stderr)
	}
	waitBanner(t, home, "web", 2)
	vmOK(t, home, `stopping vm web: terminated vm 1\n`, "stop", "-w", "web")
	if pids := qemusUnder(home); len(pids) != 0 {
		t.Errorf("QEMUs %v run after stop -w", pids)
	}
	r = vmcli(t, home, "--list")
	if rows := parseTable(t, r.stdout); len(rows) != 1 || rows[0] != (statusRow{"1", "-", "1", "128M", "-", "-", owner, "stopped", "web"}) {
		t.Errorf("--list after stop: %+v", rows)
	}

	// Errors, with vmctl's words.
	vmFails(t, home, "vmtui: unknown: vm not found\n", "status", "unknown")
	vmFails(t, home, "vmtui: 7: vm not found\n", "stop", "7")
	vmFails(t, home, "vmtui: stopping vm web: cannot stop vm that is not running\n", "stop", "web")
	vmFails(t, home, "vm web is not running", "pause", "web")
	vmOK(t, home, `waiting for vm web: vm 1 is not running\n`, "wait", "web")

	// remove undefines it.
	vmOK(t, home, `vmtui: removed vm web \(id 1\)\n`, "remove", "web")
	if r := vmcli(t, home, "--list"); r.stdout != listHeader {
		t.Errorf("--list after remove: %q, want only the header", r.stdout)
	}
	vmFails(t, home, "vm not found", "status", "web")
}

// TestVMStopForceAll: stop -f -a kills every running VM.
func TestVMStopForceAll(t *testing.T) {
	kernel, initrd := requireGuest(t)
	home := vmHome(t)
	for _, name := range []string{"a", "b"} {
		vmOK(t, home, `vmtui: started vm [12] successfully, tty /dev/pts/[0-9]+\n`, "start", "-b", kernel, "--initrd", initrd,
			"--append", guestCmdline+" vmtui.powerdown=ignore", "-m", "128M", name)
	}
	if pids := qemusUnder(home); len(pids) != 2 {
		t.Fatalf("QEMUs %v, want two", pids)
	}
	vmOK(t, home, `stopping vm a: forced to terminate vm 1\nstopping vm b: forced to terminate vm 2\n`, "stop", "-f", "-a")
	if pids := qemusUnder(home); len(pids) != 0 {
		t.Errorf("QEMUs %v run after stop -f -a", pids)
	}
	for _, row := range parseTable(t, vmcli(t, home, "--list").stdout) {
		if row.state != "stopped" {
			t.Errorf("after stop -f -a: %+v", row)
		}
	}
	vmFails(t, home, "usage:", "stop", "-a", "a")
}

// TestVMNotFound: every command names an unknown VM the way vmctl does, by
// name or ID as it was given.
func TestVMNotFound(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{
		{"start", "nosuch"}, {"start", "7"}, {"start", "-m", "128M", "7"}, {"define", "-m", "128M", "7"},
		{"stop", "nosuch"}, {"stop", "-f", "7"}, {"pause", "nosuch"}, {"unpause", "7"}, {"wait", "nosuch"},
		{"console", "nosuch"}, {"console", "--watch", "7"}, {"status", "nosuch"}, {"show", "7"},
		{"remove", "nosuch"}, {"remove", "7"},
	} {
		name := args[len(args)-1]
		r := vmcli(t, home, args...)
		if want := "vmtui: " + name + ": vm not found\n"; r.code != 1 || r.stdout != "" || r.stderr != want {
			t.Errorf("vmtui %q: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", args, r.code, r.stdout, r.stderr, want)
		}
	}
}
