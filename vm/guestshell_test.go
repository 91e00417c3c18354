package vm_test

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/vmtui/vmtui/internal/testguest"
)

// guestShell is a test guest's shell on its serial console: commands are
// typed on the VM's pty, and what the guest prints is read from its serial
// log, which QEMU writes with all the guest prints.
type guestShell struct {
	e    *guestEnv
	name string
	pty  *os.File
}

// shellTimeout bounds the wait for a command's output.
const shellTimeout = 2 * time.Minute

// shellN numbers the commands of every shell of the test binary, so that
// a marker never matches the output of an earlier command, even one the
// guest ran before a revert took it back in time.
var shellN struct {
	sync.Mutex
	n int
}

func nextShellN() int {
	shellN.Lock()
	defer shellN.Unlock()
	shellN.n++
	return shellN.n
}

// shell opens the serial console of running VM name (tty, its status's
// TTY) once the guest's shell has printed its prompt.
func (e *guestEnv) shell(name, tty string) *guestShell {
	e.t.Helper()
	e.waitSerial(name, testguest.Prompt, testguest.BootTimeout)
	return e.attachShell(name, tty)
}

// attachShell opens the serial console of running VM name (tty) at once: a
// guest resumed at its prompt prints none. The pty is put in raw mode (an
// echo of the guest's output would be typed back) and drained, as a
// console would.
func (e *guestEnv) attachShell(name, tty string) *guestShell {
	e.t.Helper()
	f, err := os.OpenFile(tty, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		e.t.Fatalf("vm %s: open its console: %v", name, err)
	}
	if _, err := term.MakeRaw(int(f.Fd())); err != nil {
		f.Close()
		e.t.Fatalf("vm %s: console raw mode: %v", name, err)
	}
	// The reader ends when the pty does, with its VM: f.Fd made f
	// blocking, so that closing it does not end a read.
	go io.Copy(io.Discard, f)
	e.t.Cleanup(func() { f.Close() })
	return &guestShell{e: e, name: name, pty: f}
}

// send types line and waits until match finds what it looks for in what
// the serial log got since; it returns what match returned and how long
// the wait took.
func (g *guestShell) send(line string, timeout time.Duration, match func(out string) (string, bool)) (string, time.Duration) {
	g.e.t.Helper()
	log := g.e.paths.SerialLog(g.name)
	from := len(readFile(log))
	start := time.Now()
	if _, err := io.WriteString(g.pty, line+"\n"); err != nil {
		g.e.t.Fatalf("vm %s: type %q: %v", g.name, line, err)
	}
	for {
		out := readFile(log)
		out = out[min(from, len(out)):]
		if res, ok := match(out); ok {
			return res, time.Since(start)
		}
		if time.Since(start) > timeout {
			g.e.t.Fatalf("vm %s: no answer to %q within %v; the serial log got:\n%s", g.name, line, timeout, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs cmd in the guest and returns its output on one line (a command
// substitution, split into words).
func (g *guestShell) run(cmd string) string {
	g.e.t.Helper()
	n := nextShellN()
	// The shell echoes the line typed; only the output has the sum
	// computed.
	re := regexp.MustCompile(`R` + strconv.Itoa(n) + `2R ?([^\r\n]*)\r?\n`)
	out, _ := g.send(fmt.Sprintf("echo R%d$((1+1))R $(%s)", n, cmd), shellTimeout, func(out string) (string, bool) {
		if m := re.FindStringSubmatch(out); m != nil {
			return strings.TrimSpace(m[1]), true
		}
		return "", false
	})
	return out
}

// output runs cmd in the guest and returns all the serial log got until
// it finished (the line typed, echoed, included), with CRLF as LF.
func (g *guestShell) output(cmd string) string {
	g.e.t.Helper()
	n := nextShellN()
	// The shell computes the marker: the echo of the command line does not
	// hold it.
	marker := fmt.Sprintf("vmtui-done-%d\n", n)
	out, _ := g.send(fmt.Sprintf("%s; echo vmtui-done-$((%d+1))", cmd, n-1), shellTimeout, func(out string) (string, bool) {
		out = strings.ReplaceAll(out, "\r\n", "\n")
		i := strings.Index(out, marker)
		if i < 0 {
			return "", false
		}
		return out[:i], true
	})
	return out
}

// expect types line and waits until want appears in what the guest
// printed since; it returns how long that took.
func (g *guestShell) expect(line, want string, timeout time.Duration) time.Duration {
	g.e.t.Helper()
	_, took := g.send(line, timeout, func(out string) (string, bool) {
		return "", strings.Contains(out, want)
	})
	return took
}

// waitFor runs cmd in the guest until its output satisfies ok.
func (g *guestShell) waitFor(cmd string, ok func(string) bool, what string) string {
	g.e.t.Helper()
	deadline := time.Now().Add(testguest.BootTimeout)
	for {
		out := g.run(cmd)
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			g.e.t.Fatalf("vm %s: %s: %q printed %q after %v", g.name, what, cmd, out, testguest.BootTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
