package vm_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
	"github.com/vmtui/vmtui/vm/qmp"
)

// Integration tests of the Manager: they boot the test guest under TCG
// (see newGuestEnv) and check what a user of vmctl would: the status row,
// the serial log, the guest's clock, the QEMU processes and the runtime
// files left behind.

var ptsRE = regexp.MustCompile(`^/dev/pts/[0-9]+$`)

// currentOwner is OWNER as the status table shows it for our processes.
func currentOwner(t *testing.T) string {
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

// TestLifecycle starts a guest and checks its status row, its serial log,
// pause and unpause (the guest's clock stops and resumes), then stops it
// gracefully.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("life", testguest.TickParam+"1")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	started := e.start(def, vm.StartOptions{})
	st := e.status(e.m, "life")
	if st.State != vm.StateRunning || st.PID == 0 || st.PID != started.PID {
		t.Fatalf("after start: state %s, pid %d (Start said %d, err %q); want running with a pid", st.State, st.PID, started.PID, st.Err)
	}
	if !ptsRE.MatchString(st.TTY) {
		t.Errorf("tty %q, want /dev/pts/N", st.TTY)
	} else if _, err := os.Stat(st.TTY); err != nil {
		t.Errorf("tty: %v", err)
	}
	if got := strings.TrimSpace(readFile(e.paths.PTYFile("life"))); got != st.TTY {
		t.Errorf("pty file holds %q, want %q", got, st.TTY)
	}
	argv := cmdline(st.PID)
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "qemu-system-x86_64") && !strings.HasSuffix(argv[0], "/qemu-system-x86_64") {
		t.Errorf("/proc/%d/cmdline: %q, want qemu-system-x86_64", st.PID, argv)
	}
	if !hasArgs(argv, "-pidfile", e.paths.PIDFile("life")) || !hasArgs(argv, "-kernel", e.kernel) {
		t.Errorf("/proc/%d/cmdline: %q lacks -pidfile %s or -kernel %s", st.PID, argv, e.paths.PIDFile("life"), e.kernel)
	}
	if got := strings.TrimSpace(readFile(e.paths.PIDFile("life"))); got != strconv.Itoa(st.PID) {
		t.Errorf("pidfile holds %q, want %d", got, st.PID)
	}
	if st.CurMem <= 0 || st.CurMem > 2<<30 {
		t.Errorf("curmem %d, want the resident size of QEMU (> 0)", st.CurMem)
	}
	if st.MaxMem != testguest.MemoryBytes || st.VCPUs != 1 || st.ID != def.ID {
		t.Errorf("maxmem %d, vcpus %d, id %d; want %d, 1, %d", st.MaxMem, st.VCPUs, st.ID, testguest.MemoryBytes, def.ID)
	}
	if want := currentOwner(t); st.Owner != want {
		t.Errorf("owner %q, want %q", st.Owner, want)
	}

	// The banner reaches the serial log; the clock ticks.
	e.waitSerial("life", testguest.Banner, testguest.BootTimeout)
	e.waitTick("life", 2, time.Minute)
	t.Logf("serial log after boot:\n%s", readFile(e.paths.SerialLog("life")))

	// Paused, the guest runs no more: it prints nothing, and its clock
	// stops. QEMU has written all the guest printed before `stop`
	// returned.
	if err := e.m.Pause(ctx, def); err != nil {
		t.Fatalf("pause: %v", err)
	}
	paused := time.Now()
	serial := e.paths.SerialLog("life")
	frozen := readFile(serial)
	if st := e.status(e.m, "life"); st.State != vm.StatePaused || st.QEMUStatus != "paused" {
		t.Errorf("after pause: state %s (qemu %q, err %q), want paused", st.State, st.QEMUStatus, st.Err)
	}
	before := ticks(frozen)
	if len(before) < 2 {
		t.Fatalf("paused after %d tick lines, want 2:\n%s", len(before), frozen)
	}
	last := before[len(before)-1]
	// How far the guest's clock moves from one tick to the next while it
	// runs, under this machine's load.
	spacing := time.Duration((last.up - before[len(before)-2].up) * float64(time.Second))
	// The pause lasts long enough (host time) that a clock that ran on
	// through it would show. Its length is what the checks below compare
	// against, not a wait for anything: they hold whatever the load.
	hold := max(3*time.Second, 3*spacing)
	for time.Since(paused) < hold {
		if log := readFile(serial); log != frozen {
			t.Fatalf("the paused guest printed %q", strings.TrimPrefix(log, frozen))
		}
		time.Sleep(50 * time.Millisecond)
	}
	pausedFor := time.Since(paused) // the pause lasted longer still

	// Unpaused: the ticks come again, and the guest's clock moved on
	// across the pause only as much as it does between two ticks, not by
	// the length of the pause.
	if err := e.m.Unpause(ctx, def); err != nil {
		t.Fatalf("unpause: %v", err)
	}
	if st := e.status(e.m, "life"); st.State != vm.StateRunning {
		t.Errorf("after unpause: state %s (err %q), want running", st.State, st.Err)
	}
	var next tick
	for _, tk := range e.waitTick("life", last.n+1, time.Minute) {
		if tk.n == last.n+1 {
			next = tk
		}
	}
	across := time.Duration((next.up - last.up) * float64(time.Second))
	t.Logf("guest clock: %v between ticks %d and %d, %v across a pause of %v between ticks %d and %d",
		spacing.Round(time.Millisecond), last.n-1, last.n, across.Round(time.Millisecond), pausedFor.Round(time.Millisecond), last.n, next.n)
	if next.n != last.n+1 || across >= pausedFor {
		t.Errorf("guest clock: tick %d at %.2f s, tick %d at %.2f s: it ran on during a pause of %v (ticks %v apart before it)",
			last.n, last.up, next.n, next.up, pausedFor.Round(time.Millisecond), spacing.Round(time.Millisecond))
	}

	// A graceful stop powers the guest off; nothing is left behind.
	if err := e.m.Stop(ctx, def, vm.StopOptions{Wait: true}); err != nil {
		t.Fatalf("stop -w: %v", err)
	}
	if alive(st.PID) {
		t.Errorf("QEMU %d still runs after stop -w", st.PID)
	}
	if log := readFile(e.paths.SerialLog("life")); !strings.Contains(log, testguest.PowerOffMessage) {
		t.Errorf("serial log lacks %q: the guest did not power itself off:\n%s", testguest.PowerOffMessage, log)
	}
	e.requireNoRuntimeFiles("life")
	if st := e.status(e.m, "life"); st.State != vm.StateStopped || st.PID != 0 || st.TTY != "" || st.CurMem != 0 {
		t.Errorf("after stop: %+v, want stopped with no pid, tty or curmem", st)
	}
	if err := e.m.Stop(ctx, def, vm.StopOptions{}); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("stop of a stopped vm: %v, want ErrNotRunning", err)
	}
	if err := e.m.Pause(ctx, def); !errors.Is(err, vm.ErrNotRunning) {
		t.Errorf("pause of a stopped vm: %v, want ErrNotRunning", err)
	}
}

