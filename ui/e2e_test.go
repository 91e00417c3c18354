package ui_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/testguest"
)

// TestEndToEnd drives the real binary in tmux against a real guest: it
// makes a disk and defines a VM through the forms, starts it, talks to the
// guest's shell through the console key, detaches with ~., pauses,
// unpauses and stops it, and checks that `vmtui --list` agrees with the
// last screen. Without tmux, QEMU or the test guest it skips, or fails
// when $CI is set.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the end-to-end test boots a guest")
	}
	for _, tool := range []string{"tmux", "qemu-system-x86_64", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s is not installed: %v", tool, err)
		}
	}
	kernel, initrd := testguest.Paths(t)

	// A short directory: QMP sockets live under it.
	home, err := os.MkdirTemp("/tmp", "vmtui-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(home, "vmtui")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env := []string{"VMTUI_HOME=" + filepath.Join(home, "state"), "VMTUI_ACCEL=tcg", "EDITOR=true", "TERM=xterm-256color"}
	vmtui := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	sock := filepath.Join(home, "tmux.sock")
	tm := &tmux{t: t, sock: sock}
	t.Cleanup(func() {
		vmtui("stop", "-f", "-a")
		exec.Command("tmux", "-S", sock, "kill-server").Run()
		killOurQEMUs(t, filepath.Join(home, "state"))
		os.RemoveAll(home)
	})
	// NO_COLOR: no colour in the escapes tmux keeps (capture-pane -e);
	// without it, STATE and the title have some. The TUI runs without CI
	// in its environment, as a person runs it: termenv takes CI to mean
	// "no terminal" and drops colour.
	for _, noColor := range []bool{true, false} {
		e := append([]string(nil), env...)
		if noColor {
			e = append(e, "NO_COLOR=1")
		}
		nc := &tmux{t: t, sock: fmt.Sprintf("%s.nc%v", sock, noColor)}
		t.Cleanup(func() { exec.Command("tmux", "-S", nc.sock, "kill-server").Run() })
		nc.run("new-session", "-d", "-x", "80", "-y", "24", "-c", home, "env -u CI "+strings.Join(e, " ")+" "+bin)
		nc.waitFor("no vms defined", 30*time.Second)
		out, _ := exec.Command("tmux", "-S", nc.sock, "capture-pane", "-e", "-p", "-t", "0").Output()
		colour := regexp.MustCompile(`\x1b\[[0-9;]*(3[0-7]|9[0-7]|38;[25];[0-9;]+)m`).Match(out)
		if colour == noColor {
			t.Errorf("NO_COLOR set %v: colour escapes %v in %q", noColor, colour, out)
		}
		exec.Command("tmux", "-S", nc.sock, "kill-server").Run()
	}

	tm.run("new-session", "-d", "-x", "100", "-y", "30", "-c", home, "env -u CI "+strings.Join(env, " ")+" "+bin)
	tm.waitFor("no vms defined", 30*time.Second)

	// A disk through the form: path, format, size, base, import.
	tm.keys("d")
	tm.waitFor("New disk image", 30*time.Second)
	tm.literal("e2e.qcow2")
	tm.keys("Tab", "Tab")
	tm.literal("64M")
	tm.keys("Tab", "Tab", "Enter")
	tm.waitFor("created "+filepath.Join(home, "e2e.qcow2"), 30*time.Second)

	// A VM through the form.
	tm.keys("n")
	tm.waitFor("New VM", 30*time.Second)
	for i, v := range []string{"e2e", "128M", "", "1", "e2e.qcow2", "", kernel, initrd, "console=ttyS0 quiet panic=-1", "", ""} {
		if v != "" {
			tm.literal(v)
		}
		if i < 10 {
			tm.keys("Tab")
		}
	}
	tm.keys("Enter")
	tm.waitFor("defined vm e2e", 30*time.Second)

	// Start: running, with a TTY.
	tm.keys("s")
	screen := tm.waitMatch(regexp.MustCompile(`pts/\d+ .* running e2e`), 90*time.Second)
	t.Logf("running:\n%s", screen)
	// The operation has ended (a refresh can show the VM running before
	// it has): the next ones are not refused as "still under way".
	tm.waitFor("e2e: started", 90*time.Second)

	// The console: the guest's shell answers, ~. comes back.
	tm.keys("c")
	tm.waitFor("detach", 30*time.Second)
	tm.keys("Enter")
	tm.waitFor("vmtui-guest#", 90*time.Second)
	tm.literal("echo $((6*7))")
	tm.keys("Enter")
	tm.waitMatch(regexp.MustCompile(`(?m)^42\s*$`), 30*time.Second)
	tm.keys("Enter")
	tm.literal("~.")
	screen = tm.waitFor("detached from the console of e2e", 30*time.Second)
	if !strings.Contains(screen, "STATE NAME") || !regexp.MustCompile(`running e2e`).MatchString(screen) {
		t.Errorf("after detaching, the table is not intact:\n%s", screen)
	}

	// Pause, unpause.
	tm.keys("p")
	tm.waitFor("e2e: paused", 30*time.Second)
	tm.waitFor(" paused e2e", 30*time.Second)
	tm.keys("p")
	tm.waitFor("e2e: unpaused", 30*time.Second)
	tm.waitFor("running e2e", 30*time.Second)

	// Paused and resumed by another process: the table follows QEMU's
	// events (the list itself is read only every 15 s).
	for _, step := range []struct{ cmd, want string }{{"pause", " paused e2e"}, {"unpause", "running e2e"}} {
		if out, err := vmtui(step.cmd, "e2e"); err != nil {
			t.Fatalf("vmtui %s e2e: %v\n%s", step.cmd, err, out)
		}
		tm.waitFor(step.want, 10*time.Second)
	}

	// Stop, graceful, confirmed.
	tm.keys("x")
	tm.waitFor("stop e2e (power down)? (y/n)", 30*time.Second)
	tm.keys("y")
	tm.waitFor("e2e: stopped", 90*time.Second)
	screen = tm.waitFor("stopped e2e", 30*time.Second)

	// --list agrees with the last screen.
	list, err := vmtui("--list")
	if err != nil {
		t.Fatalf("vmtui --list: %v\n%s", err, list)
	}
	if got, want := tableRows(screen), tableRows(list); got != want {
		t.Errorf("the screen shows\n%s\nvmtui --list\n%s", got, want)
	}

	// q quits, leaving the pane's program finished.
	tm.keys("q")
	tm.waitGone(30 * time.Second)
}

