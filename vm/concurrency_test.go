package vm_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
	"github.com/vmtui/vmtui/vm/qmp"
)

// Integration tests of several vmtui processes working on one VM at once:
// two starts, a start killed half-way, status queries while other clients
// hold QEMU's monitors.

// TestConcurrentStart starts one VM twice at once, from two Managers in one
// process: one QEMU, one ErrAlreadyRunning.
func TestConcurrentStart(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	e.define("twice")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	type result struct {
		st  vm.Status
		err error
	}
	results := make(chan result, 2)
	gate := make(chan struct{})
	for range 2 {
		m := e.newManager()
		def, err := m.Store().Lookup("twice")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			<-gate
			st, err := m.Start(ctx, def, vm.StartOptions{Paused: true})
			results <- result{st, err}
		}()
	}
	close(gate)
	var started, already int
	var pid int
	for range 2 {
		r := <-results
		switch {
		case r.err == nil:
			started++
			pid = r.st.PID
		case errors.Is(r.err, vm.ErrAlreadyRunning):
			already++
		default:
			t.Errorf("start: %v", r.err)
		}
	}
	if started != 1 || already != 1 {
		t.Errorf("%d started, %d already running; want 1 and 1", started, already)
	}
	if pids := qemuPIDs(e.paths.PIDFile("twice"), false); len(pids) != 1 || pids[0] != pid {
		t.Errorf("QEMUs of the vm: %v, want exactly [%d]", pids, pid)
	}
}

// TestConcurrentStartCLI starts one VM from two vmtui processes at once.
func TestConcurrentStartCLI(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	e.define("twice")
	var cmds [2]*cliRun
	for i := range cmds {
		cmds[i] = e.startCLI("start", "twice")
	}
	var started, already int
	for _, c := range cmds {
		r := c.wait(t)
		switch {
		case r.code == 0 && regexp.MustCompile(`^vmtui: started vm 1 successfully, tty /dev/pts/[0-9]+\n$`).MatchString(r.stderr):
			started++
		case r.code == 1 && strings.Contains(r.stderr, "already running"):
			already++
		default:
			t.Errorf("vmtui start: exit %d, stderr %q", r.code, r.stderr)
		}
	}
	if started != 1 || already != 1 {
		t.Errorf("%d started, %d already running; want 1 and 1", started, already)
	}
	if pids := qemuPIDs(e.paths.PIDFile("twice"), false); len(pids) != 1 {
		t.Errorf("QEMUs of the vm: %v, want exactly one", pids)
	}
	if st := e.status(e.m, "twice"); st.State != vm.StateRunning {
		t.Errorf("state %s (err %q), want running", st.State, st.Err)
	}
}

// cliRun is a vmtui process started in the background.
type cliRun struct {
	cmd            *exec.Cmd
	stdout, stderr strings.Builder
	begin          time.Time
}

func (e *guestEnv) startCLI(args ...string) *cliRun {
	e.t.Helper()
	return e.startCLIEnv(nil, args...)
}