// hasArgs reports whether argv holds flag followed by value.
func hasArgs(argv []string, flag, value string) bool {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag && argv[i+1] == value {
			return true
		}
	}
	return false
}

// TestForcedStop stops a guest that ignores the power button: a graceful
// stop leaves it stopping, a forced one quits QEMU over QMP, and Wait sees
// it go.
func TestForcedStop(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("stubborn", testguest.IgnorePowerdownParam, testguest.TickParam+"1")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	st := e.start(def, vm.StartOptions{})
	e.waitSerial("stubborn", testguest.Banner, testguest.BootTimeout)

	if err := e.m.Stop(ctx, def, vm.StopOptions{}); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- e.newManager().Wait(ctx, def) }()
	// The guest runs on for two ticks of its own clock after the press
	// of the power button: it has had the time to act on it, and did not
	// (a guest that obeys powers off within milliseconds of its time).
	pressed := lastTick(readFile(e.paths.SerialLog("stubborn")))
	e.waitTick("stubborn", pressed.n+2, time.Minute)
	if got := e.status(e.m, "stubborn"); got.State != vm.StateStopping || got.PID != st.PID {
		t.Errorf("after a graceful stop the guest ignored: state %s, pid %d (err %q); want stopping, %d", got.State, got.PID, got.Err, st.PID)
	}
	if !alive(st.PID) {
		t.Fatalf("QEMU %d exited: the guest should have ignored the power button", st.PID)
	}
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v while the guest runs", err)
	default:
	}
	// A second graceful stop fails no worse than the first.
	if err := e.m.Stop(ctx, def, vm.StopOptions{}); err != nil {
		t.Errorf("second graceful stop: %v", err)
	}

	// A forced stop quits QEMU over QMP, which ends it at once: no signal
	// (QEMU would report SHUTDOWN host-signal), no SIGKILL after the
	// grace period (no SHUTDOWN at all). The events socket, free for
	// watchers, says which.
	eventsPath, err := e.paths.EventsSocket("stubborn")
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := qmp.Dial(ctx, eventsPath)
	if err != nil {
		t.Fatalf("events socket: %v", err)
	}
	defer watcher.Close()
	shutdown := watcher.Subscribe(4, qmp.EventShutdown)
	begin := time.Now()
	if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced stop: %v", err)
	}
	t.Logf("forced stop took %v", time.Since(begin).Round(time.Millisecond))
	var info qmp.ShutdownInfo
	ev, err := shutdown.Wait(ctx)
	if err == nil {
		err = ev.DecodeData(&info)
	}
	if err != nil || info.Reason != "host-qmp-quit" {
		t.Errorf("forced stop: QEMU reported %+v (%v), want SHUTDOWN host-qmp-quit: QMP quit should end it\nqemu log:\n%s",
			info, err, readFile(e.paths.QEMULog("stubborn")))
	}
	if alive(st.PID) {
		t.Errorf("QEMU %d runs after a forced stop", st.PID)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
	case <-ctx.Done():
		t.Errorf("Wait has not returned after the forced stop")
	}
	e.requireNoRuntimeFiles("stubborn")
	if got := e.status(e.m, "stubborn"); got.State != vm.StateStopped {
		t.Errorf("after forced stop: state %s, want stopped", got.State)
	}
}