// tableRows returns the header and rows of a status table, one line each,
// fields separated by one space, without the cursor mark.
func tableRows(s string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	in := false
	for sc.Scan() {
		f := strings.Fields(strings.ReplaceAll(sc.Text(), "›", ""))
		if len(f) >= 9 && f[0] == "ID" && f[8] == "NAME" {
			in = true
		} else if in && (len(f) < 9 || !regexp.MustCompile(`^\d+$`).MatchString(f[0])) {
			break
		}
		if in {
			out = append(out, strings.Join(f, " "))
		}
	}
	return strings.Join(out, "\n")
}

// tmux drives one tmux server on a private socket.
type tmux struct {
	t    *testing.T
	sock string
	last string
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", x.sock}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %q: %v\n%s", args, err, out)
	}
	return string(out)
}

func (x *tmux) keys(keys ...string) {
	x.t.Helper()
	x.run(append([]string{"send-keys", "-t", "0"}, keys...)...)
}

func (x *tmux) literal(s string) {
	x.t.Helper()
	x.run("send-keys", "-t", "0", "-l", s)
}

func (x *tmux) capture() (string, error) {
	out, err := exec.Command("tmux", "-S", x.sock, "capture-pane", "-p", "-t", "0").Output()
	return string(out), err
}

func (x *tmux) waitMatch(re *regexp.Regexp, timeout time.Duration) string {
	x.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := x.capture()
		if err == nil {
			x.last = s
			if re.MatchString(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("no %q on the screen after %v; the screen:\n%s", re, timeout, x.last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (x *tmux) waitFor(text string, timeout time.Duration) string {
	x.t.Helper()
	return x.waitMatch(regexp.MustCompile(regexp.QuoteMeta(text)), timeout)
}

// waitGone waits for the session to end.
func (x *tmux) waitGone(timeout time.Duration) {
	x.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := exec.Command("tmux", "-S", x.sock, "has-session").Run(); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s, _ := x.capture()
	x.t.Fatalf("vmtui still runs %v after q:\n%s", timeout, s)
}

// unavailable skips the test, or fails it in CI, where a missing tool is
// a failure.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if testguest.InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (skipped: CI is not set)", args...)
}

// killOurQEMUs kills any QEMU left whose command line names a file under
// home, and fails the test if there was one.
func killOurQEMUs(t *testing.T, home string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte("qemu")) || !bytes.Contains(cmdline, []byte(home+"/")) {
			continue
		}
		t.Errorf("QEMU %s left running; killing it", pid)
		exec.Command("kill", "-9", pid).Run()
	}
}

// snapshotE2E is the setup of the snapshot screen's end-to-end tests: the
// binary built in a private home, a qcow2 disk made by vmtui create, and a
// tmux server to run the TUI in.
type snapshotE2E struct {
	t    *testing.T
	home string
	bin  string
	env  []string
	img  string
	tm   *tmux
}

func newSnapshotE2E(t *testing.T) *snapshotE2E {
	for _, tool := range []string{"tmux", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s is not installed: %v", tool, err)
		}
	}
	home, err := os.MkdirTemp("/tmp", "vmtui-e2e-snap-")
	if err != nil {
		t.Fatal(err)
	}
	e := &snapshotE2E{t: t, home: home, bin: filepath.Join(home, "vmtui"), img: filepath.Join(home, "snap.qcow2"),
		env: []string{"VMTUI_HOME=" + filepath.Join(home, "state"), "VMTUI_ACCEL=tcg", "TERM=xterm-256color", "NO_COLOR=1"},
		tm:  &tmux{t: t, sock: filepath.Join(home, "tmux.sock")}}
	t.Cleanup(func() {
		exec.Command("tmux", "-S", e.tm.sock, "kill-server").Run()
		cmd := exec.Command(e.bin, "stop", "-f", "-a")
		cmd.Env = append(os.Environ(), e.env...)
		cmd.Run()
		killOurQEMUs(t, filepath.Join(home, "state"))
		os.RemoveAll(home)
	})
	if out, err := exec.Command("go", "build", "-o", e.bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.vmtui("create", "-s", "64M", e.img)
	return e
}

// vmtui runs the binary; a failure fails the test.
func (e *snapshotE2E) vmtui(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Dir = e.home
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("vmtui %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// open starts the TUI and opens the snapshot screen of the first VM from
// its detail view.
func (e *snapshotE2E) open(name string) {
	e.t.Helper()
	tm := e.tm
	tm.run("new-session", "-d", "-x", "100", "-y", "30", "-c", e.home, "env -u CI "+strings.Join(e.env, " ")+" "+e.bin)
	tm.waitFor(" "+name+"\n", 30*time.Second)
	tm.keys("Enter")
	tm.waitFor("vmtui › "+name+" (id 1)", 30*time.Second)
	tm.waitFor("S snapshots", 30*time.Second)
	tm.keys("S")
	tm.waitFor("no snapshots: press t to take one", 60*time.Second)
}

// take takes snapshot tag through the form and waits for its result.
func (e *snapshotE2E) take(name, tag string) {
	e.t.Helper()
	e.tm.keys("t")
	e.tm.waitFor("Take a snapshot of "+name, 30*time.Second)
	e.tm.literal(tag)
	e.tm.keys("Enter")
	e.tm.waitFor("took snapshot "+tag+" of vm "+name, 120*time.Second)
}

// TestSnapshotScreenEndToEnd drives the real binary in tmux: on the
// snapshot screen of a stopped VM whose qcow2 disk vmtui made, it takes a
// snapshot through the tag form, sees it listed (and `vmtui disk snapshot`
// sees it in the image), reverts to it, deletes it, and goes back to the
// detail view. Without tmux it skips, or fails when $CI is set.
func TestSnapshotScreenEndToEnd(t *testing.T) {
	e := newSnapshotE2E(t)
	tm := e.tm
	e.vmtui("define", "-d", e.img, "-m", "128M", "snapvm")
	e.open("snapvm")

	// Take one through the form.
	e.take("snapvm", "pre-upgrade")
	row := regexp.MustCompile(`› pre-upgrade\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+00:00:00\.000\s+-`)
	screen := tm.waitMatch(row, 30*time.Second)
	t.Logf("taken:\n%s", screen)
	if out := e.vmtui("disk", "snapshot", "-l", e.img); !strings.Contains(out, "pre-upgrade") {
		t.Errorf("vmtui disk snapshot -l does not list the snapshot:\n%s", out)
	}
	// A tag taken already is refused by the form, which stays open.
	tm.keys("t")
	tm.waitFor("Take a snapshot of snapvm", 30*time.Second)
	tm.literal("pre-upgrade")
	tm.keys("Enter")
	tm.waitFor(`a snapshot is tagged "pre-upgrade" already`, 30*time.Second)
	tm.keys("Escape")
	tm.waitFor("t take", 30*time.Second)

	// Revert to it, confirmed.
	tm.keys("r")
	tm.waitFor("revert snapvm to snapshot pre-upgrade? what changed since is lost (y/n)", 30*time.Second)
	tm.keys("y")
	tm.waitFor("reverted to snapshot pre-upgrade of vm snapvm", 60*time.Second)

	// Delete it, confirmed: the list is empty again, and so is the image's.
	tm.keys("D")
	tm.waitFor("delete snapshot pre-upgrade of snapvm? (y/n)", 30*time.Second)
	tm.keys("y")
	tm.waitFor("deleted snapshot pre-upgrade of vm snapvm", 60*time.Second)
	tm.waitFor("no snapshots: press t to take one", 30*time.Second)
	if out := e.vmtui("disk", "snapshot", "-l", e.img); strings.Contains(out, "pre-upgrade") {
		t.Errorf("vmtui disk snapshot -l still lists the snapshot:\n%s", out)
	}

	// esc goes back to the detail view, q quits.
	tm.keys("Escape")
	tm.waitFor("S snapshots", 30*time.Second)
	tm.keys("q")
	tm.waitGone(30 * time.Second)
}

// TestSnapshotScreenRunningEndToEnd: the snapshot screen of a running
// guest: a snapshot taken there holds its RAM (the RAM column shows a
// size, VM CLOCK the guest's time), the guest runs on after a revert, and
// the snapshot is deleted. It boots the test guest.
func TestSnapshotScreenRunningEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the test boots a guest")
	}
	testguest.QEMU(t)
	kernel, initrd := testguest.Paths(t)
	e := newSnapshotE2E(t)
	tm := e.tm
	e.vmtui("define", "-d", e.img, "-m", "128M", "-b", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet panic=-1", "snaplive")
	e.vmtui("start", "snaplive")
	e.open("snaplive")
	tm.waitFor("running  snapshots", 30*time.Second)

	e.take("snaplive", "live")
	row := regexp.MustCompile(`› live\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d\d:\d\d:\d\d\.\d{3}\s+[0-9.]+[KMG]\s`)
	screen := tm.waitMatch(row, 30*time.Second)
	t.Logf("taken:\n%s", screen)
	if regexp.MustCompile(`› live\s+\S+ \S+\s+00:00:00\.000`).MatchString(screen) {
		t.Errorf("a running guest's snapshot has no VM clock:\n%s", screen)
	}

	tm.keys("r")
	tm.waitFor("revert snaplive to snapshot live? what changed since is lost (y/n)", 30*time.Second)
	tm.keys("y")
	tm.waitFor("reverted to snapshot live of vm snaplive", 120*time.Second)
	if out := e.vmtui("status", "snaplive"); !strings.Contains(out, "running") {
		t.Errorf("after the revert, vmtui status says:\n%s", out)
	}

	tm.keys("D")
	tm.waitFor("delete snapshot live of snaplive? (y/n)", 30*time.Second)
	tm.keys("y")
	tm.waitFor("deleted snapshot live of vm snaplive", 120*time.Second)
	tm.waitFor("no snapshots: press t to take one", 30*time.Second)
	tm.keys("q")
	tm.waitGone(30 * time.Second)
}
