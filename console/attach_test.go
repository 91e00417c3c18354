package console

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// These tests attach to a pty pair whose master side plays QEMU, from
// another pty pair that plays the user's terminal.

// fakeVM is a serial console: the test writes the guest's output to master
// and reads what the guest receives from it.
type fakeVM struct {
	master *os.File
	tty    string
	got    syncBuffer // what reached the guest
}

func newFakeVM(t *testing.T) *fakeVM {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	m = pollable(t, m)
	vm := &fakeVM{master: m, tty: s.Name()}
	s.Close() // as QEMU does: only the master stays open
	go func() {
		// Like QEMU, keep reading: the master reads EIO while no one has
		// the slave open.
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			vm.got.Write(buf[:n])
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { m.Close() })
	return vm
}

// userTerm is the user's terminal: the session's stdin and stdout are its
// slave side; the test types on, and reads the screen from, its master.
type userTerm struct {
	master, slave *os.File
	screen        syncBuffer
}

func newUserTerm(t *testing.T) *userTerm {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(s, &pty.Winsize{Rows: 10, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	u := &userTerm{master: pollable(t, m), slave: s}
	go copyInto(&u.screen, u.master)
	t.Cleanup(func() { m.Close(); s.Close() })
	return u
}

// pollable returns f in non-blocking mode, served by Go's poller, so that
// Close interrupts a Read (creack/pty leaves the master in blocking mode).
func pollable(t testing.TB, f *os.File) *os.File {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	name := f.Name()
	f.Close()
	return os.NewFile(uintptr(fd), name)
}

func copyInto(dst *syncBuffer, src *os.File) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		dst.Write(buf[:n])
		if err != nil {
			return
		}
	}
}

func termios(t *testing.T, f *os.File) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return *tio
}

// attachAsync runs Attach in a goroutine and returns its result channel.
func attachAsync(ctx context.Context, opts Options) <-chan error {
	done := make(chan error, 1)
	go func() { done <- Attach(ctx, opts) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Attach did not return")
		return nil
	}
}

func userOpts(vm *fakeVM, u *userTerm, dir string) Options {
	return Options{
		Name: "t", TTY: vm.tty,
		SerialLog: filepath.Join(dir, "serial.log"),
		LockFile:  filepath.Join(dir, "run", "console.lock"),
		Stdin:     u.slave, Stdout: u.slave, Stderr: u.slave,
	}
}

func TestAttachRelayAndDetach(t *testing.T) {
	vm, u, dir := newFakeVM(t), newUserTerm(t), t.TempDir()
	// More lines than the screen (10 rows): the last 8 are replayed.
	os.WriteFile(filepath.Join(dir, "serial.log"), []byte(numbered(1, 20)+"guest# \x1b[6n"), 0o600)
	before := termios(t, u.slave)
	done := attachAsync(context.Background(), userOpts(vm, u, dir))

	waitFor(t, "the greeting and the log tail", func() bool {
		return strings.Contains(u.screen.String(), "Connected to "+vm.tty+" (vm t).\r\nType ~. (after a newline) or ^] to detach, ~? for help.\r\n"+numbered(14, 20)+"guest# ")
	}, u.screen.String)
	if s := u.screen.String(); strings.Contains(s, "line 13\r") || strings.Contains(s, "\x1b[6n") {
		t.Errorf("screen %q: want only the last screenful and no terminal query", s)
	}
	if raw := termios(t, u.slave); raw.Lflag&(unix.ICANON|unix.ECHO) != 0 {
		t.Errorf("user's terminal not in raw mode while attached: lflag %#x", raw.Lflag)
	}
	// The window size is passed on, at attach and on SIGWINCH.
	vmSize := func() string {
		var ws *unix.Winsize
		err := control(vm.master, func(fd int) (err error) {
			ws, err = unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
			return err
		})
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%dx%d", ws.Col, ws.Row)
	}
	if got := vmSize(); got != "80x10" {
		t.Errorf("guest pty size %s at attach, want 80x10", got)
	}
	pty.Setsize(u.slave, &pty.Winsize{Rows: 40, Cols: 132})
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	waitFor(t, "the new window size", func() bool { return vmSize() == "132x40" }, vmSize)
	vm.master.Write([]byte("output from the guest\r\n"))
	waitFor(t, "guest output", func() bool { return strings.Contains(u.screen.String(), "output from the guest\r\n") }, u.screen.String)

	u.master.Write([]byte("cd ~.\r"))
	waitFor(t, "typed line", func() bool { return vm.got.String() == "cd ~.\r" }, vm.got.String)
	u.master.Write([]byte("~?"))
	waitFor(t, "escape help", func() bool { return strings.Contains(u.screen.String(), "~~  send ~") }, u.screen.String)
	// An escape split across reads: the session has read the "~" (the
	// terminal holds nothing unread) before the "." is typed.
	u.master.Write([]byte("~~x\r~"))
	waitFor(t, "the session to read the keys typed", func() bool {
		n, err := unix.IoctlGetInt(int(u.slave.Fd()), unix.TIOCINQ)
		return err == nil && n == 0 && vm.got.String() == "cd ~.\r~x\r"
	}, vm.got.String)
	u.master.Write([]byte(".ignored"))
	if err := wait(t, done); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if got, want := vm.got.String(), "cd ~.\r~x\r"; got != want {
		t.Errorf("guest received %q, want %q", got, want)
	}
	waitFor(t, "the detach message", func() bool { return strings.HasSuffix(u.screen.String(), "\r\n[detached from vm t]\r\n") }, u.screen.String)
	if after := termios(t, u.slave); after != before {
		t.Errorf("terminal not restored:\n got  %+v\n want %+v", after, before)
	}
	// The lock is free again.
	done = attachAsync(context.Background(), userOpts(vm, u, dir))
	u.master.Write([]byte("\x1d"))
	if err := wait(t, done); err != nil {
		t.Errorf("second Attach after detach: %v", err)
	}
}