// TestKilledQEMU kills QEMU with SIGKILL behind vmtui's back: the VM shows
// as stopped and its runtime files are removed.
func TestKilledQEMU(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("victim")
	st := e.start(def, vm.StartOptions{Paused: true})
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitGone(st.PID, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Another vmtui (another Manager) finds it stopped.
	if got := e.status(e.newManager(), "victim"); got.State != vm.StateStopped || got.PID != 0 {
		t.Errorf("after kill -9: state %s, pid %d (err %q); want stopped", got.State, got.PID, got.Err)
	}
	e.requireNoRuntimeFiles("victim")
	// And it starts again.
	st2 := e.start(def, vm.StartOptions{Paused: true})
	if st2.State != vm.StatePaused || st2.PID == st.PID {
		t.Errorf("restart: state %s, pid %d; want paused, a new pid", st2.State, st2.PID)
	}
}

// fakeRuntimeFiles writes the runtime files of a running VM by hand: a
// pidfile naming pid, a boot ID, a pty, a stopping marker and two socket
// files (plain files: nothing listens).
func (e *guestEnv) fakeRuntimeFiles(name string, pid int, bootID string) {
	e.t.Helper()
	if _, err := e.paths.EnsureRuntimeDir(name); err != nil {
		e.t.Fatal(err)
	}
	files := map[string]string{
		e.paths.PIDFile(name):                 strconv.Itoa(pid) + "\n",
		e.paths.BootIDFile(name):              bootID + "\n",
		e.paths.PTYFile(name):                 "/dev/pts/999\n",
		e.paths.RuntimeFile(name, "stopping"): "",
	}
	for _, sock := range []func(string) (string, error){e.paths.QMPSocket, e.paths.EventsSocket} {
		p, err := sock(name)
		if err != nil {
			e.t.Fatal(err)
		}
		files[p] = ""
	}
	for f, data := range files {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
}

func currentBootID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startProcess starts a process that lives until the test ends.
func startProcess(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// TestStalePIDFile: a pidfile whose PID is now another program's, or that
// was written before the host's last boot, means stopped, and the stale
// files go.
func TestStalePIDFile(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)

	t.Run("pid of another program", func(t *testing.T) {
		e.define("reused")
		sleeper := startProcess(t, exec.Command("sleep", "60"))
		e.fakeRuntimeFiles("reused", sleeper, currentBootID(t))
		if got := e.status(e.m, "reused"); got.State != vm.StateStopped || got.PID != 0 {
			t.Errorf("pidfile naming sleep %d: state %s, pid %d (err %q); want stopped", sleeper, got.State, got.PID, got.Err)
		}
		e.requireNoRuntimeFiles("reused")
		if !alive(sleeper) {
			t.Errorf("the sleep process %d named by the stale pidfile was killed", sleeper)
		}
	})

	t.Run("pid of no process", func(t *testing.T) {
		e.define("gone")
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		e.fakeRuntimeFiles("gone", cmd.Process.Pid, currentBootID(t))
		if got := e.status(e.m, "gone"); got.State != vm.StateStopped {
			t.Errorf("pidfile naming an exited process: state %s, want stopped", got.State)
		}
		e.requireNoRuntimeFiles("gone")
	})

	t.Run("boot id of another boot", func(t *testing.T) {
		e.define("rebooted")
		// A process that looks like this VM's QEMU (its argv[0] and
		// -pidfile say so), so that only the boot ID tells it is stale.
		pidfile := e.paths.PIDFile("rebooted")
		fake := exec.Command("bash", "-c", "sleep 60; :", "x", "-pidfile", pidfile)
		fake.Args[0] = "qemu-system-x86_64"
		pid := startProcess(t, fake)
		waitArgv(t, pid, pidfile)
		e.fakeRuntimeFiles("rebooted", pid, "00000000-0000-0000-0000-000000000000")
		st, _, err := e.m.Status(context.Background(), "rebooted")
		if err != nil {
			t.Fatal(err)
		}
		if st.State != vm.StateStopped || st.PID != 0 {
			t.Errorf("boot id of another boot: state %s, pid %d (err %q); want stopped", st.State, st.PID, st.Err)
		}
		e.requireNoRuntimeFiles("rebooted")
	})
}

// waitArgv waits until process pid runs with pidfile in its command line
// (it may not have exec'd yet).
func waitArgv(t *testing.T, pid int, pidfile string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !hasArgs(cmdline(pid), "-pidfile", pidfile) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d: argv %q", pid, cmdline(pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartFailures: QEMU's own error text when it refuses to start, and
// vmd's messages for what is checked before.
func TestStartFailures(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	dir := t.TempDir()
	missing := dir + "/missing"
	tests := []struct {
		name string
		mod  func(def *config.VM)
		want string
	}{
		{"qemu-option", func(d *config.VM) { d.ExtraArgs = []string{"-no-such-option"} }, "qemu-system-x86_64: -no-such-option: invalid option"},
		{"qemu-machine", func(d *config.VM) { d.Machine = "no-such-machine" }, "qemu-system-x86_64: unsupported machine type"},
		{"disk", func(d *config.VM) { d.Disks = []config.Disk{{Path: missing + ".qcow2"}} }, "could not open disk image(s): \"" + missing + ".qcow2\": no such file or directory"},
		{"cdrom", func(d *config.VM) { d.CDROM = missing + ".iso" }, "could not find specified iso image \"" + missing + ".iso\": no such file or directory"},
		{"cdrom-dir", func(d *config.VM) { d.CDROM = dir }, "specified iso image \"" + dir + "\" is not a regular file"},
		{"kernel", func(d *config.VM) { d.Kernel = missing + ".vmlinuz" }, "could not find specified kernel \"" + missing + ".vmlinuz\": no such file or directory"},
		{"initrd", func(d *config.VM) { d.Initrd = missing + ".img" }, "could not find specified initrd \"" + missing + ".img\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := &config.VM{
				Name: tt.name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
				Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
			}
			tt.mod(def)
			if err := e.m.Store().Create(def); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			_, err := e.m.Start(ctx, def, vm.StartOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start: %v\nwant an error containing %q", err, tt.want)
			}
			t.Logf("start: %v", err)
			if pids := qemuPIDs(e.paths.PIDFile(tt.name), false); len(pids) != 0 {
				t.Errorf("QEMUs %v run after a failed start", pids)
			}
			e.requireNoRuntimeFiles(tt.name)
			if st := e.status(e.m, tt.name); st.State != vm.StateStopped {
				t.Errorf("after a failed start: state %s (err %q), want stopped", st.State, st.Err)
			}
		})
	}
}

// TestDiskPathWithComma boots a guest with a disk whose path holds a comma
// and what would be an option after it: the guest starts, and QEMU opened
// that very file, writable.
func TestDiskPathWithComma(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	dir := t.TempDir()
	path := dir + "/evil,read-only=on,x.raw"
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	def := &config.VM{
		Name: "comma", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
		Disks: []config.Disk{{Path: path}},
	}
	if err := e.m.Store().Create(def); err != nil {
		t.Fatal(err)
	}
	e.start(def, vm.StartOptions{})
	e.waitSerial("comma", testguest.Banner, testguest.BootTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	qmpPath, _ := e.paths.QMPSocket("comma")
	c, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		Drv      string `json:"drv"`
		RO       bool   `json:"ro"`
	}
	if err := c.Execute(ctx, "query-named-block-nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nodes {
		t.Logf("block node %+v", n)
		if n.File == path && n.Drv == "raw" {
			found = true
			if n.RO {
				t.Errorf("node %s is read-only: the path injected read-only=on", n.NodeName)
			}
		}
	}
	if !found {
		t.Errorf("no raw block node on %q", path)
	}
}

// TestFailedStopLeavesNoMarker: a graceful stop that could not reach QEMU's
// monitor (another client held it) pressed no power button, so the VM must
// not show as stopping afterwards.
func TestFailedStopLeavesNoMarker(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("busy")
	e.start(def, vm.StartOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	qmpPath, _ := e.paths.QMPSocket("busy")
	holder, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.Stop(ctx, def, vm.StopOptions{})
	holder.Close()
	if err == nil {
		t.Fatal("graceful stop succeeded while another client held the monitor")
	}
	t.Logf("stop: %v", err)
	// The monitor drains the connections that timed out while it was
	// held (see TestConcurrentQueries) before it answers again.
	waitMonitor(t, qmpPath)
	if st := e.status(e.m, "busy"); st.State != vm.StateRunning {
		t.Errorf("after a failed stop: state %s (err %q), want running: no power-down was requested", st.State, st.Err)
	}
}
