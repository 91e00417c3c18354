package qmp_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
)

// qemuBinary returns the path of qemu-system-x86_64, skipping the test
// without it, unless CI is set: there a missing QEMU is a failure.
func qemuBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and qemu-system-x86_64 is missing: %v", err)
		}
		t.Skipf("qemu-system-x86_64 not found: %v", err)
	}
	return bin
}

// qemu is a QEMU process started for a test.
type qemu struct {
	sock   string        // the QMP socket
	conn   net.Conn      // dialed before QEMU started: the first client
	exited chan struct{} // closed once the process is reaped
	err    error         // its exit status, after exited
	stderr *bytes.Buffer // read only after exited
}

// startQEMU starts a guest that sits in prelaunch (-S; no kernel needed),
// with its serial port on a pty chardev "ser0". It creates the QMP
// listener itself, dials it, and passes it to QEMU as a file descriptor,
// as the vm package does: no polling for the socket to appear. QEMU is
// killed and reaped when the test ends.
func startQEMU(t *testing.T) *qemu {
	t.Helper()
	bin := qemuBinary(t)
	dir, err := os.MkdirTemp("", "qmpit") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	q := &qemu{sock: filepath.Join(dir, "qmp.sock"), exited: make(chan struct{}), stderr: new(bytes.Buffer)}

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: q.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // QEMU serves it from now on
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	if q.conn, err = net.Dial("unix", q.sock); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin,
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
		"-S", "-m", "64M",
		"-chardev", "pty,id=ser0", "-serial", "chardev:ser0",
		"-qmp", "unix:fd=3,server=on,wait=off",
	)
	cmd.ExtraFiles = []*os.File{lnFile}
	cmd.Stderr = q.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		q.conn.Close()
		t.Fatal(err)
	}
	go func() {
		q.err = cmd.Wait()
		close(q.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-q.exited
	})
	return q
}

func (q *qemu) failf(t *testing.T, format string, args ...any) {
	t.Helper()
	select {
	case <-q.exited:
		t.Fatalf("%s (QEMU exited: %v; stderr: %s)", fmt.Sprintf(format, args...), q.err, q.stderr)
	default:
		t.Fatalf(format, args...)
	}
}

// TestQEMU drives a real QEMU 7.2 through the client.
func TestQEMU(t *testing.T) {
	q := startQEMU(t)
	ctx := testCtx(t, time.Minute) // a loaded CI machine may be slow to start QEMU

	c, err := qmp.New(ctx, q.conn)
	if err != nil {
		q.failf(t, "New on the pre-dialed connection: %v", err)
	}
	defer c.Close()
	if v := c.Version(); !v.AtLeast(7, 0) {
		t.Errorf("Version: got %s, want 7.0 or newer", v)
	}

	st, err := c.QueryStatus(ctx)
	if err != nil || st != (qmp.Status{Status: qmp.StatePrelaunch}) {
		q.failf(t, "QueryStatus: got %+v, %v, want prelaunch", st, err)
	}

	pty, err := c.PTY(ctx, "ser0")
	if err != nil || !strings.HasPrefix(pty, "/dev/pts/") {
		t.Errorf("PTY(ser0): got %q, %v, want /dev/pts/N", pty, err)
	} else if _, err := os.Stat(pty); err != nil {
		t.Errorf("PTY(ser0): %v", err)
	}

	cpus, err := c.QueryCPUsFast(ctx)
	if err != nil || len(cpus) != 1 || cpus[0].ThreadID <= 0 {
		t.Errorf("QueryCPUsFast: got %+v, %v, want one vCPU with a thread id", cpus, err)
	}

	if _, err := c.QueryBalloon(ctx); qmp.ErrorClass(err) != qmp.ClassDeviceNotActive {
		t.Errorf("QueryBalloon without a balloon: got %v, want class DeviceNotActive", err)
	}
	if err := c.Execute(ctx, "query-cpus", nil, nil); qmp.ErrorClass(err) != qmp.ClassCommandNotFound {
		t.Errorf("query-cpus: got %v, want class CommandNotFound", err)
	}
	if err := c.Execute(ctx, "balloon", map[string]string{"value": "x"}, nil); qmp.ErrorClass(err) != qmp.ClassGenericError {
		t.Errorf("balloon with a string: got %v, want class GenericError", err)
	}

	// QEMU greets one client at a time.
	_, err = qmp.Dial(testCtx(t, 300*time.Millisecond), q.sock)
	if !errors.Is(err, qmp.ErrBusy) {
		t.Errorf("second Dial while connected: got %v, want ErrBusy", err)
	}

	sub := c.Subscribe(16)
	if err := c.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if ev, err := sub.Wait(ctx); err != nil || ev.Name != qmp.EventResume || ev.Time.IsZero() {
		t.Errorf("after cont: got %+v, %v, want RESUME with a time", ev, err)
	} else if d := time.Since(ev.Time); d < -time.Second || d > time.Minute {
		t.Errorf("RESUME time %v is %v from now", ev.Time, d)
	}
	if st, err := c.QueryStatus(ctx); err != nil || st != (qmp.Status{Status: qmp.StateRunning, Running: true}) {
		t.Errorf("QueryStatus after cont: got %+v, %v, want running", st, err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-sub.C: // sent before the reply, so already here
		if ev.Name != qmp.EventStop {
			t.Errorf("after stop: got %s, want STOP", ev.Name)
		}
	default:
		t.Error("STOP not delivered by the time stop returned")
	}
	if st, err := c.QueryStatus(ctx); err != nil || st != (qmp.Status{Status: qmp.StatePaused}) {
		t.Errorf("QueryStatus after stop: got %+v, %v, want paused", st, err)
	}
	if out, err := c.HumanMonitorCommand(ctx, "info status"); err != nil || !strings.Contains(out, "paused") {
		t.Errorf("info status: got %q, %v, want paused", out, err)
	}

	// Once the first client has gone, the next one is greeted.
	c.Close()
	c2, err := qmp.Dial(ctx, q.sock)
	if err != nil {
		q.failf(t, "Dial after the first client left: %v", err)
	}
	defer c2.Close()
	if st, err := c2.QueryStatus(ctx); err != nil || st.Status != qmp.StatePaused {
		t.Errorf("QueryStatus on the second client: got %+v, %v, want paused", st, err)
	}

	shutdown := c2.Subscribe(4, qmp.EventShutdown)
	if err := c2.Quit(ctx); err != nil {
		q.failf(t, "Quit: %v", err)
	}
	ev, err := shutdown.Wait(ctx)
	var info qmp.ShutdownInfo
	if err == nil {
		err = ev.DecodeData(&info)
	}
	if err != nil || info != (qmp.ShutdownInfo{Reason: "host-qmp-quit"}) {
		t.Errorf("after quit: got %+v %+v, %v, want SHUTDOWN host-qmp-quit", ev, info, err)
	}
	select {
	case <-c2.Done():
	case <-ctx.Done():
		t.Fatal("connection still open after quit")
	}
	if err := c2.Err(); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("Err after quit: got %v, want ErrClosed", err)
	}
	select {
	case <-q.exited:
		if q.err != nil {
			t.Errorf("QEMU exit after quit: %v (stderr: %s)", q.err, q.stderr)
		}
	case <-ctx.Done():
		t.Error("QEMU still running after quit")
	}
}
