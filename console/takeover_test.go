package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// earlyTakeoverEnv names the directory of the child's part of
// TestAttachEarlyTakeover, which TestMain runs.
const earlyTakeoverEnv = "CONSOLE_EARLY_TAKEOVER_DIR"

// TestAttachEarlyTakeover sends SIGUSR1, as a takeover does, to a session
// held between the instant its lock file names it and the start of the
// relay: the request must not be lost (the taker would then kill the holder
// with SIGTERM after its grace period); the session must detach as soon as
// it runs. The session runs in a child process, which has never handled
// SIGUSR1 before.
func TestAttachEarlyTakeover(t *testing.T) {
	vm, dir := newFakeVM(t), t.TempDir()
	lockFile := filepath.Join(dir, "run", "console.lock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), earlyTakeoverEnv+"="+dir, "CONSOLE_EARLY_TAKEOVER_TTY="+vm.tty)
	stdin, err := cmd.StdinPipe() // kept open: no end of input
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	// What lockConsole's takeover does: read the holder's PID, check
	// that it holds the lock file, signal it.
	pid := cmd.Process.Pid
	waitFor(t, "the lock file to name the child", func() bool {
		b, _ := os.ReadFile(lockFile)
		return string(b) == strconv.Itoa(pid)+"\n"
	}, out.String)
	if !holdsFile(pid, lockFile) {
		t.Fatalf("child %d does not hold %s", pid, lockFile)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sent"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-exited:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("the holder died of %v; output %q", ws.Signal(), out.String())
		}
		if err != nil {
			t.Fatalf("child: %v; output %q", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the holder did not detach: the early request was lost; output %q", out.String())
	}
	if got, want := out.String(), "attach: vm e: console taken over\n"; got != want {
		t.Errorf("child's output %q, want %q", got, want)
	}
}

// earlyTakeoverChild is the child's part of TestAttachEarlyTakeover: an
// Attach that, once its lock file names it, waits for the parent's SIGUSR1
// to be delivered before it goes on.
func earlyTakeoverChild(dir string) {
	testHookAnnounced = func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(dir, "sent")); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		// Sent, so pending or delivered: wait until delivered.
		for time.Now().Before(deadline) {
			if pending, err := signalPending(syscall.SIGUSR1); err != nil || !pending {
				if err != nil {
					fmt.Println("signalPending:", err)
				}
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	err := Attach(context.Background(), Options{
		Name: "e", TTY: os.Getenv("CONSOLE_EARLY_TAKEOVER_TTY"),
		LockFile:  filepath.Join(dir, "run", "console.lock"),
		TailLines: -1,
		Stdin:     os.Stdin, Stdout: io.Discard, Stderr: io.Discard,
	})
	fmt.Printf("attach: %v\n", err)
	if !errors.Is(err, ErrTakenOver) {
		os.Exit(1)
	}
	os.Exit(0)
}

// signalPending reports whether sig is pending for the process (sent with
// kill(2) and not yet delivered to any thread).
func signalPending(sig syscall.Signal) (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := strings.CutPrefix(string(line), "ShdPnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("/proc/self/status: ShdPnd: %w", err)
			}
			return mask&(1<<(uint(sig)-1)) != 0, nil
		}
	}
	return false, errors.New("/proc/self/status: no ShdPnd")
}