func TestAttachGuestStopped(t *testing.T) {
	vm, u, dir := newFakeVM(t), newUserTerm(t), t.TempDir()
	before := termios(t, u.slave)
	done := attachAsync(context.Background(), userOpts(vm, u, dir))
	waitFor(t, "the greeting", func() bool { return strings.Contains(u.screen.String(), "Connected") })
	vm.master.Close() // QEMU exits
	err := wait(t, done)
	if !errors.Is(err, ErrGuestStopped) || err.Error() != "vm t: console closed: guest stopped" {
		t.Errorf("Attach: got %v, want vm t: console closed: guest stopped", err)
	}
	if after := termios(t, u.slave); after != before {
		t.Errorf("terminal not restored:\n got  %+v\n want %+v", after, before)
	}
}

func TestAttachNoConsole(t *testing.T) {
	u, dir := newUserTerm(t), t.TempDir()
	for _, tty := range []string{"", "/dev/pts/999999"} {
		opts := userOpts(&fakeVM{tty: tty}, u, dir)
		if err := Attach(context.Background(), opts); !errors.Is(err, ErrNoConsole) {
			t.Errorf("Attach to %q: got %v, want %v", tty, err, ErrNoConsole)
		}
	}
}

func TestAttachContextEnds(t *testing.T) {
	vm, u, dir := newFakeVM(t), newUserTerm(t), t.TempDir()
	before := termios(t, u.slave)
	ctx, cancel := context.WithCancel(context.Background())
	done := attachAsync(ctx, userOpts(vm, u, dir))
	waitFor(t, "the greeting", func() bool { return strings.Contains(u.screen.String(), "Connected") })
	cancel()
	if err := wait(t, done); !errors.Is(err, ErrTerminated) {
		t.Errorf("Attach: got %v, want %v", err, ErrTerminated)
	}
	if after := termios(t, u.slave); after != before {
		t.Errorf("terminal not restored")
	}
	// The input reader stopped without taking the next key.
	u.master.Write([]byte("k\r"))
	buf := make([]byte, 8)
	if n, err := u.slave.Read(buf); string(buf[:n]) != "k\n" {
		t.Errorf("next read of the terminal: %q, %v; want the key typed after the session", buf[:n], err)
	}
}

func TestAttachInUseAndTakeover(t *testing.T) {
	vm, dir := newFakeVM(t), t.TempDir()
	u1, u2, u3 := newUserTerm(t), newUserTerm(t), newUserTerm(t)
	first := attachAsync(context.Background(), userOpts(vm, u1, dir))
	waitFor(t, "the first session", func() bool { return strings.Contains(u1.screen.String(), "Connected") })

	err := Attach(context.Background(), userOpts(vm, u2, dir))
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second Attach: got %v, want an InUseError naming pid %d", err, os.Getpid())
	}
	want := "console of vm t is in use by pid " + strconv.Itoa(os.Getpid()) + "; use --takeover to take it"
	if err.Error() != want {
		t.Errorf("second Attach: got %q, want %q", err, want)
	}

	opts := userOpts(vm, u3, dir)
	opts.Takeover = true
	third := attachAsync(context.Background(), opts)
	if err := wait(t, first); !errors.Is(err, ErrTakenOver) {
		t.Errorf("first session: got %v, want %v", err, ErrTakenOver)
	}
	waitFor(t, "the third session", func() bool { return strings.Contains(u3.screen.String(), "Connected") }, u3.screen.String)
	vm.master.Write([]byte("to the new holder\r\n"))
	waitFor(t, "output in the new session", func() bool { return strings.Contains(u3.screen.String(), "to the new holder") })
	u3.master.Write([]byte("~."))
	if err := wait(t, third); err != nil {
		t.Errorf("third session: %v", err)
	}
}

// TestAttachPanicRestoresTerminal runs a session in a child process whose
// output writer panics, and checks that the terminal is restored although
// the process dies of the panic.
func TestAttachPanicRestoresTerminal(t *testing.T) {
	if os.Getenv("CONSOLE_PANIC_TTY") != "" {
		return // the child's part runs in TestMain
	}
	vm, u := newFakeVM(t), newUserTerm(t)
	before := termios(t, u.slave)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttachPanicRestoresTerminal$")
	cmd.Env = append(os.Environ(), "CONSOLE_PANIC_TTY="+vm.tty)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = u.slave, u.slave, u.slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child's session", func() bool { return strings.Contains(u.screen.String(), "Connected") }, u.screen.String)
	vm.master.Write([]byte("boom"))
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("child: %v, want exit status 2 (a panic)", err)
	}
	waitFor(t, "the panic message", func() bool { return strings.Contains(u.screen.String(), "panic: writer exploded") }, u.screen.String)
	if after := termios(t, u.slave); after != before {
		t.Errorf("terminal not restored after a panic:\n got  %+v\n want %+v", after, before)
	}
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("writer exploded") }

func TestMain(m *testing.M) {
	if tty := os.Getenv("CONSOLE_PANIC_TTY"); tty != "" {
		Attach(context.Background(), Options{Name: "p", TTY: tty, Stdout: panicWriter{}, TailLines: -1})
		os.Exit(0) // not reached: the panic ends the process
	}
	if dir := os.Getenv(earlyTakeoverEnv); dir != "" {
		earlyTakeoverChild(dir) // exits
	}
	code := m.Run()
	if built.bin != "" {
		os.RemoveAll(filepath.Dir(built.bin)) // the vmtui built by guest_test.go
	}
	os.Exit(code)
}
