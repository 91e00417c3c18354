package vm_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"vmtui/config"
	"vmtui/vm"
	"vmtui/vm/qmp"
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
	c := &cliRun{cmd: e.vmtuiCmd(args...)}
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
// for.
func TestKilledMidStart(t *testing.T) {
	t.Parallel()
	e := newGuestEnv(t)
	def := e.define("interrupted")
	pidfile := e.paths.PIDFile("interrupted")
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

	// How long a whole start takes here (the second of two: the first
	// pays for cold caches), to spread the kills over it.
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
	for i, frac := range []float64{0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7} {
		// Jitter each moment by up to a tenth of the start.
		delay := time.Duration((frac + 0.1*rand.Float64()) * float64(full))
		c := e.startCLI("start", "interrupted")
		time.Sleep(delay - time.Since(c.begin))
		c.cmd.Process.Kill()
		r := c.wait(t)
		killed := r.code == -1
		if killed {
			landed++
		}
		// Killed between fork and exec, vmtui leaves a child that holds
		// the VM's lock (the flock is shared across fork) until it execs
		// QEMU: the start is still in progress then, and List says
		// "starting". Wait for it to end.
		waitUnlocked(t, e.paths.LockFile("interrupted"))
		pids := qemuPIDs(pidfile, false)
		st := e.status(e.m, "interrupted")
		t.Logf("kill %d after %v (killed: %t): QEMUs %v, listed %s pid %d %q", i, delay.Round(time.Millisecond), killed, pids, st.State, st.PID, st.Err)
		switch {
		case len(pids) > 1:
			t.Errorf("kill after %v: %d QEMUs %v for one vm", delay, len(pids), pids)
		case len(pids) == 1 && (st.PID != pids[0] || st.State != vm.StateRunning):
			t.Errorf("kill after %v: QEMU %d runs but is listed as %s, pid %d (err %q); want running", delay, pids[0], st.State, st.PID, st.Err)
		case len(pids) == 0 && st.State != vm.StateStopped:
			t.Errorf("kill after %v: no QEMU but listed as %s (err %q)", delay, st.State, st.Err)
		case len(pids) == 0:
			e.requireNoRuntimeFiles("interrupted")
		}
		stop()
	}
	if landed == 0 {
		t.Errorf("every vmtui start finished before it was killed: the test tested nothing")
	}
}

// waitUnlocked waits until nobody holds the lock file path.
func waitUnlocked(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := config.TryLock(path)
		if err == nil {
			l.Unlock()
			return
		}
		if !errors.Is(err, config.ErrLocked) {
			return // no runtime directory: nothing was started
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still locked 5 s after vmtui was killed", path)
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

	list := func(limit time.Duration) (row string, r cliResult) {
		t.Helper()
		r = e.run("--list")
		if r.code != 0 {
			t.Fatalf("vmtui --list: exit %d: %s", r.code, r.stderr)
		}
		if r.took > limit {
			t.Errorf("vmtui --list took %v, want under %v", r.took, limit)
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("vmtui --list: %q, want a header and one row", r.stdout)
		}
		return lines[1], r
	}

	watcher, err := qmp.Dial(ctx, eventsPath)
	if err != nil {
		t.Fatalf("watcher: %v", err)
	}
	defer watcher.Close()
	if row, r := list(3 * time.Second); !strings.Contains(row, " paused watched") {
		t.Errorf("with a watcher on the events socket: %q (stderr %q), want paused", row, r.stderr)
	}

	// A short-lived client holds the QMP socket for a second.
	brief, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatalf("short-lived client: %v", err)
	}
	go func() {
		time.Sleep(time.Second)
		brief.Close()
	}()
	if row, r := list(4 * time.Second); !strings.Contains(row, " paused watched") {
		t.Errorf("with a short-lived QMP client: %q (stderr %q), want paused", row, r.stderr)
	}

	// A stuck client never lets go: --list still answers, in bounded time,
	// and says what is wrong.
	stuck, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		t.Fatalf("stuck client: %v", err)
	}
	defer stuck.Close()
	row, r := list(6 * time.Second)
	t.Logf("with a stuck QMP client, after %v: %q, stderr %q", r.took.Round(time.Millisecond), row, r.stderr)
	if !strings.Contains(row, " broken watched") || !strings.Contains(r.stderr, "vm watched:") {
		t.Errorf("with a stuck QMP client: %q, stderr %q; want broken with the reason", row, r.stderr)
	}
	stuck.Close()
	// Once it has gone (and QEMU has drained the connections that gave
	// up meanwhile: see TestConcurrentQueries), the VM is well again.
	waitMonitor(t, qmpPath)
	if row, r := list(3 * time.Second); !strings.Contains(row, " paused watched") {
		t.Errorf("after the stuck client left: %q (stderr %q), want paused", row, r.stderr)
	}
}

// waitMonitor waits until QEMU answers on the QMP socket at path.
func waitMonitor(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
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

// TestConcurrentQueries: several vmtui processes (a TUI, --list, stop in
// other terminals) query one VM at the same time, with its monitor free and
// while a short-lived client holds it for a second. None may see the VM as
// anything but what it is.
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
	// does when it is queued.
	t.Run("dial while busy", func(t *testing.T) {
		waitMonitor(t, qmpPath)
		holder, err := qmp.Dial(ctx, qmpPath)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, clients)
		for range clients {
			go func() {
				dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				c, err := qmp.Dial(dctx, qmpPath)
				if err == nil {
					c.Close()
				}
				errs <- err
			}()
		}
		time.Sleep(time.Second)
		holder.Close()
		for range clients {
			if err := <-errs; err != nil {
				t.Errorf("dial with a 3 s deadline while the monitor is busy for 1 s: %v", err)
			}
		}
	})

	t.Run("status while busy", func(t *testing.T) {
		waitMonitor(t, qmpPath)
		holder, err := qmp.Dial(ctx, qmpPath)
		if err != nil {
			t.Fatal(err)
		}
		states := make(chan vm.Status, clients)
		for range clients {
			m := e.newManager()
			go func() {
				st, _, _ := m.Status(ctx, "popular")
				states <- st
			}()
		}
		time.Sleep(time.Second)
		holder.Close()
		for range clients {
			if st := <-states; st.State != vm.StatePaused {
				t.Errorf("status while the monitor was busy for 1 s: state %s (err %q), want paused", st.State, st.Err)
			}
		}
	})
}