// startCLIEnv starts vmtui with env added to its environment.
func (e *guestEnv) startCLIEnv(env []string, args ...string) *cliRun {
	e.t.Helper()
	c := &cliRun{cmd: e.vmtuiCmd(args...)}
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	c.begin = time.Now()
	if err := c.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (c *cliRun) wait(t *testing.T) cliResult {
	t.Helper()
	err := c.cmd.Wait()
	r := cliResult{stdout: c.stdout.String(), stderr: c.stderr.String(), took: time.Since(c.begin)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("vmtui %q: %v", c.cmd.Args, err)
	}
	return r
}

// TestKilledMidStart kills `vmtui start` at several moments of the start:
// every QEMU it leaves behind must be listed as running, none unaccounted
// for. Two moments are certain, with QEMU held at a gate (see gatedQEMU):
// while the start holds the VM's lock, and while QEMU is being executed;
// one is as soon as QEMU runs; the others are spread over a start's
// length, and may come after it ended.
func TestKilledMidStart(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("interrupted")
	pidfile := e.paths.PIDFile("interrupted")
	lockfile := e.paths.LockFile("interrupted")
	binary, gate := gatedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	stop := func() {
		t.Helper()
		if err := e.m.Stop(ctx, def, vm.StopOptions{Force: true}); err != nil && !errors.Is(err, vm.ErrNotRunning) {
			t.Fatalf("forced stop: %v", err)
		}
		if pids := qemuPIDs(pidfile, false); len(pids) != 0 {
			t.Fatalf("QEMUs %v still run after a forced stop", pids)
		}
	}
	// check checks what a killed start left, once nothing it started is
	// still on its way to run QEMU: killed between fork and exec, vmtui
	// leaves a child that holds the VM's lock (the flock is shared across
	// fork) until it execs, and a gated QEMU waits for its gate.
	check := func(what string, c *cliRun) (killed bool) {
		t.Helper()
		c.cmd.Process.Kill()
		r := c.wait(t)
		killed = r.code == -1
		waitUnlocked(t, lockfile)
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		waitNoWrapper(t, binary, pidfile)
		pids := qemuPIDs(pidfile, false)
		st := e.status(e.m, "interrupted")
		t.Logf("kill %s (killed: %t): QEMUs %v, listed %s pid %d %q", what, killed, pids, st.State, st.PID, st.Err)
		switch {
		case len(pids) > 1:
			t.Errorf("kill %s: %d QEMUs %v for one vm", what, len(pids), pids)
		case len(pids) == 1 && (st.PID != pids[0] || st.State != vm.StateRunning):
			t.Errorf("kill %s: QEMU %d runs but is listed as %s, pid %d (err %q); want running", what, pids[0], st.State, st.PID, st.Err)
		case len(pids) == 0 && st.State != vm.StateStopped:
			t.Errorf("kill %s: no QEMU but listed as %s (err %q)", what, st.State, st.Err)
		case len(pids) == 0:
			e.requireNoRuntimeFiles("interrupted")
		}
		stop()
		return killed
	}
	gated := []string{"VMTUI_QEMU=" + binary}

	// While the start holds the VM's lock (its marker says it starts),
	// before QEMU can have answered.
	os.Remove(gate)
	c := e.startCLIEnv(gated, "start", "interrupted")
	waitFile(t, e.paths.RuntimeFile("interrupted", "starting"), c.cmd.Process.Pid)
	if !check("while the start holds the lock", c) {
		t.Errorf("vmtui start ended with its QEMU held at the gate")
	}

	// While QEMU is being executed: vmtui has started it, and waits for
	// it to answer.
	os.Remove(gate)
	c = e.startCLIEnv(gated, "start", "interrupted")
	waitWrapper(t, binary, pidfile, c.cmd.Process.Pid)
	if !check("while QEMU is executed", c) {
		t.Errorf("vmtui start ended with its QEMU held at the gate")
	}

	// As soon as QEMU runs (vmtui may have finished by then).
	c = e.startCLI("start", "interrupted")
	waitQEMU(t, pidfile, c.cmd.Process.Pid)
	check("once QEMU runs", c)

	// How long a whole start takes here (the second of two: the first
	// pays for cold caches), to spread more kills over it.
	var full time.Duration
	for range 2 {
		r := e.startCLI("start", "interrupted").wait(t)
		if r.code != 0 {
			t.Fatalf("vmtui start: exit %d: %s", r.code, r.stderr)
		}
		full = r.took
		stop()
	}
	t.Logf("a whole start takes %v", full.Round(time.Millisecond))
	landed := 0
	for _, frac := range []float64{0, 0.05, 0.2, 0.35, 0.7} {
		// Jitter each moment by up to a tenth of the start. Where the
		// kill lands does not matter: each is checked the same.
		delay := time.Duration((frac + 0.1*rand.Float64()) * float64(full))
		c := e.startCLI("start", "interrupted")
		time.Sleep(delay - time.Since(c.begin))
		if check(fmt.Sprintf("after %v", delay.Round(time.Millisecond)), c) {
			landed++
		}
	}
	t.Logf("%d of the spread kills landed before the start ended", landed)
}

// waitFile waits until the file path exists, while process pid runs.
func waitFile(t *testing.T, path string, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if !alive(pid) {
			t.Fatalf("process %d exited before %s existed", pid, path)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wrappers returns the gated QEMUs (see gatedQEMU) of pidfile that have not
// executed QEMU yet.
func wrappers(binary, pidfile string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if argv := cmdline(pid); len(argv) > 1 && argv[1] == binary && hasArgs(argv, "-pidfile", pidfile) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitWrapper waits until a gated QEMU of pidfile waits at its gate, while
// process pid (the vmtui that starts it) runs.
func waitWrapper(t *testing.T, binary, pidfile string, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(wrappers(binary, pidfile)) == 0 {
		if !alive(pid) {
			t.Fatalf("process %d exited before it ran %s", pid, binary)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not run after a minute", binary)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitNoWrapper waits until no gated QEMU of pidfile waits any more (its
// gate is open: each executes QEMU).
func waitNoWrapper(t *testing.T, binary, pidfile string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		pids := wrappers(binary, pidfile)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still run %s a minute after its gate opened", pids, binary)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitQEMU waits until a QEMU of pidfile runs, or process pid (the vmtui
// that starts it) has exited.
func waitQEMU(t *testing.T, pidfile string, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(qemuPIDs(pidfile, false)) == 0 && alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("no QEMU of %s a minute into its start", pidfile)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitUnlocked waits until nobody holds the lock file path.
func waitUnlocked(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := store.TryLock(path)
		if err == nil {
			l.Unlock()
			return
		}
		if !errors.Is(err, store.ErrLocked) {
			return // no runtime directory: nothing was started
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still locked a minute after vmtui was killed", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestListWithClients runs `vmtui --list` while other clients are
// connected to the VM's monitors: a long-lived watcher on the events
// socket, a short-lived client on the QMP socket, and a stuck one.
func TestListWithClients(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("watched")
	e.start(def, vm.StartOptions{Paused: true})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	eventsPath, _ := e.paths.EventsSocket("watched")
	qmpPath, _ := e.paths.QMPSocket("watched")

	row := func(r cliResult) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("vmtui --list: exit %d: %s", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("vmtui --list: %q, want a header and one row", r.stdout)
		}
		return lines[1]
	}

	watcher, err := qmp.Dial(ctx, eventsPath)
	if err != nil {
		t.Fatalf("watcher: %v", err)
	}
	defer watcher.Close()
	if r := e.run("--list"); !strings.Contains(row(r), " paused watched") {
		t.Errorf("with a watcher on the events socket: %q (stderr %q), want paused", row(r), r.stderr)
	}

	// A short-lived client holds the QMP socket until --list waits for
	// it (its connection queued on QEMU's listener), then leaves.
	brief, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatalf("short-lived client: %v", err)
	}
	c := e.startCLI("--list")
	waitQueued(t, qmpPath, c.cmd.Process.Pid)
	brief.Close()
	if r := c.wait(t); !strings.Contains(row(r), " paused watched") {
		t.Errorf("with a short-lived QMP client: %q (stderr %q), want paused", row(r), r.stderr)
	}

	// A stuck client never lets go: --list still answers, and says what
	// is wrong.
	stuck, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatalf("stuck client: %v", err)
	}
	defer stuck.Close()
	r := e.run("--list")
	t.Logf("with a stuck QMP client, after %v: %q, stderr %q", r.took.Round(time.Millisecond), row(r), r.stderr)
	if !strings.Contains(row(r), " broken watched") || !strings.Contains(r.stderr, "vm watched:") {
		t.Errorf("with a stuck QMP client: %q, stderr %q; want broken with the reason", row(r), r.stderr)
	}
	stuck.Close()
	// Once it has gone (and QEMU has drained the connections that gave
	// up meanwhile: see TestConcurrentQueries), the VM is well again.
	waitMonitor(t, qmpPath)
	if r := e.run("--list"); !strings.Contains(row(r), " paused watched") {
		t.Errorf("after the stuck client left: %q (stderr %q), want paused", row(r), r.stderr)
	}
}

// queuedConns returns how many connections wait, not yet accepted, in the
// backlog of the listening socket at path: /proc/net/unix lists them with
// the listener's path in state 02 (connecting).
func queuedConns(path string) int {
	b, _ := os.ReadFile("/proc/net/unix")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		if f := strings.Fields(line); len(f) == 8 && f[5] == "02" && f[7] == path {
			n++
		}
	}
	return n
}

// waitQueued waits until a connection waits in the backlog of the
// listening socket at path, while process pid (the client) runs.
func waitQueued(t *testing.T, path string, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for queuedConns(path) == 0 {
		if !alive(pid) {
			t.Fatalf("process %d exited before it connected to %s", pid, path)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection queued on %s after a minute", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMonitor waits until QEMU answers on the QMP socket at path.
func waitMonitor(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := qmp.Dial(ctx, path)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU does not answer on %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// busyDial and busyStatus are qmp.Dial and Manager.Status, under names of
// their own, so that dialing can find in this process's stacks the calls of
// TestConcurrentQueries (other tests run in parallel).
//
//go:noinline
func busyDial(ctx context.Context, path string) error {
	c, err := qmp.Dial(ctx, path)
	if err == nil {
		c.Close()
	}
	return err
}

//go:noinline
func busyStatus(ctx context.Context, m *vm.Manager, name string) vm.Status {
	st, _, _ := m.Status(ctx, name)
	return st
}

// dialing returns how many goroutines of this process are in qmp.Dial
// under busyDial or busyStatus (waiting for a busy monitor), and how many
// of them wait to connect again because QEMU's backlog was full (neither
// connecting nor waiting for a greeting).
func dialing() (in, retrying int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/vmtui/vmtui/vm/qmp.Dial(") ||
			!strings.Contains(g, "vm_test.busyDial(") && !strings.Contains(g, "vm_test.busyStatus(") {
			continue
		}
		in++
		// Blocked in a select of Dial itself (a traceback leaves out
		// the runtime's frames), not in handshake's.
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, " [select") && !strings.Contains(g, "qmp.handshake(") {
			retrying++
		}
	}
	return in, retrying
}

// waitDialing waits until n goroutines wait in busyDial or busyStatus for
// the monitor, and at least retrying of them after a full backlog. It fails
// as soon as one has returned (answered: the count of answers).
func waitDialing(t *testing.T, n, retrying int, answered func() int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		in, r := dialing()
		if in == n && r >= retrying {
			return
		}
		if a := answered(); a > 0 {
			t.Fatalf("%d clients returned while another held the monitor", a)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d clients wait for the monitor (%d to connect again) after a minute; want %d (%d)", in, r, n, retrying)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConcurrentQueries: several vmtui processes (a TUI, --list, stop in
// other terminals) query one VM at the same time, with its monitor free and
// while a short-lived client holds it until they all wait. None may see the
// VM as anything but what it is.
func TestConcurrentQueries(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("popular")
	e.start(def, vm.StartOptions{Paused: true})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	qmpPath, _ := e.paths.QMPSocket("popular")
	const clients = 4

	// Each goroutine is another vmtui (a Manager of its own), asking again
	// and again.
	t.Run("status", func(t *testing.T) {
		states := make(chan vm.Status, clients*20)
		for range clients {
			m := e.newManager()
			go func() {
				for range 20 {
					st, _, _ := m.Status(ctx, "popular")
					states <- st
				}
			}()
		}
		bad := 0
		for range clients * 20 {
			if st := <-states; st.State != vm.StatePaused {
				if bad++; bad <= 3 {
					t.Errorf("concurrent status: state %s (err %q), want paused", st.State, st.Err)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%d of %d concurrent queries got a wrong state", bad, clients*20)
		}
	})

	// QEMU serves one client at a time and queues two more at most (it
	// listens with a backlog of 1); a connect beyond that fails at once
	// with EAGAIN. A client must keep trying until its deadline, as it
	// does when it is queued. The holder lets go once every client waits,
	// one at least after an EAGAIN.
	t.Run("dial while busy", func(t *testing.T) {
		waitMonitor(t, qmpPath)
		holder, err := qmp.Dial(ctx, qmpPath)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close() // on a failure; closing twice is harmless
		errs := make(chan error, clients)
		for range clients {
			go func() {
				dctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				errs <- busyDial(dctx, qmpPath)
			}()
		}
		waitDialing(t, clients, 1, func() int { return len(errs) })
		holder.Close()
		for range clients {
			if err := <-errs; err != nil {
				t.Errorf("dial while the monitor was busy until every client waited: %v", err)
			}
		}
	})

	// A status query waits for a busy monitor (for a while: see
	// TestListWithClients for one that never frees).
	t.Run("status while busy", func(t *testing.T) {
		waitMonitor(t, qmpPath)
		holder, err := qmp.Dial(ctx, qmpPath)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close() // on a failure; closing twice is harmless
		states := make(chan vm.Status, clients)
		for range clients {
			m := e.newManager()
			go func() { states <- busyStatus(ctx, m, "popular") }()
		}
		waitDialing(t, clients, 0, func() int { return len(states) })
		holder.Close()
		for range clients {
			if st := <-states; st.State != vm.StatePaused {
				t.Errorf("status while the monitor was busy until every query waited: state %s (err %q), want paused", st.State, st.Err)
			}
		}
	})
}
