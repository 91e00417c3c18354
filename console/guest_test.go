package console

// End-to-end tests: the real vmtui binary, run in a pseudo-terminal made
// with creack/pty, attached to a booted test guest (guest/build.sh's
// kernel and busybox initramfs, under TCG).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/internal/seriallog"
	"github.com/vmtui/vmtui/internal/testguest"
)

// The test guest's facts (internal/testguest).
const (
	guestBanner  = testguest.Banner
	guestPrompt  = testguest.Prompt
	guestCmdline = testguest.Cmdline
	guestMemory  = testguest.Memory
	bootTimeout  = testguest.BootTimeout
)

// screenTimeout bounds a wait for vmtui to print something or exit: a bound
// for a failure, generous for a loaded machine, never a delay.
const screenTimeout = 30 * time.Second

var built struct {
	once     sync.Once
	bin      string
	buildErr error
}

// prerequisites builds vmtui once per test binary, and the test guest
// (skipping on a developer's machine without QEMU, failing in CI).
func prerequisites(t *testing.T) (bin, kernel, initrd string) {
	t.Helper()
	testguest.QEMU(t)
	kernel, initrd = testguest.Paths(t)
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmtui-console-test-")
		if err != nil {
			built.buildErr = err
			return
		}
		built.bin = filepath.Join(dir, "vmtui")
		if out, err := exec.Command("go", "build", "-o", built.bin, "..").CombinedOutput(); err != nil {
			built.buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.buildErr != nil {
		t.Fatal(built.buildErr)
	}
	return built.bin, kernel, initrd
}

// guest is a test VM in a state root of its own.
type guest struct {
	bin, home, name string
	kernel, initrd  string
}

func newGuest(t *testing.T, name string) *guest {
	bin, kernel, initrd := prerequisites(t)
	g := &guest{bin: bin, home: t.TempDir(), name: name, kernel: kernel, initrd: initrd}
	t.Cleanup(g.kill)
	return g
}

// startArgs are the arguments of vmtui start that define and boot the guest.
func (g *guest) startArgs(extra ...string) []string {
	args := append([]string{"start"}, extra...)
	return append(args, "-b", g.kernel, "--initrd", g.initrd, "--append", guestCmdline, "-m", guestMemory, "--accel", "tcg", g.name)
}

func (g *guest) env() []string {
	return append(os.Environ(), "VMTUI_HOME="+g.home, "VMTUI_ACCEL=tcg")
}

// run runs vmtui to completion without a terminal.
func (g *guest) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(g.bin, args...)
	cmd.Env = g.env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("vmtui %q: %v", args, err)
	}
	return o.String(), e.String(), code
}

func (g *guest) serialLog() string { return filepath.Join(g.home, "log", g.name, "serial.log") }

// boot starts the guest and waits for its banner in the serial log.
func (g *guest) boot(t *testing.T) {
	t.Helper()
	if _, stderr, code := g.run(t, g.startArgs()...); code != 0 {
		t.Fatalf("vmtui start: exit %d: %s", code, stderr)
	}
	g.waitLog(t, guestPrompt)
}

