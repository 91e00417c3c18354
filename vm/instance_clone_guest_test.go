package vm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/term"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// serialShell talks to a guest's shell on its serial console: it writes
// command lines to the pty and reads what the guest prints.
type serialShell struct {
	t    *testing.T
	name string
	f    *os.File
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

// openShell opens the serial console of a running VM (its pty, in raw
// mode: no echo of the guest's output back to it).
func openShell(t *testing.T, name, tty string) *serialShell {
	t.Helper()
	f, err := os.OpenFile(tty, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("vm %s: open its console: %v", name, err)
	}
	if _, err := term.MakeRaw(int(f.Fd())); err != nil {
		f.Close()
		t.Fatalf("vm %s: console raw mode: %v", name, err)
	}
	s := &serialShell{t: t, name: name, f: f, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { f.Close(); <-s.done })
	return s
}

func (s *serialShell) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// run types line and waits until want appears in what the guest printed
// after it; it returns the time that took.
func (s *serialShell) run(line, want string, timeout time.Duration) time.Duration {
	s.t.Helper()
	from := len(s.output())
	start := time.Now()
	if _, err := s.f.WriteString(line + "\n"); err != nil {
		s.t.Fatalf("vm %s: type %q: %v", s.name, line, err)
	}
	for {
		if strings.Contains(s.output()[from:], want) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			s.t.Fatalf("vm %s: no %q after %q within %v; the console says:\n%s", s.name, want, line, timeout, s.output()[from:])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInstantClones: a value held only in the RAM of a saved template
// appears in its instances, which resume the template's guest instead of
// booting; two instances then change it independently; the template's RAM
// file is unchanged; an instance's second start boots.
func TestInstantClones(t *testing.T) {
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*opTimeout)
	defer cancel()
	tpl := &config.VM{
		Name: "tpl", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
		Networks: []config.Network{{Type: config.NetUser, HostFwd: []string{"tcp:127.0.0.1:0-:22"}}},
	}
	tpl.Networks = nil // user networking without forwards: nothing to bind
	if err := e.m.Store().Create(tpl); err != nil {
		t.Fatal(err)
	}
	st := e.start(tpl, vm.StartOptions{})
	e.waitSerial("tpl", testguest.Prompt, testguest.BootTimeout)
	token := fmt.Sprintf("ram-only-%d", time.Now().UnixNano())
	sh := openShell(t, "tpl", st.TTY)
	sh.run("echo "+token+" > /tmp/val; echo stored-$((40+2))", "stored-42", 30*time.Second)
	// Idle before the save: what the guest was printing is out.
	time.Sleep(200 * time.Millisecond)
	if err := e.m.Save(ctx, tpl, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if !e.m.HasSavedState("tpl") {
		t.Fatal("no saved state after save")
	}

	var shells []*serialShell
	for _, name := range []string{"c1", "c2"} {
		inst, notes, err := e.m.CreateInstance(ctx, "tpl", name, vm.InstanceOptions{})
		if err != nil {
			t.Fatalf("instance %s: %v\nqemu log:\n%s", name, err, readFile(e.paths.QEMULog(name)))
		}
		if len(notes) > 0 {
			t.Errorf("instance %s: notes %q", name, notes)
		}
		ist := e.start(inst, vm.StartOptions{})
		s := openShell(t, name, ist.TTY)
		took := s.run("cat /tmp/val", token, 30*time.Second)
		t.Logf("instance %s answered on its console %v after its start returned", name, took)
		shells = append(shells, s)
		if log := readFile(e.paths.SerialLog(name)); strings.Contains(log, testguest.Banner) {
			t.Errorf("instance %s booted instead of resuming:\n%s", name, log)
		}
	}
	ram := filepath.Join(e.paths.TemplateCloneDir("tpl"), "ram")
	sum := sha256File(t, ram)
	shells[0].run("echo one > /tmp/val; cat /tmp/val", "one\r\n", 30*time.Second)
	shells[1].run("echo two > /tmp/val; cat /tmp/val", "two\r\n", 30*time.Second)
	shells[0].run("cat /tmp/val; echo end-$((1+1))", "one\r\nend-2", 30*time.Second)
	shells[1].run("cat /tmp/val; echo end-$((2+1))", "two\r\nend-3", 30*time.Second)
	if got := sha256File(t, ram); got != sum {
		t.Errorf("the template's RAM file changed under its instances")
	}

	// The template stays saved, and refused, while it has instances.
	if _, err := e.m.Start(ctx, tpl, vm.StartOptions{}); !errors.Is(err, vm.ErrTemplateInUse) {
		t.Errorf("start of the template: %v", err)
	}
	// An instance's second start boots: its disks are its own by now.
	c1, err := e.m.Store().Lookup("c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Stop(ctx, c1, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	e.start(c1, vm.StartOptions{})
	e.waitSerial("c1", testguest.Banner, testguest.BootTimeout)

	// An instance whose definition was edited before its first start
	// boots: the saved guest fits the machine it was made for only.
	c3, _, err := e.m.CreateInstance(ctx, "tpl", "c3", vm.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c3.Append += " vmtui.edited=1"
	if err := e.m.Store().Save(c3); err != nil {
		t.Fatal(err)
	}
	e.start(c3, vm.StartOptions{})
	e.waitSerial("c3", testguest.Banner, testguest.BootTimeout)

	// Once the instances are gone, the template resumes its own guest,
	// and the state made for them goes.
	for _, name := range []string{"c1", "c2", "c3"} {
		d, err := e.m.Store().Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.Stop(ctx, d, vm.StopOptions{Force: true, Wait: true}); err != nil && !errors.Is(err, vm.ErrNotRunning) {
			t.Fatal(err)
		}
		if _, err := e.m.Remove(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	tst := e.start(tpl, vm.StartOptions{})
	if _, err := os.Stat(e.paths.TemplateCloneDir("tpl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the instances' state after the template's start: %v", err)
	}
	openShell(t, "tpl", tst.TTY).run("cat /tmp/val", token, 30*time.Second)
}

// TestInstantCloneBridgedRefused: an instance of a saved template on a
// bridged network is refused, naming the bridge, and nothing is left.
func TestInstantCloneBridgedRefused(t *testing.T) {
	e := newTemplateEnv(t)
	// Any saved state will do: the refusal comes before it is read.
	saved := e.paths.SavedStateFile("base")
	if err := os.MkdirAll(filepath.Dir(saved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, []byte("saved"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.m.CreateInstance(context.Background(), "base", "web1", vm.InstanceOptions{})
	if err == nil || !strings.Contains(err.Error(), "on the bridged network br0") {
		t.Fatalf("instance of a saved bridged template: %v", err)
	}
	if _, err := e.m.Store().Lookup("web1"); err == nil {
		t.Error("refused instance defined")
	}
	if _, err := os.Stat(e.paths.InstanceDisksDir("web1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused instance's disks: %v", err)
	}
	// With networks of its own it boots instead, and says so.
	_, notes, err := e.m.CreateInstance(context.Background(), "base", "web2", vm.InstanceOptions{Networks: []config.Network{{Type: config.NetUser}}})
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "the instance differs from it in networks: it boots instead") {
		t.Errorf("instance with its own networks: %v, notes %q", err, notes)
	}
	_, notes, err = e.m.CreateInstance(context.Background(), "base", "web3", vm.InstanceOptions{Memory: 256 << 20, Ports: []vm.PortMap{{Host: 2223, Guest: 22}}})
	if err != nil || !strings.Contains(strings.Join(notes, "\n"), "the instance differs from it in memory: it boots instead") {
		t.Errorf("instance with more memory: %v, notes %q", err, notes)
	}
	if _, err := os.Stat(filepath.Join(e.paths.InstanceDisksDir("web3"), "resume-template")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an instance that boots is marked to resume: %v", err)
	}
}
