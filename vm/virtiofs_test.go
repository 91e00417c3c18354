package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/testguest"
)

// The launcher, without a guest: "QEMU" is sleep, the virtiofsds real ones
// that wait for a QEMU that never connects, the case where only the
// parent-death signal can end them.

// RequireVirtiofsd skips the test without QEMU's virtiofsd, or fails it
// in CI.
func RequireVirtiofsd(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Virtiofsd()); err != nil {
		if testguest.InCI() {
			t.Fatalf("virtiofsd: %v (apt-get install qemu-system-common)", err)
		}
		t.Skipf("virtiofsd: %v (skipped: CI is not set)", err)
	}
}

// startLauncher starts sleep through the launcher, with a virtiofsd for
// each of shares, as Start starts QEMU, and returns its command.
func startLauncher(t *testing.T, qemu string, shares []ShareSpec) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	var files []*os.File
	for i := range shares {
		sock := filepath.Join(dir, shareSocketName(i))
		f, err := listenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		shares[i].Socket = sock
		lf, err := os.Create(filepath.Join(dir, virtiofsdLogName(shares[i].Tag)))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f, lf)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(qemu, "600")
	cmd.ExtraFiles = files
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := useLauncher(cmd, Spec{Name: "t", Shares: shares}, len(files)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	t.Cleanup(func() {
		// The process group: QEMU and its daemons, whatever the test saw.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

// VirtiofsdProc is a virtiofsd process.
type VirtiofsdProc struct {
	PID, Parent int
	Argv        []string
}

// VirtiofsdProcs returns the virtiofsd processes that run (a zombie does
// not).
func VirtiofsdProcs() []VirtiofsdProc {
	var out []VirtiofsdProc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if filepath.Base(argv[0]) != "virtiofsd" {
			continue
		}
		if state, parent := procStat(pid); state != 0 && state != 'Z' && state != 'X' {
			out = append(out, VirtiofsdProc{PID: pid, Parent: parent, Argv: argv})
		}
	}
	return out
}

// daemonsOf returns the virtiofsd processes whose parent is pid.
func daemonsOf(pid int) []int {
	var out []int
	for _, p := range VirtiofsdProcs() {
		if p.Parent == pid {
			out = append(out, p.PID)
		}
	}
	return out
}

// procStat returns a process's state and parent, read from its
// /proc/PID/stat; state 0 when there is no such process.
func procStat(pid int) (state byte, parent int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := bytes.LastIndexByte(b, ')')
	if err != nil || i < 0 {
		return 0, 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || f[0] == "" {
		return 0, 0
	}
	parent, _ = strconv.Atoi(f[1])
	return f[0][0], parent
}

// pgid returns a process's process group.
func pgid(t *testing.T, pid int) int {
	t.Helper()
	g, err := syscall.Getpgid(pid)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A virtiofsd started by the launcher runs in QEMU's process group, as
// QEMU's child, and dies with QEMU (SIGKILL) even before QEMU connected.
func TestLauncherDaemonsDieWithQEMU(t *testing.T) {
	RequireVirtiofsd(t)
	shares := []ShareSpec{{Path: t.TempDir(), Tag: "rw"}, {Path: t.TempDir(), Tag: "ro", ReadOnly: true}}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	cmd := startLauncher(t, sleep, shares)
	pid := cmd.Process.Pid
	var daemons []int
	waitFor(t, "no two virtiofsds under the launched process", 10*time.Second, func() bool {
		daemons = daemonsOf(pid)
		return len(daemons) == 2
	})
	waitFor(t, "the launcher did not become sleep", 10*time.Second, func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		return strings.HasPrefix(string(b), sleep+"\x00600")
	})
	for _, d := range daemons {
		if g := pgid(t, d); g != pid {
			t.Errorf("virtiofsd %d: process group %d, want QEMU's, %d", d, g, pid)
		}
	}
	// QEMU holds none of the daemons' sockets or logs (what go test
	// leaves open, a pipe, /dev/null, may be there).
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	for _, fd := range fds {
		l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name())
		if strings.HasPrefix(l, "socket:") || strings.HasSuffix(l, ".log") {
			t.Errorf("qemu holds fd %s (%s) of its daemons", fd.Name(), l)
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	cmd.Wait()
	for _, d := range daemons {
		waitFor(t, "virtiofsd "+strconv.Itoa(d)+" outlived its QEMU", 10*time.Second, func() bool { return !procAlive(d) })
	}
}

// A launcher that cannot execute QEMU says so and leaves no virtiofsd.
func TestLauncherQEMUMissing(t *testing.T) {
	RequireVirtiofsd(t)
	shares := []ShareSpec{{Path: t.TempDir(), Tag: "rw"}}
	cmd := startLauncher(t, "/bin/true", shares)
	cmd.Wait() // the launcher's exec of /bin/true runs and exits
	waitFor(t, "virtiofsd outlived the launch", 10*time.Second, func() bool { return len(daemonsOf(cmd.Process.Pid)) == 0 })
}

// procAlive reports whether pid runs (a zombie does not).
func procAlive(pid int) bool {
	state, _ := procStat(pid)
	return state != 0 && state != 'Z' && state != 'X'
}