func (g *guest) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		b, _ := os.ReadFile(g.serialLog())
		if bytes.Contains(b, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial log has no %q after %v:\n%s", want, bootTimeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// qemuPID is the guest's QEMU process, 0 when it is not running.
func (g *guest) qemuPID() int {
	b, _ := os.ReadFile(filepath.Join(g.home, "run", g.name, "qemu.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// kill makes sure the guest's QEMU is gone.
func (g *guest) kill() {
	pid := g.qemuPID()
	if pid == 0 {
		return
	}
	cmd := exec.Command(g.bin, "stop", "-f", "-w", g.name)
	cmd.Env = g.env()
	cmd.Run()
	if err := syscall.Kill(pid, 0); err == nil {
		if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.HasPrefix(string(comm), "qemu") {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// termProc is vmtui running in a pseudo-terminal of the test's.
type termProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	master  *os.File // the test types here and reads the screen
	slave   *os.File // vmtui's terminal, kept open to read its termios
	screen  syncBuffer
	before  unix.Termios
	done    chan struct{}
	waitErr error
}

// inTerminal starts vmtui with args in a new pseudo-terminal, in a
// session of its own with the terminal as its controlling terminal.
func (g *guest) inTerminal(t *testing.T, args ...string) *termProc {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(s, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	p := &termProc{t: t, master: pollable(t, m), slave: s, done: make(chan struct{})}
	p.before = termios(t, s)
	p.cmd = exec.Command(g.bin, args...)
	p.cmd.Env = g.env()
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = s, s, s
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.readScreen()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		p.master.Close()
		p.slave.Close()
	})
	return p
}

// readScreen copies vmtui's output to the screen. Until vmtui prints
// something of its own it answers the terminal queries (background colour,
// cursor position) as a real terminal does: bubbletea's package init asks
// them in every vmtui command (and waits 5 s for an answer that does not
// come, reading what the user types meanwhile).
func (p *termProc) readScreen() {
	buf := make([]byte, 4096)
	answering, seen := true, 0
	for {
		n, err := p.master.Read(buf)
		p.screen.Write(buf[:n])
		if answering {
			screen := p.screen.String()
			for _, q := range []struct{ query, answer string }{
				{"\x1b]11;?\x1b\\", "\x1b]11;rgb:0000/0000/0000\x1b\\"},
				{"\x1b[6n", "\x1b[1;1R"},
			} {
				if i := strings.Index(screen[seen:], q.query); i >= 0 {
					p.master.Write([]byte(q.answer))
				}
			}
			seen = len(screen)
			rest := string(seriallog.StripQueries([]byte(strings.ReplaceAll(screen, "\x1b]11;?\x1b\\", ""))))
			answering = rest == ""
		}
		if err != nil {
			return
		}
	}
}

func (p *termProc) pid() int { return p.cmd.Process.Pid }

func (p *termProc) typeText(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		p.t.Fatalf("type %q: %v", s, err)
	}
}

// waitScreen waits until the screen matches re.
func (p *termProc) waitScreen(what string, re *regexp.Regexp, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !re.MatchString(p.screen.String()) {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %v waiting for %s (%q); screen:\n%q", timeout, what, re, p.screen.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// roundTrip types a shell command until its expected output shows: QEMU
// 7.2 notices a newly opened pty only by polling, about once a second, and
// drops the guest's output until then.
func (p *termProc) roundTrip(command string, want *regexp.Regexp) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p.typeText(command + "\r")
		retry := time.Now().Add(2 * time.Second)
		for time.Now().Before(retry) {
			if want.MatchString(p.screen.String()) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q after typing %q for a minute; screen:\n%q", want, command, p.screen.String())
		}
	}
}

// wait waits for vmtui to exit and returns its exit status.
func (p *termProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("vmtui did not exit within %v; screen:\n%q", timeout, p.screen.String())
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		p.t.Fatalf("vmtui: %v", p.waitErr)
	}
	return 0
}

// checkRestored compares the terminal's modes with those before vmtui ran.
func (p *termProc) checkRestored() {
	p.t.Helper()
	if after := termios(p.t, p.slave); after != p.before {
		p.t.Errorf("terminal modes not restored:\n got  %+v\n want %+v", after, p.before)
	}
}

// waitEnd waits for the screen to settle after exit (the last bytes may
// still be in flight) and for want.
func (p *termProc) waitEnd(want string) {
	p.t.Helper()
	p.waitScreen(fmt.Sprintf("%q", want), regexp.MustCompile(regexp.QuoteMeta(want)), screenTimeout)
}

var fortyTwo = regexp.MustCompile(`\r\n42\r\n`)

func TestConsoleGuest(t *testing.T) {
	t.Parallel()
	g := newGuest(t, "con")
	g.boot(t)

	// The first session outlives its subtest: its helpers report to the
	// subtest running at the time (first.t).
	first := g.inTerminal(t, "console", "con")
	t.Run("attach shows the log tail and relays", func(t *testing.T) {
		first.t = t
		first.waitScreen("the greeting", regexp.MustCompile(`Connected to /dev/pts/\d+ \(vm con\)\.\r\nType ~\. \(after a newline\) or \^\] to detach, ~\? for help\.\r\n`), screenTimeout)
		first.waitScreen("the banner from the log tail", regexp.MustCompile(regexp.QuoteMeta(guestBanner)), screenTimeout)
		if raw := termios(t, first.slave); raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
			t.Errorf("terminal not raw while attached: lflag %#x", raw.Lflag)
		}
		first.roundTrip("echo $((6*7))", fortyTwo)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("a second attach is refused", func(t *testing.T) {
		_, stderr, code := g.run(t, "console", "con")
		want := fmt.Sprintf("vmtui: console of vm con is in use by pid %d; use --takeover to take it\n", first.pid())
		if code != 1 || stderr != want {
			t.Errorf("second attach: exit %d, stderr %q; want exit 1, %q", code, stderr, want)
		}
	})

	t.Run("watch follows the log", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, g.bin, "console", "--watch", "con")
		cmd.Env = g.env()
		var out, errOut syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the log tail in watch", func() bool { return strings.Contains(out.String(), guestBanner) }, out.String)
		first.t = t
		first.typeText("echo watched-$((20+1))\r")
		waitFor(t, "new output in watch", func() bool { return strings.Contains(out.String(), "watched-21\r\n") }, out.String)
		if strings.Contains(out.String(), "\x1b[6n") {
			t.Errorf("watch passed a terminal query on: %q", out.String())
		}
		cancel()
		cmd.Wait()
		if !strings.Contains(errOut.String(), "read-only") {
			t.Errorf("watch said %q, want a read-only notice", errOut.String())
		}
	})

	t.Run("~. detaches and restores the terminal", func(t *testing.T) {
		first.t = t
		first.typeText("\r~.")
		if code := first.wait(screenTimeout); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
		first.waitEnd("\r\n[detached from vm con]\r\n")
		first.checkRestored()
	})

	t.Run("takeover", func(t *testing.T) {
		holder := g.inTerminal(t, "console", "con")
		holder.waitScreen("the holder's greeting", regexp.MustCompile(`Connected to`), screenTimeout)
		taker := g.inTerminal(t, "console", "--takeover", "con")
		if code := holder.wait(screenTimeout); code != 0 {
			t.Errorf("holder: exit %d, want 0", code)
		}
		holder.waitEnd("vmtui: vm con: console taken over\r\n")
		holder.checkRestored()
		taker.waitScreen("the taker's greeting", regexp.MustCompile(`Connected to`), screenTimeout)
		taker.roundTrip("echo taken-$((3*3))", regexp.MustCompile(`\r\ntaken-9\r\n`))

		t.Run("SIGTERM restores the terminal", func(t *testing.T) {
			taker.t = t
			taker.cmd.Process.Signal(syscall.SIGTERM)
			if code := taker.wait(screenTimeout); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			taker.waitEnd("vmtui: vm con: console closed: terminated\r\n")
			taker.checkRestored()
		})
	})

	t.Run("SIGHUP restores the terminal", func(t *testing.T) {
		p := g.inTerminal(t, "console", "con")
		p.waitScreen("the greeting", regexp.MustCompile(`Connected to`), screenTimeout)
		p.cmd.Process.Signal(syscall.SIGHUP)
		if code := p.wait(screenTimeout); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		p.waitEnd("vmtui: vm con: console closed: terminated\r\n")
		p.checkRestored()
	})
}

func TestConsoleStartAndPowerOff(t *testing.T) {
	t.Parallel()
	g := newGuest(t, "sc")
	// An old log over the cap: start trims it before QEMU appends to it.
	if err := os.MkdirAll(filepath.Dir(g.serialLog()), 0o700); err != nil {
		t.Fatal(err)
	}
	old := strings.Repeat("old output\r\n", 2*seriallog.DefaultCap/12)
	if err := os.WriteFile(g.serialLog(), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	p := g.inTerminal(t, g.startArgs("-c")...)
	p.waitScreen("the start message and greeting", regexp.MustCompile(`vmtui: started vm 1 successfully, tty /dev/pts/\d+\r?\nConnected to /dev/pts/\d+ \(vm sc\)\.`), bootTimeout)
	g.waitLog(t, guestPrompt)
	log, _ := os.ReadFile(g.serialLog())
	if !regexp.MustCompile(`^\[vmtui: \d+ bytes of older serial output dropped\]\r\n(old output\r\n)+`).Match(log) ||
		len(log) > seriallog.DefaultCap || !bytes.Contains(log, []byte(guestBanner)) {
		t.Errorf("serial log after start (%d bytes) is not the capped old log and the new output: %q...", len(log), log[:min(len(log), 100)])
	}
	p.roundTrip("echo $((6*7))", fortyTwo)
	p.typeText("poweroff -f\r")
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	p.waitEnd("vmtui: vm sc: console closed: guest stopped\r\n")
	p.checkRestored()
	// QEMU closes the pty as it shuts down, a moment before it exits.
	if pid := g.qemuPID(); pid != 0 {
		waitFor(t, fmt.Sprintf("QEMU (pid %d) to exit after poweroff", pid), func() bool { return !processRuns(pid) })
	}
}

// processRuns reports whether pid is a live process (not gone, not a zombie).
func processRuns(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func TestConsoleQEMUKilled(t *testing.T) {
	t.Parallel()
	g := newGuest(t, "kq")
	g.boot(t)
	p := g.inTerminal(t, "console", "kq")
	p.waitScreen("the greeting", regexp.MustCompile(`Connected to`), screenTimeout)
	p.roundTrip("echo $((6*7))", fortyTwo)
	pid := g.qemuPID()
	if pid == 0 {
		t.Fatal("no QEMU pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(screenTimeout); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	p.waitEnd("vmtui: vm kq: console closed: guest stopped\r\n")
	p.checkRestored()

	// Now that it is stopped, the VM has no console.
	_, stderr, code := g.run(t, "console", "kq")
	if code != 1 || stderr != "vmtui: console not found\n" {
		t.Errorf("console of a stopped VM: exit %d, stderr %q; want 1, %q", code, stderr, "vmtui: console not found\n")
	}
	_, stderr, code = g.run(t, "console", "nosuch")
	if code != 1 || stderr != "vmtui: nosuch: vm not found\n" {
		t.Errorf("console of an unknown VM: exit %d, stderr %q", code, stderr)
	}
}
